"""Jobs as `runs` rows: every ingest, train, sample, evaluate, dedup, import is one.

A run's start is committed on its own, before the work, so a crash or Ctrl-C leaves a
visible run (failed or interrupted) instead of nothing; the work itself then commits
in its own transactions and the run is finished in a last, separate one.

    with tracked_run("train", params={...}, input_version_id=v.id) as run_id:
        ...                                      # work, in its own session_scope()s
        finish(run_id, summary={...})            # optional: mark success with a summary

If the block raises, the run is marked failed (or interrupted on Ctrl-C) with the error.
`tracked_run(kind, reopen=RUN_ID)` continues an earlier run instead (training's --resume):
the same row is marked running again, and finished the same way.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import socket
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from genloom import __version__
from genloom.db.engine import session_scope
from genloom.db.models import Metric, Run


@functools.cache
def code_version() -> str:
    """Package version, plus the git commit when genloom runs from a checkout."""
    repo = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short=12", "HEAD"],
            capture_output=True, text=True, timeout=2, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return __version__
    return f"{__version__}+g{sha}" if sha else __version__


def start_run(session: Session, kind: str, *, params: Mapping[str, Any] | None = None, **columns: Any) -> Run:
    """Insert a running run (the caller's transaction decides when it becomes visible)."""
    run = Run(
        kind=kind,
        status="running",
        params=dict(params or {}),
        code_version=code_version(),
        host=socket.gethostname(),
        **columns,
    )
    session.add(run)
    session.flush()
    return run


def reopen_run(session: Session, run_id: int) -> None:
    """Mark an unfinished (interrupted or failed) run running again: a resumed job continues it."""
    session.execute(sa.update(Run).where(Run.id == run_id).values(status="running", error=None, finished_at=None))


def finish_run(
    session: Session,
    run_id: int,
    *,
    status: str = "succeeded",
    summary: Mapping[str, Any] | None = None,
    error: str | None = None,
    **columns: Any,
) -> None:
    values: dict[str, Any] = {"status": status, "finished_at": dt.datetime.now(dt.timezone.utc), **columns}
    if summary is not None:
        values["summary"] = dict(summary)
    if error is not None:
        values["error"] = error
    session.execute(sa.update(Run).where(Run.id == run_id).values(**values))


def log_metrics(session: Session, run_id: int, metrics: Mapping[str, float], *, step: int | None = None) -> None:
    """Write (run, step, name, value) rows; step None means the run's final metrics."""
    rows = [
        {"run_id": run_id, "step": step, "name": name, "value": float(value)}
        for name, value in metrics.items()
        if value is not None
    ]
    if rows:
        session.execute(sa.insert(Metric), rows)


class RunHandle:
    """What `tracked_run` yields: the run's id, and a way to finish it with a summary."""

    def __init__(self, run_id: int):
        self.id = run_id
        self.finished = False
        # What an interrupted run's error says (e.g. how to resume it); the job may set it.
        self.interrupted_error = "interrupted (Ctrl-C)"

    def finish(self, *, summary: Mapping[str, Any] | None = None, session: Session | None = None, **columns: Any) -> None:
        """Mark success. Pass `session` to finish inside the caller's last transaction
        (so the run is never 'succeeded' without what it wrote, nor the reverse)."""
        if session is not None:
            finish_run(session, self.id, summary=summary, **columns)
        else:
            with session_scope() as s:
                finish_run(s, self.id, summary=summary, **columns)
        self.finished = True


@contextlib.contextmanager
def tracked_run(
    kind: str, *, params: Mapping[str, Any] | None = None, reopen: int | None = None, **columns: Any
) -> Iterator[RunHandle]:
    """A run for the block: started (committed on its own), or with `reopen` an earlier run continued."""
    with session_scope() as session:
        if reopen is None:
            run_id = start_run(session, kind, params=params, **columns).id
        else:
            reopen_run(session, reopen)
            run_id = reopen
    handle = RunHandle(run_id)
    try:
        yield handle
    except KeyboardInterrupt:
        with session_scope() as session:
            finish_run(session, run_id, status="interrupted", error=handle.interrupted_error)
        raise
    except BaseException as exc:
        with session_scope() as session:
            finish_run(session, run_id, status="failed", error=f"{type(exc).__name__}: {exc}"[:2000])
        raise
    else:
        if not handle.finished:
            with session_scope() as session:
                finish_run(session, run_id)
