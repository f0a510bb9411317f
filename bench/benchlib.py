"""What every benchmark records beside its figures, and where it writes them.

A result file is only evidence if it says where and when it was measured: the machine,
its load, the versions and the commit. `environment()` collects that; `write_result()`
adds the PostgreSQL and pgvector versions of the server the bench measured and puts the
JSON under bench/results/ (the files docs/benchmarks.md cites, checked by
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
        sha = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
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
        "versions": {
            "python": sys.version.split()[0],
            **{
                name: _version(name)
                for name in (
                    "torch",
                    "sqlalchemy",
                    "psycopg",
                    "fastapi",
                    "uvicorn",
                    "transformers",
                    "sentence-transformers",
                    "numpy",
                )
            },
        },
        "git_sha": git_sha(),
    }


def server_versions(env: dict[str, str] | None = None) -> dict[str, str]:
    """PostgreSQL and pgvector versions of the server genloom uses under ENV (default: this process's).

    Asked through `genloom db status --json` in a child, so a bench that drives the CLI with its
    own GENLOOM_HOME or DATABASE_URL names the server it measured, and a stopped embedded server
    is not started just to be asked (that is an error: write the result before stopping it).
    """
    done = subprocess.run(
        [sys.executable, str(REPO / "cli.py"), "db", "status", "--json"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    status = json.loads(done.stdout) if done.returncode == 0 else {}
    if status.get("server") != "running" or not status.get("server_version"):
        raise RuntimeError(
            "benchlib: cannot read the PostgreSQL/pgvector versions of the measured server "
            f"(`genloom db status --json`: {(done.stderr or done.stdout).strip()[-300:]}); "
            "write the result while the server runs, or pass database=False for a bench "
            "that uses no database"
        )
    return {"postgresql": status["server_version"], "pgvector": status["pgvector_version"]}


def keep_server_versions(data: dict, env: dict[str, str] | None = None) -> None:
    """Ask the server now, for a bench that stops it before write_result: its versions go into DATA."""
    data.setdefault("environment", environment())["versions"].update(server_versions(env))


def write_result(relative: str, data: dict, *, database: bool = True, env: dict[str, str] | None = None) -> Path:
    """Write DATA to bench/results/RELATIVE (with `environment` added when missing); return the path.

    The environment's versions gain the server's (`server_versions(ENV)`, unless already there;
    bench/check_results.py requires them). A bench that uses no database says so with
    database=False and records None for both.
    """
    path = RESULTS / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"environment": environment(), **data} if "environment" not in data else data
    versions = data["environment"].setdefault("versions", {})
    if not {"postgresql", "pgvector"} <= versions.keys():  # a bench that stops its server asks it before
        versions.update(server_versions(env) if database else {"postgresql": None, "pgvector": None})
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path
