"""What every benchmark records beside its figures, and where it writes them.

A result file is only evidence if it says where and when it was measured: the machine,
its load, the versions and the commit. `environment()` collects that; `write_result()`
puts the JSON under bench/results/ (the files docs/benchmarks.md cites, checked by
bench/check_results.py).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def git_sha() -> str | None:
    try:
        sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("-dirty" if dirty else "")


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def environment() -> dict:
    """Machine, load, versions and commit, for the top of a result file."""
    try:
        mem_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        mem_gib = None
    return {
        # What re-runs this measurement; bench/check_results.py requires it with a clean git_sha.
        "command": " ".join(["python", *sys.argv]),
        "measured_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": _cpu_model(), "cpus": os.cpu_count(), "memory_gib": mem_gib, "system": platform.platform()},
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "versions": {"python": sys.version.split()[0],
                     **{name: _version(name) for name in ("torch", "sqlalchemy", "psycopg", "fastapi", "uvicorn",
                                                          "transformers", "sentence-transformers", "numpy")}},
        "git_sha": git_sha(),
    }


def write_result(relative: str, data: dict) -> Path:
    """Write DATA (with `environment` added when missing) to bench/results/RELATIVE; return the path."""
    path = RESULTS / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"environment": environment(), **data} if "environment" not in data else data
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path
