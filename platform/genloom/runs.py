"""Jobs as `runs` rows: every ingest, train, sample, evaluate, dedup, import is one.

A run's start is committed on its own, before the work, so a crash or Ctrl-C leaves a
visible run (failed or interrupted) instead of nothing; the work itself then commits
in its own transactions and the run is finished in a last, separate one.

    with tracked_run("train", params={...}, input_version_id=v.id) as run_id:
        ...                                      # work, in its own session_scope()s
        finish(run_id, summary={...})            # optional: mark success with a summary

If the block raises, the run is marked failed (or interrupted on Ctrl-C or SIGTERM, with what it
had committed) with the error. `tracked_run(kind, reopen=RUN_ID)` continues an earlier run
instead (training's --resume): the same row is marked running again, and finished the same way.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import os
import signal
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from genloom import __version__
from genloom.db.engine import session_scope
from genloom.db.models import Metric, Run
from genloom.errors import JobInterrupted


@functools.cache
def code_version() -> str:
    """Package version, plus the git commit when genloom runs from a checkout."""
    repo = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=2,
            check=True,
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
        pid=os.getpid(),
        **columns,
    )
    session.add(run)
    session.flush()
    return run


def reopen_run(session: Session, run_id: int, *, from_step: int | None = None) -> None:
    """Make an unfinished (interrupted or failed) run this process's running run again.

    Resuming from checkpoint `from_step` redoes the steps after it: the metrics logged for them
    (and any final ones) are deleted, or the run would hold two values for each of those steps.
    """
    if from_step is not None:
        session.execute(
            sa.delete(Metric).where(Metric.run_id == run_id, sa.or_(Metric.step > from_step, Metric.step.is_(None)))
        )
    session.execute(
        sa.update(Run)
        .where(Run.id == run_id)
        .values(
            status="running",
            error=None,
            finished_at=None,
            host=socket.gethostname(),
            pid=os.getpid(),
            started_at=sa.func.now(),
        )
    )


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


def run_detail(session: Session, run_id: int) -> dict[str, Any]:
    """One run as a person reads it: what it was, how it went, its parameters, summary and metrics,
    with its metric curves, checkpoints and the models it registered.

    `metrics` holds the final metrics (step NULL) and, for metrics logged per step, the last
    step's value; `steps` says how many steps each stepped metric has; `curves` holds every
    step ({name: [(step, value), ...]}) and `final_metrics` only the step-NULL values."""
    from genloom.db.models import Model, RunCheckpoint
    from genloom.errors import NotFound

    run = session.get(Run, run_id)
    if run is None:
        raise NotFound(f"no run {run_id}", cli_hint="see: genloom runs list")
    rows = session.execute(
        sa.select(Metric.name, Metric.step, Metric.value)
        .where(Metric.run_id == run_id, Metric.item_id.is_(None))
        .order_by(Metric.name, Metric.step.nulls_last())
    ).all()
    metrics: dict[str, float] = {}
    steps: dict[str, int] = {}
    curves: dict[str, list[tuple[int, float]]] = {}
    final: dict[str, float] = {}
    for name, step, value in rows:  # ordered so the final (NULL step) value lands last and wins
        metrics[name] = value
        if step is None:
            final[name] = value
        else:
            steps[name] = steps.get(name, 0) + 1
            curves.setdefault(name, []).append((step, value))
    checkpoints = session.execute(
        sa.select(RunCheckpoint.step, RunCheckpoint.size_bytes, RunCheckpoint.created_at)
        .where(RunCheckpoint.run_id == run_id)
        .order_by(RunCheckpoint.step)
    ).all()
    models = session.execute(
        sa.select(Model.id, Model.name, Model.version, Model.architecture).where(Model.run_id == run_id)
    ).all()
    finished = run.finished_at
    return {
        "id": run.id,
        "kind": run.kind,
        "name": run.name,
        "status": run.status,
        "started_at": run.started_at,
        "finished_at": finished,
        "seconds": (finished - run.started_at).total_seconds() if finished and run.started_at else None,
        "host": run.host,
        "pid": run.pid,
        "device": run.device,
        "code_version": run.code_version,
        "input_version_id": run.input_version_id,
        "output_version_id": run.output_version_id,
        "model_id": run.model_id,
        "collection_id": run.collection_id,
        "error": run.error,
        "params": run.params or {},
        "summary": run.summary or {},
        "metrics": metrics,
        "steps": steps,
        "curves": curves,
        "final_metrics": final,
        "checkpoints": [dict(r._mapping) for r in checkpoints],
        "models": [dict(r._mapping) for r in models],
    }


def compare_runs(session: Session, run_ids: list[int]) -> dict[str, Any]:
    """Runs side by side: each parameter, summary value and metric as one row of values (None
    where a run lacks it), with `differs` naming the rows whose values are not all equal."""
    details = [run_detail(session, run_id) for run_id in run_ids]
    rows: dict[str, list[Any]] = {}
    for section in ("params", "summary", "metrics"):
        keys = sorted({key for d in details for key in d[section]})
        for key in keys:
            values = [d[section].get(key) for d in details]
            if all(not isinstance(v, (dict, list)) for v in values):  # nested values stay in `runs show`
                rows[f"{section}.{key}"] = values
    rows["status"] = [d["status"] for d in details]
    rows["seconds"] = [d["seconds"] for d in details]
    differs = [key for key, values in rows.items() if len({repr(v) for v in values}) > 1]
    return {"runs": run_ids, "kinds": [d["kind"] for d in details], "rows": rows, "differs": differs}


class _Signalled(KeyboardInterrupt):
    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signal_name = signal.Signals(signum).name


def raise_interrupt(signum, frame):
    """A signal handler: SIGTERM (or any) interrupts like Ctrl-C, naming the signal."""
    raise _Signalled(signum)


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Within the block, SIGTERM (what kill, systemd, Kubernetes and torchrun send) interrupts like
    Ctrl-C: a KeyboardInterrupt at the next bytecode, so the transaction in flight rolls back whole
    and the job's own clean-up runs. Only the main thread can receive signals; elsewhere a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def interruption_message(exc: BaseException, what: str, committed: Mapping[str, Any] | None) -> str:
    """One line for the run's error and the user's stderr: who stopped the job, what is kept."""
    by = getattr(exc, "signal_name", None) or "SIGINT (Ctrl-C)"
    if committed is None:
        kept = "nothing (this job commits all or nothing)"
    elif committed:
        kept = ", ".join(f"{key} {value}" for key, value in committed.items())
    else:
        kept = "nothing yet"
    return f"{what} interrupted by {by}; committed: {kept}"


class RunHandle:
    """What `tracked_run` yields: the run's id, and a way to finish it with a summary.

    A job that commits as it goes sets `committed` to a callable returning what has landed so
    far (e.g. documents and chunks); an interrupted run records it and says it on stderr."""

    def __init__(self, run_id: int, kind: str = "job"):
        self.id = run_id
        self.kind = kind
        self.finished = False
        self.committed: Callable[[], Mapping[str, Any]] | None = None
        # Said after what was committed when the run is interrupted (e.g. how to resume it).
        self.resume_hint: str | None = None

    def committed_so_far(self) -> dict[str, Any] | None:
        """What has landed so far; None for an all-or-nothing job (nothing, until it succeeds)."""
        if self.committed is None:
            return None
        try:
            return dict(self.committed())
        except Exception:  # an interrupted job's bookkeeping must not hide the interruption
            return {}

    def finish(
        self, *, summary: Mapping[str, Any] | None = None, session: Session | None = None, **columns: Any
    ) -> None:
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
    kind: str,
    *,
    params: Mapping[str, Any] | None = None,
    reopen: int | None = None,
    reopen_from_step: int | None = None,
    **columns: Any,
) -> Iterator[RunHandle]:
    """A run for the block: started (committed on its own), or with `reopen` an earlier run continued
    (from checkpoint step `reopen_from_step`: the metrics it logged after that step are dropped)."""
    with session_scope() as session:
        if reopen is None:
            run_id = start_run(session, kind, params=params, **columns).id
        else:
            reopen_run(session, reopen, from_step=reopen_from_step)
            run_id = reopen
    handle = RunHandle(run_id, kind)
    try:
        with stop_on_sigterm():
            yield handle
    except (KeyboardInterrupt, JobInterrupted) as exc:  # JobInterrupted: a nested job's
        committed = handle.committed_so_far()
        message = interruption_message(exc, f"{kind} run {run_id}", committed)
        if handle.resume_hint:
            message += f"; {handle.resume_hint}"
        with session_scope() as session:
            finish_run(session, run_id, status="interrupted", error=message, summary={"committed": committed or {}})
        raise JobInterrupted(message) from None
    except BaseException as exc:
        with session_scope() as session:
            finish_run(session, run_id, status="failed", error=f"{type(exc).__name__}: {exc}"[:2000])
        raise
    else:
        if not handle.finished:
            with session_scope() as session:
                finish_run(session, run_id)


# --------------------------------------------------------------------------- reading runs back (UI, reports)


def list_runs(
    session: Session, *, before: int | None = None, limit: int = 50, kind: str | None = None, status: str | None = None
) -> list[dict[str, Any]]:
    """Newest runs first, below id `before` (keyset), optionally of one kind and status."""
    query = sa.select(Run).order_by(Run.id.desc()).limit(limit)
    if before is not None:
        query = query.where(Run.id < before)
    if kind:
        query = query.where(Run.kind == kind)
    if status:
        query = query.where(Run.status == status)
    return [_run_json(run) for run in session.scalars(query)]


def _run_json(run: Run) -> dict[str, Any]:
    return {
        "id": run.id,
        "kind": run.kind,
        "name": run.name,
        "status": run.status,
        "error": run.error,
        "params": run.params,
        "summary": run.summary,
        "model_id": run.model_id,
        "input_version_id": run.input_version_id,
        "output_version_id": run.output_version_id,
        "device": run.device,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
    }
