"""Resumable training state in Postgres (`run_checkpoints`), written on a background thread.

A checkpoint is a torch.save of the modules, optimisers, schedulers, extra state (EMA,
tokenizer), RNG state and early-stopping bookkeeping; `snapshot`/`restore` keep an in-memory
copy of the best weights for --keep-best.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import threading
from typing import Any

import sqlalchemy as sa

from genloom.errors import BadInput, GenloomError


def snapshot(arch) -> dict:
    """A CPU copy of everything `export` reads: the modules' weights and the extra state (EMA, tokenizer)."""
    import copy

    import torch

    def to_cpu(value):
        if torch.is_tensor(value):
            return value.detach().to("cpu", copy=True)
        if isinstance(value, dict):
            return {k: to_cpu(v) for k, v in value.items()}
        return copy.deepcopy(value)

    return {
        "modules": {k: to_cpu(m.state_dict()) for k, m in arch.modules().items()},
        "extra": to_cpu(arch.extra_state()),
    }


def restore(arch, snapshot: dict) -> None:
    for key, module in arch.modules().items():
        module.load_state_dict(snapshot["modules"][key])
    arch.load_extra_state(snapshot["extra"])


class CheckpointWriter:
    """Writes resumable checkpoints to Postgres on a background thread.

    Serialising the state (torch.save, which also copies it off the GPU) happens in the
    training loop, so the snapshot is of exactly this step. The database write (a 10 M-parameter
    GPT with its AdamW state is 123 MB: seconds of TOAST and WAL) overlaps the next steps. At
    most one write is in flight; `wait()` re-raises a failed write, and every way out of a
    run waits, so an interrupted run keeps its newest checkpoint.
    """

    def __init__(self, run_id: int):
        self.run_id = run_id
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.saved_step: int | None = None  # the newest checkpoint known to have committed

    def save(self, step: int, state: dict[str, Any]) -> None:
        import torch

        self.wait()
        buf = io.BytesIO()
        torch.save(state, buf)
        self.thread = threading.Thread(
            target=self._write, args=(step, buf.getvalue()), name="genloom-checkpoint", daemon=True
        )
        self.thread.start()

    def _write(self, step: int, payload: bytes) -> None:
        try:
            save_checkpoint(self.run_id, step, payload)
            self.saved_step = step
        except BaseException as exc:  # re-raised in the training loop by wait()
            self.error = exc

    def wait(self, timeout: float | None = None) -> None:
        if self.thread is not None:
            self.thread.join(timeout)
            if self.thread.is_alive():
                return  # still writing after `timeout`: the daemon thread is abandoned with the run
            self.thread = None
        if self.error is not None:
            error, self.error = self.error, None
            raise error


def save_checkpoint(run_id: int, step: int, payload: bytes, keep: int = 2) -> None:
    from genloom.db.engine import session_scope
    from genloom.db.models import RunCheckpoint

    with session_scope() as s:
        s.execute(sa.delete(RunCheckpoint).where(RunCheckpoint.run_id == run_id, RunCheckpoint.step == step))
        s.add(
            RunCheckpoint(
                run_id=run_id,
                step=step,
                payload=payload,
                sha256=hashlib.sha256(payload).hexdigest(),
                size_bytes=len(payload),
            )
        )
        s.flush()
        # Only the newest few matter for resume; old ones would just bloat the table.
        old = s.scalars(
            sa.select(RunCheckpoint.step)
            .where(RunCheckpoint.run_id == run_id)
            .order_by(RunCheckpoint.step.desc())
            .offset(keep)
        ).all()
        if old:
            s.execute(sa.delete(RunCheckpoint).where(RunCheckpoint.run_id == run_id, RunCheckpoint.step.in_(old)))


def load_checkpoint(run_id: int, step: int) -> dict[str, Any]:
    import torch

    from genloom.db.engine import session_scope
    from genloom.db.models import RunCheckpoint

    with session_scope() as s:
        row = s.execute(
            sa.select(RunCheckpoint.payload, RunCheckpoint.sha256).where(
                RunCheckpoint.run_id == run_id, RunCheckpoint.step == step
            )
        ).one()
    if hashlib.sha256(row.payload).hexdigest() != row.sha256:
        raise GenloomError(f"checkpoint of run {run_id} at step {step} is corrupt (sha256 mismatch)")
    try:
        # weights_only: tensors, numbers, strings and containers only. A pickle that names any
        # other global (os.system, …) is refused before anything in it runs: whoever can write
        # run_checkpoints must not be able to run code in every trainer that resumes from it.
        return torch.load(io.BytesIO(row.payload), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise GenloomError(
            f"refusing to resume run {run_id} from step {step}: its checkpoint holds more than tensors and plain "
            f"data ({first[:160]}); start afresh without --resume"
        ) from None


def find_resumable(session, arch: str, name: str) -> tuple[int, int]:
    """(run id, checkpoint step) of the newest unfinished train run of NAME with a checkpoint.

    A run still `running` is refused while its process lives (on this host: its pid; on another
    host nothing can be checked from here): two processes must never train one run."""
    import socket

    from genloom.db.models import Run, RunCheckpoint
    from genloom.db.stale_runs import process_alive

    row = session.execute(
        sa.select(Run.id, Run.status, Run.host, Run.pid, Run.started_at, sa.func.max(RunCheckpoint.step))
        .join(RunCheckpoint, RunCheckpoint.run_id == Run.id)
        .where(
            Run.kind == "train",
            Run.status != "succeeded",
            Run.params["name"].astext == name,
            Run.params["arch"].astext == arch,
        )
        .group_by(Run.id)
        .order_by(Run.id.desc())
        .limit(1)
    ).first()
    if row is None:
        raise BadInput(
            f"nothing to resume for {name!r}: no interrupted {arch} run with a checkpoint (drop --resume to start afresh)"
        )
    run_id, status, host, pid, started_at, step = row
    if status == "running":
        if host != socket.gethostname():
            raise BadInput(
                f"run {run_id} of {name!r} is marked running on host {host}: resume it there, "
                "or stop that process first"
            )
        if pid is not None and process_alive(pid, started_at):
            raise BadInput(f"run {run_id} of {name!r} is still running (process {pid}): stop it before --resume")
    return int(run_id), int(step)


def finish_writing(writer: CheckpointWriter | None) -> None:
    """Let a checkpoint write in flight land while a run is being abandoned (its error is moot then).

    Bounded: a run being stopped (Ctrl-C, SIGTERM from a scheduler) must exit even if the
    database never answers; the previous checkpoint then remains the one to resume from."""
    if writer is None:
        return
    try:
        writer.wait(timeout=30)
    except Exception:
        pass
