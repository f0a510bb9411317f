"""The training job: one `runs` row from start to registered model, for every architecture.

    result = train("vae", TrainOptions(dataset="digits", steps=200))

What happens, in order:
1. The dataset version is resolved and described; the architecture refuses what it cannot
   train (modality, options) before anything is built or written.
2. A `train` run is committed on its own (or, with resume, the interrupted run is reopened).
3. The loop: the architecture's `train_step` on streamed batches; the framework logs averaged
   metrics every `log_every` steps, evaluates every `eval_every` (early stopping on the
   architecture's `monitor`), and saves a resumable checkpoint every `checkpoint_every`.
4. The final model is registered, the final metrics written and the run marked succeeded,
   all in ONE transaction: never a model without its run, nor a done run without its model.
A Ctrl-C or SIGTERM marks the run interrupted (resume it with --resume); an error marks it failed.

Under `torchrun --nproc_per_node N genloom train …` every process runs this; rank 0 alone
writes to the database, gradients are averaged across ranks, each rank reads its shard.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import hashlib
import io
import math
import os
import pickle
import signal
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import sqlalchemy as sa

from genloom.errors import BadInput, GenloomError, JobInterrupted
from genloom.progress import ProgressFn
from genloom.runs import interruption_message, raise_interrupt
from genloom.training.options import TrainOptions


@dataclasses.dataclass
class TrainResult:
    run_id: int
    model: str  # NAME@VERSION
    model_id: int
    metrics: dict[str, float]
    steps: int
    seconds: float
    resumed_from_step: int | None = None
    stopped_early: bool = False
    kept_step: int | None = None  # the step whose weights were registered (earlier than `steps` with keep_best)


class TrainContext:
    """What the framework hands an architecture: device, precision, distributed helpers."""

    def __init__(self, *, device: str, rank: int, world_size: int, batch_size: int, lr: float,
                 total_steps: int, grad_clip: float, seed: int, compile: bool):
        import torch

        self.torch = torch
        self.device = device
        self.rank = rank
        self.world_size = world_size
        self.batch_size = batch_size  # per process
        self.lr = lr
        self.total_steps = total_steps
        self.grad_clip = grad_clip
        self.seed = seed
        self.compile = compile
        self._ddp_params: set[int] = set()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def autocast(self):
        """bf16 autocast on CUDA (no loss scaling needed); a no-op elsewhere."""
        if self.device.startswith("cuda"):
            return self.torch.autocast("cuda", dtype=self.torch.bfloat16)
        return contextlib.nullcontext()

    def ddp(self, module):
        """Wrap in DistributedDataParallel when running under torchrun (else return as is)."""
        if not self.distributed:
            return module
        from torch.nn.parallel import DistributedDataParallel

        self._ddp_params.update(id(p) for p in module.parameters())
        ids = [int(self.device.split(":")[1])] if self.device.startswith("cuda:") else None
        return DistributedDataParallel(module, device_ids=ids)

    def maybe_compile(self, module):
        return self.torch.compile(module) if self.compile else module

    def backward_step(self, loss, optimizer, *, clip: float | None = None, retain_graph: bool = False):
        """backward, average gradients across ranks (unless DDP did), clip, step, zero.

        Returns the grad norm as a 0-dim tensor: turning it into a Python float here would make
        the CPU wait for the GPU every step; the trainer reads metrics only when it logs them."""
        torch = self.torch
        loss.backward(retain_graph=retain_graph)
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if self.distributed:
            import torch.distributed as dist

            for p in params:
                if id(p) not in self._ddp_params:
                    dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
                    p.grad.div_(self.world_size)
        limit = self.grad_clip if clip is None else clip
        if limit and limit > 0:
            norm = torch.nn.utils.clip_grad_norm_(params, limit)
        elif params:
            norm = torch.linalg.vector_norm(torch.stack([p.grad.detach().norm() for p in params]))
        else:
            norm = torch.zeros(())
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return norm.detach()

    def ema(self, module, decay: float = 0.999):
        """An exponential moving average of `module`'s weights (torch's AveragedModel)."""
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        return AveragedModel(module, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)

    def generator(self, offset: int = 0):
        """A seeded torch.Generator on the training device (differs per rank)."""
        g = self.torch.Generator(device=self.device if not self.device.startswith("mps") else "cpu")
        g.manual_seed(self.seed * 1000 + self.rank + offset)
        return g


# --------------------------------------------------------------------------- distributed set-up


def _snapshot(arch) -> dict:
    """A CPU copy of everything `export` reads: the modules' weights and the extra state (EMA, tokenizer)."""
    import copy

    import torch

    def to_cpu(value):
        if torch.is_tensor(value):
            return value.detach().to("cpu", copy=True)
        if isinstance(value, dict):
            return {k: to_cpu(v) for k, v in value.items()}
        return copy.deepcopy(value)

    return {"modules": {k: to_cpu(m.state_dict()) for k, m in arch.modules().items()}, "extra": to_cpu(arch.extra_state())}


