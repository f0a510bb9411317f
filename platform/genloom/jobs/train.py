"""The train job: `train(name, opts)` resolves the architecture and the data, then runs the framework.

    result = train("vae", TrainOptions(dataset="digits", steps=200))

The loop itself (runs row, checkpoints, evaluation, registering the model) is the framework's
`Trainer` (genloom.training.trainer); this module is what sits above both it and the networks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from genloom.errors import BadInput
from genloom.progress import ProgressFn
from genloom.training.options import TrainOptions
from genloom.training.trainer import Trainer, TrainResult

__all__ = ["TrainResult", "prepare", "train"]


def prepare(arch_name: str, opts: TrainOptions):
    """Resolve the data and check every option; returns (arch class, DataInfo, Hyperparams). Writes nothing."""
    from genloom.datasets.versions import describe_version, resolve_version
    from genloom.db.engine import session_scope
    from genloom.jobs.registry import get_architecture
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
    """Train `arch_name` on `opts.dataset` and register the model (see genloom.training.trainer)."""
    arch_cls, info, hp = prepare(arch_name, opts)
    return Trainer(arch_cls, info, hp, opts, progress=progress, callbacks=callbacks).run()
