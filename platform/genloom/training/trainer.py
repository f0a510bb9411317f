"""The training framework's loop: one `runs` row from start to registered model, for every architecture.

    result = genloom.jobs.train.train("vae", TrainOptions(dataset="digits", steps=200))

(the job resolves the architecture and the data, then runs `Trainer(...).run()`).

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

`Trainer` holds one job's state; its methods are the steps above (`resume`, `step`,
`evaluate`, `checkpoint`, `register`), and `run` is the loop that calls them. The network
context and distributed helpers are context.py; checkpoint storage is checkpoints.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Iterable
from typing import Any

from genloom.errors import BadInput
from genloom.progress import ProgressFn
from genloom.runs import stop_on_sigterm
from genloom.training.checkpoints import (
    CheckpointWriter,
    find_resumable,
    finish_writing,
    load_checkpoint,
    restore,
    snapshot,
)
from genloom.training.context import TrainContext, broadcast, dist_env, indexed_device, init_distributed, sync_modules
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


# --------------------------------------------------------------------------- the job


def _plan(arch_cls, opts: TrainOptions, info, world_size: int, hp) -> tuple[int, float, int]:
    """Fill the defaults that depend on the architecture and the data (in place); return the
    planned (batch size, learning rate, steps), which are never None from here on."""
    batch_size: int = opts.batch_size if opts.batch_size is not None else arch_cls.default_batch_size
    lr: float = opts.lr if opts.lr is not None else arch_cls.default_lr_for(hp)
    opts.batch_size, opts.lr = batch_size, lr
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
    steps: int = opts.steps
    if steps < 1:
        raise BadInput(f"--steps must be at least 1 (got {steps})")
    if opts.warmup < 0:
        opts.warmup = min(500, steps // 20)
    opts.checkpoint_every = opts.checkpoint_every or max(1, steps // 10)
    opts.eval_every = opts.eval_every or max(1, steps // 5)
    opts.log_every = opts.log_every or max(1, steps // 100)
    return batch_size, lr, steps


class Trainer:
    """One training job: `Trainer(arch_cls, info, hp, opts).run()` (what genloom.jobs.train.train does)."""

    def __init__(
        self,
        arch_cls,
        info,
        hp,
        opts: TrainOptions,
        *,
        progress: ProgressFn | None = None,
        callbacks: Iterable[Callable[[int, dict[str, float]], None]] = (),
    ):
        import torch

        from genloom.devices import resolve_device
        from genloom.refs import parse_ref

        self.torch = torch
        arch_name = arch_cls.name
        self.arch_name, self.opts = arch_name, opts
        self.callbacks = list(callbacks)
        self.rank, self.world_size, local_rank = dist_env()
        # What genloom.jobs.train.prepare resolved: the architecture, its data (DataInfo) and hyperparameters.
        self.arch_cls, self.info, self.hp = arch_cls, info, hp
        self.device = indexed_device(resolve_device(opts.device), local_rank)
        if self.device.startswith("cuda"):
            torch.cuda.set_device(self.device)
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        init_distributed(self.device, self.world_size)
        if self.device == "cpu":
            from genloom.devices import configure_cpu_threads

            threads = configure_cpu_threads()  # the CPUs genloom may use, less those others keep busy
            if self.world_size > 1:
                # N processes on one machine: share the threads instead of oversubscribing the cores.
                torch.set_num_threads(max(1, threads // self.world_size))
        # The planned values, typed: opts holds the same (its fields are Optional until planned).
        self.batch_size, self.lr, self.steps = _plan(self.arch_cls, opts, self.info, self.world_size, self.hp)
        if opts.name is None:
            opts.name = f"{arch_name}-{parse_ref(opts.dataset)[0]}"
        self.name: str = opts.name
        parse_ref(self.name)  # a valid registry name
        self.progress = progress if self.rank == 0 else None
        self.bar: _TrainProgress | None = None
        # Loop state (what a checkpoint saves and resume restores).
        self.step_no = 0
        self.best, self.bad_evals = math.inf, 0
        self.best_step: int | None = None
        self.best_state: dict | None = None  # with keep_best: a CPU copy of the weights at the best evaluation
        self.stopped_early = False
        self.last_metrics: dict[str, float] = {}
        self.run_id: int | None = None
        self.resumed_from: int | None = None
        self.writer: CheckpointWriter | None = None
        self.started = time.perf_counter()

    def _run_id(self) -> int:
        """The run's id, which rank 0 (the only rank that writes) has once the run is tracked."""
        if self.run_id is None:
            raise RuntimeError("no run: only rank 0 writes to the database, once the run is tracked")
        return self.run_id

    # ----------------------------------------------------------------------- the whole job

    def run(self) -> TrainResult:
        """Start (or, with opts.resume, reopen) the run, train, register; rank 0 records it all."""
        resume_from = None
        if self.rank == 0 and self.opts.resume:
            from genloom.db.engine import session_scope

            with session_scope() as s:
                self.run_id, resume_from = find_resumable(s, self.arch_name, self.name)
        with self._tracked(resume_from) as run:
            self.run_id, self.resumed_from = broadcast((run.id if run else None, resume_from), self.world_size)
            self.started = time.perf_counter()
            # SIGTERM stops like Ctrl-C, and the run's error names it (genloom.runs.stop_on_sigterm).
            with stop_on_sigterm():
                self.writer = CheckpointWriter(self.run_id) if self.rank == 0 else None
                if self.writer is not None:
                    self.writer.saved_step = self.resumed_from
                try:
                    self.build()
                    if self.resumed_from is not None:
                        self.resume(self.resumed_from)
                    self._train()
                    final, kept_step = self.final_evaluation()
                    return broadcast(self.register(run, final, kept_step) if run is not None else None, self.world_size)
                except BaseException as exc:
                    finish_writing(self.writer)  # the checkpoint in flight is what --resume continues from
                    if run is not None and isinstance(exc, KeyboardInterrupt):
                        saved = self.writer.saved_step if self.writer is not None else None
                        run.committed = lambda: {"checkpoint at step": saved} if saved else {}
                        run.resume_hint = (
                            f"continue with --resume (stopped at step {self.step_no})"
                            if saved
                            else "no checkpoint to resume from"
                        )
                    raise

    def _tracked(self, resume_from: int | None):
        """Rank 0: the run row (new, or the interrupted one reopened at its checkpoint). Other ranks: nothing."""
        from genloom.runs import tracked_run

        if self.rank != 0:
            return contextlib.nullcontext(None)
        if self.opts.resume:
            return tracked_run("train", reopen=self.run_id, reopen_from_step=resume_from)
        params = {
            **dataclasses.asdict(self.opts),
            "arch": self.arch_name,
            "dataset_version": self.info.ref,
            "hparams": dataclasses.asdict(self.hp),
            "world_size": self.world_size,
        }
        return tracked_run(
            "train",
            params=params,
            name=self.name,
            input_version_id=self.info.version_id,
            device=self.device if self.world_size == 1 else f"{self.device}×{self.world_size}",
        )

    def build(self) -> None:
        """The architecture (networks, optimisers), LR schedules and the data source, seeded alike on every rank."""
        from genloom.datasets.source import DataSource
        from genloom.training.schedules import make_scheduler

        torch, opts = self.torch, self.opts
        torch.manual_seed(opts.seed)  # identical initial weights on every rank
        ctx = TrainContext(
            device=self.device,
            rank=self.rank,
            world_size=self.world_size,
            batch_size=self.batch_size,
            lr=self.lr,
            total_steps=self.steps,
            grad_clip=opts.grad_clip,
            seed=opts.seed,
            compile=opts.compile,
        )
        try:
            self.arch = self.arch_cls(ctx, self.info, opts, self.hp)
        except torch.OutOfMemoryError:
            raise _oom(self.batch_size, self.device) from None
        self.schedulers = {
            key: make_scheduler(
                opt, opts.lr_schedule, total=self.steps, warmup=opts.warmup, min_ratio=opts.min_lr_ratio
            )
            for key, opt in self.arch.optimizers().items()
        }
        self.source = DataSource(
            self.info, batch_size=self.batch_size, seed=opts.seed, rank=self.rank, world_size=self.world_size
        )

    def resume(self, from_step: int) -> None:
        """Load the checkpoint at `from_step`: weights, optimisers, schedules, extra state, RNG, early-stopping state."""
        state = load_checkpoint(self._run_id(), from_step)
        arch = self.arch
        for key, module in arch.modules().items():
            module.load_state_dict(state["modules"][key])
        for key, opt in arch.optimizers().items():
            opt.load_state_dict(state["optimizers"][key])
        for key, sched in self.schedulers.items():
            sched.load_state_dict(state["schedulers"][key])
        arch.load_extra_state(state.get("extra", {}))
        self.step_no = state["step"]
        self.source.epoch = state.get("epoch", 0) + 1  # a fresh seeded order for the rest of the run
        self.best, self.bad_evals = state.get("best", math.inf), state.get("bad_evals", 0)
        self.best_step, self.best_state = state.get("best_step"), state.get("best_state")
        self.torch.set_rng_state(state["rng"])

    # ----------------------------------------------------------------------- the loop

    def _train(self) -> None:
        torch, opts = self.torch, self.opts
        torch.manual_seed(opts.seed * 1000 + self.rank + self.step_no)  # per-rank noise from here on
        if self.world_size > 1:
            sync_modules(self.arch.modules())
        if self.progress:
            self.bar = _TrainProgress(self.progress, self.arch_name, self.steps, self.step_no)
        batches = self.arch.train_batches(self.source)
        started = self.started
        sums: dict[str, Any] = {}
        count = 0
        tick, tick_step = time.perf_counter(), self.step_no
        try:
            while self.step_no < self.steps:
                metrics = self.step(next(batches))
                for key, value in metrics.items():
                    # tensors stay on the device until the next log: no per-step host sync
                    sums[key] = sums.get(key, 0.0) + (value.detach() if torch.is_tensor(value) else float(value))
                count += 1
                for cb in self.callbacks:
                    cb(self.step_no, metrics)
                step = self.step_no
                if step % opts.log_every == 0 or step == self.steps:
                    now = time.perf_counter()
                    self.log(
                        {k: float(v) / count for k, v in sums.items()}, rate=(step - tick_step) / max(now - tick, 1e-9)
                    )
                    sums, count = {}, 0
                    tick, tick_step = now, step
                    if opts.time_budget and broadcast(now - started > opts.time_budget, self.world_size):
                        self.stopped_early = True  # the budget is spent: register what we have
                if self.bar:
                    self.bar.update(step, self.last_metrics)  # the loss shown is the last logged mean
                if step % opts.eval_every == 0 and step < self.steps:
                    self.evaluate_and_track()
                if self.rank == 0 and (step % opts.checkpoint_every == 0 or self.stopped_early) and step < self.steps:
                    self.checkpoint()
                if self.stopped_early:
                    break
        finally:
            close = getattr(batches, "close", None)  # the data stream and its prefetch thread
            if close is not None:
                close()
        if self.writer is not None:
            self.writer.wait()  # the last checkpoint lands before the model is registered

    def step(self, batch) -> dict[str, Any]:
        """One optimisation step of the architecture on `batch`, then the LR schedules."""
        for module in self.arch.modules().values():
            module.train()
        try:
            metrics = self.arch.train_step(batch, self.step_no)
        except self.torch.OutOfMemoryError:
            raise _oom(self.batch_size, self.device) from None
        for sched in self.schedulers.values():
            sched.step()
        self.step_no += 1
        return metrics

    def log(self, means: dict[str, float], *, rate: float) -> None:
        """Write the averaged training metrics (and LR, steps/s) at the current step."""
        from genloom.db.engine import session_scope
        from genloom.runs import log_metrics

        means["lr"] = next(iter(self.schedulers.values())).get_last_lr()[0] if self.schedulers else self.lr
        means["steps_per_s"] = rate
        self.last_metrics = means
        if self.rank == 0:
            with session_scope() as s:
                log_metrics(s, self._run_id(), means, step=self.step_no)

    def evaluate(self) -> dict[str, float]:
        """The architecture's validation metrics (rank 0 computes, every rank gets them)."""
        torch = self.torch
        metrics: dict[str, float] = {}
        if self.rank == 0:
            for module in self.arch.modules().values():
                module.eval()
            with torch.no_grad():
                metrics = {k: float(v) for k, v in self.arch.evaluate(self.source).items()}
            for module in self.arch.modules().values():
                module.train()
        return broadcast(metrics, self.world_size)

    def evaluate_and_track(self) -> None:
        """A validation pass during training: log it, keep the best, stop early after `patience` bad ones."""
        from genloom.db.engine import session_scope
        from genloom.runs import log_metrics

        metrics = self.evaluate()
        if self.rank == 0:
            with session_scope() as s:
                log_metrics(s, self._run_id(), metrics, step=self.step_no)
            value = metrics.get(self.arch.monitor)
            if value is not None and value < self.best - 1e-6:
                self.best, self.bad_evals, self.best_step = value, 0, self.step_no
                if self.opts.keep_best:
                    self.best_state = snapshot(self.arch)
            elif value is not None:
                self.bad_evals += 1
        stop = bool(self.opts.patience) and self.bad_evals >= self.opts.patience
        if broadcast(stop, self.world_size):
            self.stopped_early = True

    def checkpoint(self) -> None:
        """Save everything `resume` needs (serialised now; written to the database in the background)."""
        arch = self.arch
        if self.writer is None:  # only rank 0 has a writer, and only rank 0 checkpoints
            raise RuntimeError("checkpoint() on a rank without a checkpoint writer")
        self.writer.save(
            self.step_no,
            {
                "step": self.step_no,
                "epoch": self.source.epoch,
                "best": self.best,
                "bad_evals": self.bad_evals,
                "best_step": self.best_step,
                "best_state": self.best_state,
                "modules": {k: m.state_dict() for k, m in arch.modules().items()},
                "optimizers": {k: o.state_dict() for k, o in arch.optimizers().items()},
                "schedulers": {k: s_.state_dict() for k, s_ in self.schedulers.items()},
                "extra": arch.extra_state(),
                "rng": self.torch.get_rng_state(),
            },
        )

    # ----------------------------------------------------------------------- the end

    def final_evaluation(self) -> tuple[dict[str, float], int | None]:
        """The final metrics and the step whose weights they are: with --keep-best, an earlier
        evaluation's weights when the last ones evaluate worse. Every rank takes part."""
        final = self.evaluate()
        worse_than_best = (
            self.rank == 0 and self.best_state is not None and final.get(self.arch.monitor, math.inf) > self.best + 1e-6
        )
        if not broadcast(worse_than_best, self.world_size):
            return final, self.step_no
        if self.rank == 0 and self.best_state is not None:  # rank 0 decided worse_than_best with it set
            restore(self.arch, self.best_state)
        return self.evaluate(), self.best_step

    def register(self, run, final: dict[str, float], kept_step: int | None) -> TrainResult:
        """The model, its final metrics and the succeeded run in ONE transaction. Rank 0 only."""
        from genloom.db.engine import session_scope
        from genloom.refs import format_ref
        from genloom.registry import register_model
        from genloom.runs import log_metrics

        arch, opts, info = self.arch, self.opts, self.info
        seconds = time.perf_counter() - self.started
        blob, config = arch.export()
        config = {
            **config,
            "arch": self.arch_name,
            "label_names": info.label_names,
            "conditional": bool(opts.conditional),
            "modality": info.modality,
            "shape": list(info.shape) if info.shape else None,
        }
        summary_metrics = {
            **{
                f"train_{k}" if not k.startswith(("train_", "lr", "steps_per_s")) else k: v
                for k, v in self.last_metrics.items()
            },
            **final,
        }
        if self.best < math.inf:
            summary_metrics[f"best_{arch.monitor}"] = min(self.best, final.get(arch.monitor, self.best))
        with session_scope() as s:
            model = register_model(
                s,
                name=self.name,
                architecture=self.arch_name,
                checkpoint=blob,
                config=config,
                format=self.arch_cls.format,
                run_id=run.id,
                input_version_id=info.version_id,
                metadata={"dataset": info.ref, "steps": self.step_no, "kept_step": kept_step},
            )
            log_metrics(s, run.id, final, step=None)
            run.finish(
                session=s,
                model_id=model.id,
                summary={
                    "steps": self.step_no,
                    "seconds": round(seconds, 3),
                    "model": format_ref(model.name, model.version),
                    "stopped_early": self.stopped_early,
                    "kept_step": kept_step,
                    "metrics": summary_metrics,
                },
            )
        return TrainResult(
            run_id=run.id,
            model=format_ref(model.name, model.version),
            model_id=model.id,
            metrics=summary_metrics,
            steps=self.step_no,
            seconds=seconds,
            resumed_from_step=self.resumed_from,
            stopped_early=self.stopped_early,
            kept_step=kept_step,
        )


def _oom(batch_size: int, device: str) -> BadInput:
    return BadInput(f"out of memory on {device} at batch size {batch_size}: try --batch-size {max(1, batch_size // 2)}")


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
        self.progress(
            self.task,
            step,
            self.total,
            f"loss {loss:.4g} · {rate:.1f} steps/s" if loss is not None else f"loss - · {rate:.1f} steps/s",
        )