def _restore(arch, snapshot: dict) -> None:
    for key, module in arch.modules().items():
        module.load_state_dict(snapshot["modules"][key])
    arch.load_extra_state(snapshot["extra"])


def _indexed_device(device: str, local_rank: int) -> str:
    """'cuda' becomes 'cuda:LOCAL_RANK': torch.cuda.set_device needs an index, and each torchrun rank takes its own GPU."""
    return f"cuda:{local_rank}" if device == "cuda" else device


def _dist_env() -> tuple[int, int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def _init_distributed(device: str, world_size: int) -> None:
    import torch.distributed as dist

    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")


def _broadcast(obj: Any, world_size: int) -> Any:
    if world_size == 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


# --------------------------------------------------------------------------- checkpoints in the database


class _CheckpointWriter:
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
        # copy_context: the write lands in the caller's tenant (genloom.db.tenancy)
        self.thread = threading.Thread(target=contextvars.copy_context().run, args=(self._write, step, buf.getvalue()),
                                       name="genloom-checkpoint", daemon=True)
        self.thread.start()

    def _write(self, step: int, payload: bytes) -> None:
        try:
            _save_checkpoint(self.run_id, step, payload)
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


def _save_checkpoint(run_id: int, step: int, payload: bytes, keep: int = 2) -> None:
    from genloom.db.engine import session_scope
    from genloom.db.models import RunCheckpoint

    with session_scope() as s:
        s.execute(sa.delete(RunCheckpoint).where(RunCheckpoint.run_id == run_id, RunCheckpoint.step == step))
        s.add(RunCheckpoint(run_id=run_id, step=step, payload=payload,
                            sha256=hashlib.sha256(payload).hexdigest(), size_bytes=len(payload)))
        s.flush()
        # Only the newest few matter for resume; old ones would just bloat the table.
        old = s.scalars(
            sa.select(RunCheckpoint.step).where(RunCheckpoint.run_id == run_id)
            .order_by(RunCheckpoint.step.desc()).offset(keep)
        ).all()
        if old:
            s.execute(sa.delete(RunCheckpoint).where(RunCheckpoint.run_id == run_id, RunCheckpoint.step.in_(old)))


def _load_checkpoint(run_id: int, step: int) -> dict[str, Any]:
    import torch

    from genloom.db.engine import session_scope
    from genloom.db.models import RunCheckpoint

    with session_scope() as s:
        row = s.execute(
            sa.select(RunCheckpoint.payload, RunCheckpoint.sha256)
            .where(RunCheckpoint.run_id == run_id, RunCheckpoint.step == step)
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
        .where(Run.kind == "train", Run.status != "succeeded",
               Run.params["name"].astext == name, Run.params["arch"].astext == arch)
        .group_by(Run.id).order_by(Run.id.desc()).limit(1)
    ).first()
    if row is None:
        raise BadInput(
            f"nothing to resume for {name!r}: no interrupted {arch} run with a checkpoint (drop --resume to start afresh)"
        )
    run_id, status, host, pid, started_at, step = row
    if status == "running":
        if host != socket.gethostname():
            raise BadInput(f"run {run_id} of {name!r} is marked running on host {host}: resume it there, "
                           "or stop that process first")
        if pid is not None and process_alive(pid, started_at):
            raise BadInput(f"run {run_id} of {name!r} is still running (process {pid}): stop it before --resume")
    return int(run_id), int(step)


def reopen_for_resume(session, run_id: int, step: int) -> None:
    """Make RUN_ID this process's running run again, from checkpoint STEP.

    Metrics logged after the checkpoint (and any final ones) belong to the steps that are about
    to be redone: delete them, or the run would hold two values for each of those steps."""
    import os

    from genloom.db.models import Metric, Run

    session.execute(sa.delete(Metric).where(Metric.run_id == run_id,
                                            sa.or_(Metric.step > step, Metric.step.is_(None))))
    session.execute(sa.update(Run).where(Run.id == run_id).values(
        status="running", error=None, finished_at=None, pid=os.getpid(), started_at=sa.func.now()))


# --------------------------------------------------------------------------- the job


def _plan(arch_cls, opts: TrainOptions, info, world_size: int, hp) -> None:
    """Fill the defaults that depend on the architecture and the data (in place)."""
    opts.batch_size = opts.batch_size if opts.batch_size is not None else arch_cls.default_batch_size
    opts.lr = opts.lr if opts.lr is not None else arch_cls.default_lr_for(hp)
    if opts.lr <= 0:
        raise BadInput(f"--lr must be positive (got {opts.lr})")
    if opts.batch_size < 1:
        raise BadInput(f"--batch-size must be at least 1 (got {opts.batch_size})")
    if opts.steps is not None and opts.epochs is not None:
        raise BadInput("give --steps or --epochs, not both")
    if opts.steps is None:
        if opts.epochs is not None:
            if opts.epochs <= 0:
                raise BadInput(f"--epochs must be positive (got {opts.epochs})")
            per_epoch = max(1, info.split_counts.get("train", 0) // (opts.batch_size * world_size))
            opts.steps = max(1, math.ceil(opts.epochs * per_epoch))
        else:
            opts.steps = arch_cls.default_steps
    if opts.steps < 1:
        raise BadInput(f"--steps must be at least 1 (got {opts.steps})")
    if opts.warmup < 0:
        opts.warmup = min(500, opts.steps // 20)
    opts.checkpoint_every = opts.checkpoint_every or max(1, opts.steps // 10)
    opts.eval_every = opts.eval_every or max(1, opts.steps // 5)
    opts.log_every = opts.log_every or max(1, opts.steps // 100)


def prepare(arch_name: str, opts: TrainOptions):
    """Resolve the data and check every option; returns (arch class, DataInfo, Hyperparams). Writes nothing."""
    from genloom.datasets.versions import describe_version, resolve_version
    from genloom.db.engine import session_scope
    from genloom.training.architecture import get_architecture
    from genloom.training.options import fill_dataclass, split_set

    arch_cls = get_architecture(arch_name)
    arch_keys = split_set({k: str(v) for k, v in opts.hparams.items()}, opts)
    hp = fill_dataclass(arch_cls.Hyperparams, arch_keys, what=f"architecture {arch_name}")
    with session_scope() as s:
        version = resolve_version(s, opts.dataset)
        info = describe_version(s, version)
    if info.split_counts.get("train", 0) == 0:
        raise BadInput(f"the train split of {info.ref} is empty: nothing to train on")
    arch_cls.check_train_options(opts, info)
    return arch_cls, info, hp


def train(
    arch_name: str,
    opts: TrainOptions,
    *,
    progress: ProgressFn | None = None,
    callbacks: Iterable[Callable[[int, dict[str, float]], None]] = (),
) -> TrainResult:
    import torch

    from genloom.db.engine import session_scope
    from genloom.devices import resolve_device
    from genloom.refs import format_ref, parse_ref
    from genloom.registry import register_model
    from genloom.runs import finish_run, log_metrics, start_run
    from genloom.training.architecture import DataSource
    from genloom.training.schedules import make_scheduler

    rank, world_size, local_rank = _dist_env()
    arch_cls, info, hp = prepare(arch_name, opts)
    device = _indexed_device(resolve_device(opts.device), local_rank)
    if device.startswith("cuda"):
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    _init_distributed(device, world_size)
    if device == "cpu" and world_size > 1:
        # N processes on one machine: share the cores instead of oversubscribing them.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    _plan(arch_cls, opts, info, world_size, hp)
    if opts.name is None:
        opts.name = f"{arch_name}-{parse_ref(opts.dataset)[0]}"
    parse_ref(opts.name)  # a valid registry name

    # The run row: rank 0 creates (or reopens) it and tells the others.
    resume_from: int | None = None
    run_id: int | None = None
    if rank == 0:
        params = {**dataclasses.asdict(opts), "arch": arch_name, "dataset_version": info.ref,
                  "hparams": dataclasses.asdict(hp), "world_size": world_size}
        with session_scope() as s:
            if opts.resume:
                run_id, resume_from = find_resumable(s, arch_name, opts.name)
                reopen_for_resume(s, run_id, resume_from)
            else:
                run = start_run(s, "train", params=params, name=opts.name, input_version_id=info.version_id,
                                device=device if world_size == 1 else f"{device}×{world_size}")
                run_id = run.id
    run_id, resume_from = _broadcast((run_id, resume_from), world_size)

    started = time.perf_counter()
    step = 0
    stopped_early = False
    previous_sigterm = None
    cleanup: list = []  # closes the data stream (and its prefetch thread) however the run ends
    writer = _CheckpointWriter(run_id) if rank == 0 else None
    if writer is not None:
        writer.saved_step = resume_from
    try:
        if threading_main():
            previous_sigterm = signal.signal(signal.SIGTERM, raise_interrupt)  # SIGTERM stops like Ctrl-C
        torch.manual_seed(opts.seed)  # identical initial weights on every rank
        ctx = TrainContext(device=device, rank=rank, world_size=world_size, batch_size=opts.batch_size,
                           lr=opts.lr, total_steps=opts.steps, grad_clip=opts.grad_clip, seed=opts.seed,
                           compile=opts.compile)
        try:
            arch = arch_cls(ctx, info, opts, hp)
        except torch.OutOfMemoryError:
            raise _oom(opts.batch_size, device) from None
        schedulers = {
            key: make_scheduler(opt, opts.lr_schedule, total=opts.steps, warmup=opts.warmup, min_ratio=opts.min_lr_ratio)
            for key, opt in arch.optimizers().items()
        }
        source = DataSource(info, batch_size=opts.batch_size, seed=opts.seed, rank=rank, world_size=world_size)
        best = math.inf
        best_step = None
        best_state = None  # with keep_best: a CPU copy of the weights at the best evaluation
        bad_evals = 0
        if resume_from is not None:
            state = _load_checkpoint(run_id, resume_from)
            for key, module in arch.modules().items():
                module.load_state_dict(state["modules"][key])
            for key, opt in arch.optimizers().items():
                opt.load_state_dict(state["optimizers"][key])
            for key, sched in schedulers.items():
                sched.load_state_dict(state["schedulers"][key])
            arch.load_extra_state(state.get("extra", {}))
            step = state["step"]
            source.epoch = state.get("epoch", 0) + 1  # a fresh seeded order for the rest of the run
            best, bad_evals = state.get("best", math.inf), state.get("bad_evals", 0)
            best_step, best_state = state.get("best_step"), state.get("best_state")
            torch.set_rng_state(state["rng"])
        torch.manual_seed(opts.seed * 1000 + rank + step)  # per-rank noise from here on
        if world_size > 1:
            _sync_modules(arch.modules())

        batches = arch.train_batches(source)
        cleanup.append(getattr(batches, "close", None))
        sums: dict[str, float] = {}
        count = 0
        last_metrics: dict[str, float] = {}
        eval_metrics: dict[str, float] = {}
        bar = _TrainProgress(progress, arch_name, opts.steps, step) if (progress and rank == 0) else None
        tick = time.perf_counter()
        tick_step = step
        while step < opts.steps:
            batch = next(batches)
            for module in arch.modules().values():
                module.train()
            try:
                metrics = arch.train_step(batch, step)
            except torch.OutOfMemoryError:
                raise _oom(opts.batch_size, device) from None
            for sched in schedulers.values():
                sched.step()
            step += 1
            for key, value in metrics.items():
                # tensors stay on the device until the next log: no per-step host sync
                sums[key] = sums.get(key, 0.0) + (value.detach() if torch.is_tensor(value) else float(value))
            count += 1
            for cb in callbacks:
                cb(step, metrics)
            if step % opts.log_every == 0 or step == opts.steps:
                now = time.perf_counter()
                rate = (step - tick_step) / max(now - tick, 1e-9)
                last_metrics = {k: float(v) / count for k, v in sums.items()}
                last_metrics["lr"] = next(iter(schedulers.values())).get_last_lr()[0] if schedulers else opts.lr
                last_metrics["steps_per_s"] = rate
                if rank == 0:
                    with session_scope() as s:
                        log_metrics(s, run_id, last_metrics, step=step)
                sums, count = {}, 0
                tick, tick_step = now, step
                if opts.time_budget and _broadcast(now - started > opts.time_budget, world_size):
                    stopped_early = True  # the budget is spent: register what we have
            if bar:
                bar.update(step, last_metrics)  # the loss shown is the last logged mean
            if step % opts.eval_every == 0 and step < opts.steps:
                eval_metrics = _evaluate(arch, source, rank, world_size)
                if rank == 0:
                    with session_scope() as s:
                        log_metrics(s, run_id, eval_metrics, step=step)
                    value = eval_metrics.get(arch.monitor)
                    if value is not None and value < best - 1e-6:
                        best, bad_evals, best_step = value, 0, step
                        if opts.keep_best:
                            best_state = _snapshot(arch)
                    elif value is not None:
                        bad_evals += 1
                stop = bool(opts.patience) and bad_evals >= opts.patience
                if _broadcast(stop, world_size):
                    stopped_early = True
            if rank == 0 and (step % opts.checkpoint_every == 0 or stopped_early) and step < opts.steps:
                writer.save(step, {
                    "step": step, "epoch": source.epoch, "best": best, "bad_evals": bad_evals,
                    "best_step": best_step, "best_state": best_state,
                    "modules": {k: m.state_dict() for k, m in arch.modules().items()},
                    "optimizers": {k: o.state_dict() for k, o in arch.optimizers().items()},
                    "schedulers": {k: s_.state_dict() for k, s_ in schedulers.items()},
                    "extra": arch.extra_state(), "rng": torch.get_rng_state(),
                })
            if stopped_early:
                break

        if writer is not None:
            writer.wait()  # the last checkpoint lands before the model is registered
        final = _evaluate(arch, source, rank, world_size)
        kept_step = step
        worse_than_best = rank == 0 and best_state is not None and final.get(arch.monitor, math.inf) > best + 1e-6
        if _broadcast(worse_than_best, world_size):
            # --keep-best: the last weights evaluate worse than an earlier evaluation's; register those.
            if rank == 0:
                _restore(arch, best_state)
            final = _evaluate(arch, source, rank, world_size)
            kept_step = best_step
        seconds = time.perf_counter() - started
        result = None
        if rank == 0:
            blob, config = arch.export()
            config = {**config, "arch": arch_name, "label_names": info.label_names,
                      "conditional": bool(opts.conditional), "modality": info.modality,
                      "shape": list(info.shape) if info.shape else None}
            summary_metrics = {**{f"train_{k}" if not k.startswith(("train_", "lr", "steps_per_s")) else k: v
                                  for k, v in last_metrics.items()}, **final}
            if best < math.inf:
                summary_metrics[f"best_{arch.monitor}"] = min(best, final.get(arch.monitor, best))
            with session_scope() as s:
                # One transaction: the model, its final metrics and the succeeded run.
                model = register_model(s, name=opts.name, architecture=arch_name, checkpoint=blob, config=config,
                                       format=arch_cls.format, run_id=run_id, input_version_id=info.version_id,
                                       metadata={"dataset": info.ref, "steps": step, "kept_step": kept_step})
                log_metrics(s, run_id, final, step=None)
                finish_run(s, run_id, model_id=model.id, summary={
                    "steps": step, "seconds": round(seconds, 3), "model": format_ref(model.name, model.version),
                    "stopped_early": stopped_early, "kept_step": kept_step, "metrics": summary_metrics,
                })
                result = TrainResult(run_id=run_id, model=format_ref(model.name, model.version), model_id=model.id,
                                     metrics=summary_metrics, steps=step, seconds=seconds,
                                     resumed_from_step=resume_from, stopped_early=stopped_early, kept_step=kept_step)
        return _broadcast(result, world_size)
    except KeyboardInterrupt as exc:
        if rank == 0:
            _finish_writing(writer)  # the checkpoint in flight is what --resume continues from
            saved = writer.saved_step if writer is not None else None
            committed = {"checkpoint at step": saved} if saved else {}
            message = interruption_message(exc, f"train run {run_id}", committed)
            message += f"; continue with --resume (stopped at step {step})" if saved else "; no checkpoint to resume from"
            _mark(run_id, "interrupted", message)
            raise JobInterrupted(message) from None
        raise
    except BaseException as exc:
        if rank == 0:
            _finish_writing(writer)
            _mark(run_id, "failed", f"{type(exc).__name__}: {exc}"[:2000])
        raise
    finally:
        for close in cleanup:
            if close is not None:
                close()
        if previous_sigterm is not None:
            signal.signal(signal.SIGTERM, previous_sigterm)


def _finish_writing(writer: _CheckpointWriter | None) -> None:
    """Let a checkpoint write in flight land while a run is being abandoned (its error is moot then).

    Bounded: a run being stopped (Ctrl-C, SIGTERM from a scheduler) must exit even if the
    database never answers; the previous checkpoint then remains the one to resume from."""
    if writer is None:
        return
    try:
        writer.wait(timeout=30)
    except Exception:
        pass


def threading_main() -> bool:
    return threading.current_thread() is threading.main_thread()


def _oom(batch_size: int, device: str) -> BadInput:
    return BadInput(f"out of memory on {device} at batch size {batch_size}: try --batch-size {max(1, batch_size // 2)}")


def _mark(run_id: int, status: str, error: str) -> None:
    from genloom.db.engine import session_scope
    from genloom.runs import finish_run

    with session_scope() as s:
        finish_run(s, run_id, status=status, error=error)


def _sync_modules(modules: dict[str, Any]) -> None:
    import torch.distributed as dist

    for module in modules.values():
        for tensor in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(tensor.data, src=0)


def _evaluate(arch, source, rank: int, world_size: int) -> dict[str, float]:
    import torch

    metrics: dict[str, float] = {}
    if rank == 0:
        for module in arch.modules().values():
            module.eval()
        with torch.no_grad():
            metrics = {k: float(v) for k, v in arch.evaluate(source).items()}
        for module in arch.modules().values():
            module.train()
    return _broadcast(metrics, world_size)


class _TrainProgress:
    """Reports step, loss and steps/s to a progress callback (the CLI draws the bar)."""

    def __init__(self, progress: ProgressFn, arch: str, total: int, start: int):
        self.progress, self.task, self.total = progress, f"train {arch}", total
        self.start_step = start
        self.t0 = time.perf_counter()
        progress(self.task, start, total, "loss -")

    def update(self, step: int, metrics: dict[str, float]) -> None:
        loss = metrics.get("loss")
        rate = (step - self.start_step) / max(time.perf_counter() - self.t0, 1e-9)
        self.progress(self.task, step, self.total, f"loss {loss:.4g} · {rate:.1f} steps/s" if loss is not None
                      else f"loss - · {rate:.1f} steps/s")
