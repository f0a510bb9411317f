"""Speed on an idle and on a loaded CPU: ingest and `train vae` with genloom's thread default,
with torch's old default (every usable CPU) and with OMP_NUM_THREADS=1, in one run.

    nice -n 19 python bench/threads_contention.py --docs 40 --steps 60 --out threads/contention.json

Each measurement is a fresh `genloom` process (torch picks its threads at start-up) against one
embedded server that the bench starts in a temporary GENLOOM_HOME. "loaded" runs a second
CPU-bound process (a pure-Python loop, one core) beside the measured one, at the same nice level.
The figure of merit is the ratio of each setting's time to the best setting's time in the same
condition: genloom's default should be within 20 % of the best (ratio <= 1.2) in both.
On a machine that other work already loads, "idle" means "no load added by the bench": the result
file records the load average before each measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import REPO, environment, server_versions, write_result  # noqa: E402

CLI = [sys.executable, str(REPO / "cli.py")]
SETTINGS = {
    "genloom_default": {},  # genloom.devices.cpu_threads: usable CPUs less the busy ones
    "torch_default": {"GENLOOM_THREADS": str(len(os.sched_getaffinity(0)))},  # every usable CPU: torch's own default
    "omp_1": {"OMP_NUM_THREADS": "1"},
}
BUSY_LOOP = "while True: pass"
sys.path.insert(0, str(REPO / "platform"))
from genloom.devices import cpu_threads  # noqa: E402


def _env(home: Path, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "GENLOOM_THREADS", "MKL_NUM_THREADS")}
    return {**env, "GENLOOM_HOME": str(home), "GENLOOM_REUSE_SERVER": "0", **extra}


def _run(args: list[str], env: dict[str, str]) -> tuple[float, dict]:
    started = time.perf_counter()
    done = subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=1800)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"genloom {' '.join(args)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return seconds, json.loads(done.stdout) if done.stdout.strip().startswith("{") else {}


def _corpus(folder: Path, n: int) -> None:
    words = (
        "postgres vector index chunk token retrieval fusion model train sample dataset version feedback "
        "citation embedding cosine latency thread process contention"
    ).split()
    for i in range(n):
        lines = [" ".join(words[(i * 7 + j * 3 + k) % len(words)] for k in range(14)) + "." for j in range(40)]
        (folder / f"doc{i:04d}.txt").write_text("\n".join(lines))


def measure(home: Path, corpus: Path, steps: int, setting: str, condition: str, n: int) -> dict:
    env = _env(home, SETTINGS[setting])
    loader = subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) if condition == "loaded" else None
    try:
        time.sleep(1.0 if loader else 0)
        load_before = os.getloadavg()[0]
        threads, why = cpu_threads({k: v for k, v in SETTINGS[setting].items()})  # what the child will pick
        ingest_s, report = _run(["ingest", str(corpus), "-c", f"c{n}", "--json"], env)
        train_s, _ = _run(
            ["train", "vae", "--dataset", "digits", "--steps", str(steps), "--name", f"vae{n}", "--device", "cpu"], env
        )
    finally:
        if loader is not None:
            loader.kill()
            loader.wait()
    return {
        "setting": setting,
        "condition": condition,
        "load_before": round(load_before, 2),
        "threads": threads,
        "threads_why": why,
        "ingest_seconds": round(ingest_s, 2),
        "ingest_chunks": report.get("chunks"),
        "ingest_chunks_per_s": round(report["chunks"] / report["seconds"], 2) if report.get("seconds") else None,
        "train_vae_seconds": round(train_s, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=40, help="Small text files per ingest.")
    parser.add_argument("--steps", type=int, default=60, help="train vae steps.")
    parser.add_argument("--out", default="threads/contention.json")
    args = parser.parse_args()
    from genloom.devices import usable_cpus

    with tempfile.TemporaryDirectory(prefix="genloom-threads-") as tmp:
        home, corpus = Path(tmp) / "home", Path(tmp) / "corpus"
        corpus.mkdir()
        _corpus(corpus, args.docs)
        env = _env(home, {})
        _run(["datasets", "import", "digits"], env)
        rows, n = [], 0
        try:
            for condition in ("idle", "loaded"):
                for setting in SETTINGS:
                    n += 1
                    rows.append(measure(home, corpus, args.steps, setting, condition, n))
                    print(json.dumps(rows[-1]), flush=True)
            server = server_versions(env)  # before the server stops
        finally:
            subprocess.run([*CLI, "db", "stop"], env=env, capture_output=True, timeout=120)
    ratios: dict = {}
    for condition in ("idle", "loaded"):
        here = [r for r in rows if r["condition"] == condition]
        for metric in ("ingest_seconds", "train_vae_seconds"):
            best = min(r[metric] for r in here)
            ratios.setdefault(condition, {})[metric] = {r["setting"]: round(r[metric] / best, 3) for r in here}
    default_within_20_percent = all(ratios[c][m]["genloom_default"] <= 1.2 for c in ratios for m in ratios[c])
    measured_on = environment()
    measured_on["versions"].update(server)
    path = write_result(
        args.out,
        {
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "environment": measured_on,
            "scale": {"ingest_documents": args.docs, "train_vae_steps": args.steps},
            "usable_cpus": usable_cpus(),
            "rows": rows,
            "ratio_to_best": ratios,
            "default_within_20_percent": default_within_20_percent,
        },
    )
    print(f"wrote {path}; default within 20 % of best: {default_within_20_percent}")


if __name__ == "__main__":
    main()
