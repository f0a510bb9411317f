"""Pick the compute device (CUDA, then Apple's MPS, then the CPU) and the CPU threads torch may use."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from pathlib import Path

from genloom.errors import BadInput

THREADS_ENV = "GENLOOM_THREADS"  # intra-op threads for torch on the CPU; else OMP_NUM_THREADS; else automatic
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  # cgroup v2: "QUOTA PERIOD" or "max PERIOD"


def resolve_device(requested: str | None = "auto") -> str:
    import torch

    if requested in (None, "", "auto"):
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise BadInput(f"device {requested!r} requested but CUDA is not available; use --device cpu or auto")
    if requested == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise BadInput("device 'mps' requested but MPS is not available; use --device cpu or auto")
    if requested not in ("cpu", "mps") and not requested.startswith("cuda"):
        raise BadInput(f"unknown device {requested!r}: use auto, cpu, cuda, cuda:N or mps")
    return requested


def cgroup_cpu_limit(path: Path = CGROUP_CPU_MAX) -> float | None:
    """CPUs' worth of time the cgroup quota allows (`200000 100000` → 2.0); None when unlimited or unknown."""
    try:
        quota, period = path.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    try:
        return int(quota) / int(period)
    except (ValueError, ZeroDivisionError):
        return None


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask (taskset, cpusets), capped by the cgroup quota
    (docker --cpus, Kubernetes limits), which os.cpu_count() ignores."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cpus = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    if limit is not None:
        cpus = min(cpus, math.ceil(limit))
    return max(1, cpus)


def busy_cpus(samples: int = 5) -> float:
    """CPUs other processes keep busy now: the kernel's count of runnable tasks (/proc/stat
    procs_running, median of a few samples over ~40 ms, less this process), which sees a CPU-bound
    neighbour at once where the 1-minute load average takes a minute; else the load average."""
    counts = []
    for i in range(samples):
        try:
            with open("/proc/stat") as stat:
                counts += [int(line.split()[1]) for line in stat if line.startswith("procs_running")]
        except (OSError, ValueError, IndexError):
            break
        if i < samples - 1:
            time.sleep(0.01)
    if counts:
        return max(0.0, sorted(counts)[len(counts) // 2] - 1.0)
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0


def cpu_threads(environ: Mapping[str, str] | None = None, *, load: float | None = None) -> tuple[int, str]:
    """How many intra-op threads torch should use on the CPU, and why.

    GENLOOM_THREADS wins, then the standard OMP_NUM_THREADS. Otherwise: the usable CPUs, less the
    ones other processes keep busy (`busy_cpus`, against the machine's CPUs). torch's
    own default is every core, and its threads wait for each other at every operation: when another
    process holds a core, each step waits for the thread that lost its core (on a loaded 2-core
    machine `train vae` took 181 s with 2 threads and 27 s with 1).
    """
    environ = os.environ if environ is None else environ
    for name in (THREADS_ENV, "OMP_NUM_THREADS"):
        value = environ.get(name, "").strip()
        if value:
            try:
                threads = int(value)
            except ValueError:
                raise BadInput(f"{name} must be a whole number of threads (got {value!r})") from None
            if threads < 1:
                raise BadInput(f"{name} must be at least 1 (got {threads})")
            return threads, name
    usable = usable_cpus()
    if load is None:
        load = busy_cpus()
    idle = (os.cpu_count() or usable) - load  # CPUs of the machine nobody else is using
    return max(1, min(usable, math.floor(idle + 0.5))), f"{usable} usable CPUs, {load:.1f} busy"


_configured: list[int] = []  # once per process: a caller that later sets its own number (the demo) keeps it


def configure_cpu_threads() -> int:
    """Set torch's intra-op threads from cpu_threads() once per process; return the number in use."""
    import torch

    if not _configured:
        threads, _ = cpu_threads()
        torch.set_num_threads(threads)
        _configured.append(threads)
    return torch.get_num_threads()
