"""How long `genloom` commands take from the shell, next to `python -c pass` measured in the same run.

    nice -n 10 python bench/cli_startup.py [--repeats 5] [--out bench/results/cli_startup/NAME.json]

Each command runs as a fresh `python cli.py ...` process (what a person typing it pays),
`--repeats` times; the median counts. The baseline is the interpreter alone (`python -c
pass`), so `ratio` = command / baseline is comparable across machines and load. For each
command the JSON also says whether the process imported torch (a second run under
`python -X importtime`). `search` is timed twice: loading the sentence model in the CLI
process, and with `genloom serve` running on the same store (its model embeds the query).
Uses its own GENLOOM_HOME (embedded server) with three small documents ingested.

    python bench/cli_startup.py --against /path/to/older/checkout --out bench/results/cli_startup/ab.json

times the quick commands (not search) alternately in this checkout and the other one (each
with its own GENLOOM_HOME), so both are measured under the same load in the same run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform as py_platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, str(REPO / "cli.py")]

COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "genloom --help": CLI + ["--help"],
    "genloom db status": CLI + ["db", "status"],
    "genloom sql": CLI + ["sql", "SELECT count(*) FROM documents"],
    "genloom datasets list": CLI + ["datasets", "list"],
    "genloom search": CLI + ["search", "why do cats purr", "-c", "bench"],
}


def timed(cmd: list[str], env: dict, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
        out.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.strip()[-500:]}")
    return out


def imports_torch(cmd: list[str], env: dict) -> bool:
    if cmd[1] == "-c":
        return False
    proc = subprocess.run([cmd[0], "-X", "importtime", *cmd[1:]], env=env, cwd=REPO, capture_output=True, text=True)
    # `import time: self | cumulative | <indent>module`: torch at any depth (sentence-transformers imports it).
    return any(line.rsplit("|", 1)[-1].strip() == "torch" for line in proc.stderr.splitlines()
               if line.startswith("import time:"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Skip(Exception):
    pass


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "cli_startup" / "cpu.json")
    parser.add_argument("--no-serve", action="store_true", help="skip the search through a running server "
                        "(for a checkout older than the reuse of `genloom serve`)")
    parser.add_argument("--against", type=Path, help="another checkout to time alternately with this one")
    args = parser.parse_args()
    if args.against:
        return compare(args)

    home = Path(tempfile.mkdtemp(prefix="genloom-bench-cli-"))
    env = {**os.environ, "GENLOOM_HOME": str(home), "GENLOOM_REUSE_SERVER": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO / "platform"), str(REPO)])}
    env.pop("DATABASE_URL", None)
    docs = home / "docs"
    docs.mkdir()
    (docs / "cats.txt").write_text("Cats purr when they are content, and sometimes when they are hurt.")
    (docs / "pg.txt").write_text("PostgreSQL stores rows in heap pages; vacuum reclaims dead rows.")
    (docs / "sun.txt").write_text("Solar panels convert sunlight into electricity.")
    server = None
    try:
        subprocess.run(CLI + ["ingest", str(docs), "-c", "bench"], env=env, cwd=REPO, check=True, capture_output=True)
        results: dict[str, dict] = {}
        for name, cmd in COMMANDS.items():
            secs = timed(cmd, env, args.repeats)
            results[name] = {"median_s": round(statistics.median(secs), 3), "runs_s": [round(s, 3) for s in secs],
                             "imports_torch": imports_torch(cmd, env)}
            print(f"{name:<34} {results[name]['median_s']:7.3f} s  torch: {results[name]['imports_torch']}",
                  file=sys.stderr, flush=True)

        if args.no_serve:
            raise _Skip
        port = free_port()
        server = subprocess.Popen(CLI + ["serve", "--port", str(port), "--log-level", "warning"], env=env, cwd=REPO,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while not (home / "serve.json").exists() or not listening(port):
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("genloom serve did not start")
            time.sleep(0.2)
        timed(COMMANDS["genloom search"], env, 1)  # the server loads its model on the first query
        secs = timed(COMMANDS["genloom search"], env, args.repeats)
        results["genloom search (serve running)"] = {
            "median_s": round(statistics.median(secs), 3), "runs_s": [round(s, 3) for s in secs],
            "imports_torch": imports_torch(COMMANDS["genloom search"], env)}
        print(f"{'genloom search (serve running)':<34} {results['genloom search (serve running)']['median_s']:7.3f} s",
              file=sys.stderr)
    except _Skip:
        pass
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=60)
        subprocess.run(CLI + ["db", "stop"], env=env, cwd=REPO, capture_output=True)
        shutil.rmtree(home, ignore_errors=True)

    base = results["python -c pass"]["median_s"]
    for r in results.values():
        r["ratio_to_python"] = round(r["median_s"] / base, 2)
    import torch

    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    out = {
        "benchmark": "cli_startup",
        "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "git_sha": sha,
        "machine": {"cpus": os.cpu_count(), "platform": py_platform.platform(), "python": py_platform.python_version(),
                    "loadavg_1_5_15": [round(x, 1) for x in os.getloadavg()]},
        "versions": {"torch": torch.__version__},
        "repeats": args.repeats,
        "baseline": "python -c pass",
        "commands": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


def compare(args) -> None:
    quick = [name for name in COMMANDS if name != "genloom search"]
    trees = {"this": REPO, "against": args.against.resolve()}
    envs, homes = {}, {}
    for key, tree in trees.items():
        homes[key] = Path(tempfile.mkdtemp(prefix=f"genloom-bench-cli-{key}-"))
        envs[key] = {**os.environ, "GENLOOM_HOME": str(homes[key]),
                     "PYTHONPATH": os.pathsep.join([str(tree / "platform"), str(tree)])}
        envs[key].pop("DATABASE_URL", None)
        subprocess.run([sys.executable, str(tree / "cli.py"), "db", "migrate"], env=envs[key], cwd=tree, check=True,
                       capture_output=True)
    runs: dict[str, dict[str, list[float]]] = {key: {name: [] for name in quick} for key in trees}
    try:
        for _ in range(args.repeats):
            for name in quick:
                for key, tree in trees.items():  # alternate: both trees see the same load
                    cmd = [c.replace(str(REPO / "cli.py"), str(tree / "cli.py")) for c in COMMANDS[name]]
                    runs[key][name] += timed(cmd, envs[key], 1)
    finally:
        for key, tree in trees.items():
            subprocess.run([sys.executable, str(tree / "cli.py"), "db", "stop"], env=envs[key], cwd=tree,
                           capture_output=True)
            shutil.rmtree(homes[key], ignore_errors=True)
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    out = {
        "benchmark": "cli_startup_ab",
        "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "git_sha": sha, "against": str(trees["against"]),
        "machine": {"cpus": os.cpu_count(), "platform": py_platform.platform(), "python": py_platform.python_version(),
                    "loadavg_1_5_15": [round(x, 1) for x in os.getloadavg()]},
        "repeats": args.repeats,
        "commands": {name: {key: round(statistics.median(runs[key][name]), 3) for key in trees} for name in quick},
    }
    for name, r in out["commands"].items():
        r["this_over_against"] = round(r["this"] / r["against"], 2)
        print(f"{name:<24} this {r['this']:6.3f} s   against {r['against']:6.3f} s   ratio {r['this_over_against']}",
              file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
