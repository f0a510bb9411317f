"""The architecture interface (the plug-in contract every network implements).

An architecture is a class in its own module under `genloom/architectures/`, listed in the
table of genloom.jobs.registry. The data it trains on arrives as a `DataSource`
(genloom.datasets.source). The framework (`training/trainer.py`) owns everything
that is the same for every network: the `runs` row, seeding, device choice, streaming
the dataset version from Postgres, LR warmup + cosine, gradient clipping and DDP gradient
sync (through `ctx.backward_step`), bf16 autocast on GPU (`ctx.autocast()`), the Rich
progress bar, metrics rows, resumable checkpoints, early stopping and registering the
final model in the same transaction that marks the run succeeded. The architecture owns
its networks, optimisers, loss, evaluation, save format and sampling.

Class attributes (read before anything is built, so bad input fails fast):

    name: str                      registry name ('vae')
    modalities: tuple[str, ...]    dataset modalities it trains on: ('image',) or ('text',)
    format: str                    registry checkpoint format: 'torch' or 'hf-tar' (a tar of save_pretrained)
    Hyperparams: type              a dataclass of its --set keys (loss=wgan-gp, n_layer=4, ...), typed
    train_options: frozenset[str]  optional TrainOptions it supports: 'conditional', 'text_conditional',
                                   'init', 'compile', 'autoencoder' (others are rejected with a one-line error)
    sample_options: frozenset[str] SampleOptions fields it accepts: 'label', 'interpolate', 'steps',
                                   'sampler', 'eta', 'guidance', 'prompt', 'guide', 'guide_scale',
                                   'max_new_tokens', 'temperature', 'top_k'
    monitor: str                   validation metric for early stopping / reporting (lower is better)
    default_steps, default_batch_size, default_lr (or classmethod default_lr_for(hp))

Training (one instance per job; `ctx` is a `TrainContext` from the framework):

    __init__(ctx, data: DataInfo, opts: TrainOptions, hp: Hyperparams)
        build networks and optimisers on ctx.device. Raise BadInput for unsupported data
        (e.g. a text dataset given to an image architecture is already refused by `modalities`).
        Wrap a network in `ctx.ddp(module)` to use torch DDP; otherwise `ctx.backward_step`
        all-reduces gradients itself (the GAN does this: WGAN-GP's double backward and two
        optimisers do not fit DDP's one-forward-one-backward rule).
    modules() -> dict[str, nn.Module]         everything whose weights go into checkpoints
    optimizers() -> dict[str, Optimizer]      the framework attaches an LR schedule to each
    train_batches(source: DataSource) -> Iterator
        default: endless shuffled `Batch`es of the train split at ctx.batch_size (a new seeded
        order each epoch, sharded per DDP rank). Override for own batching (the transformer
        tokenises the split once and draws random windows).
    train_step(batch, step) -> dict[str, float | Tensor]
        one optimisation step (or several: the GAN's critic steps), via ctx.backward_step(loss,
        optimizer); return metrics to log, including 'loss'. Return detached 0-dim tensors
        rather than floats: the trainer averages them on the device and reads them only when it
        logs, so the GPU never waits for the CPU between steps.
    evaluate(source: DataSource) -> dict[str, float]
        validation metrics (includes `monitor`), run on rank 0 under torch.no_grad.
    extra_state() -> dict / load_extra_state(state)
        anything else a resume needs (EMA weights, a tokenizer, counters).
    export() -> tuple[bytes, dict]
        the final model: checkpoint bytes in `format`, and a JSON config that `load` needs.

Inference (`load` returns an object with the methods below; often the same class):

    load(checkpoint: bytes, config: dict, device: str) -> object       (classmethod)
    sample(opts: SampleOptions) -> Samples
        images N×C×H×W float in [0, 1] (+ labels when conditional), or texts; deterministic
        for a given opts.seed.
    score(batch) -> Tensor[N]            optional: per-item anomaly score (higher = more unusual)
    interpolate(x_a, x_b, steps) -> Tensor  optional: images between two items
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any, ClassVar

from genloom.datasets.source import DataSource
from genloom.errors import BadInput
from genloom.training.options import SampleOptions, TrainOptions

__all__ = ["Architecture", "DataSource", "NoHyperparams", "Samples"]


@dataclasses.dataclass
class NoHyperparams:
    """For architectures without --set keys of their own."""


@dataclasses.dataclass
class Samples:
    """What `sample` returns: images (N×C×H×W in [0, 1]) or texts, with per-sample labels."""

    images: Any = None  # torch.Tensor | None
    texts: list[str] | None = None
    labels: list[str | None] | None = None  # class label of each sample (conditional models)
    metadata: list[dict[str, Any]] | None = None  # per-sample extras stored on items (prompt, ...)

    def __len__(self) -> int:
        return len(self.texts) if self.texts is not None else int(self.images.shape[0])


class Architecture:
    """Base class with the defaults; see the module docstring for the contract."""

    name: ClassVar[str] = ""
    modalities: ClassVar[tuple[str, ...]] = ("image",)
    format: ClassVar[str] = "torch"
    Hyperparams: ClassVar[type] = NoHyperparams
    train_options: ClassVar[frozenset[str]] = frozenset()
    sample_options: ClassVar[frozenset[str]] = frozenset()
    monitor: ClassVar[str] = "val_loss"
    default_steps: ClassVar[int] = 1000
    default_batch_size: ClassVar[int] = 64
    default_lr: ClassVar[float] = 1e-3

    # ---- training
    def __init__(self, ctx, data, opts: TrainOptions, hp) -> None:
        self.ctx, self.data, self.opts, self.hp = ctx, data, opts, hp

    def modules(self) -> dict[str, Any]:
        raise NotImplementedError

    def optimizers(self) -> dict[str, Any]:
        raise NotImplementedError

    def train_batches(self, source: DataSource) -> Iterator:
        return source.train_stream()

    def train_step(self, batch, step: int) -> dict[str, float]:
        raise NotImplementedError

    def evaluate(self, source: DataSource) -> dict[str, float]:
        return {}

    def extra_state(self) -> dict[str, Any]:
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    def export(self) -> tuple[bytes, dict[str, Any]]:
        raise NotImplementedError

    # ---- inference
    @classmethod
    def load(cls, checkpoint: bytes, config: dict[str, Any], device: str):
        raise NotImplementedError

    def sample(self, opts: SampleOptions) -> Samples:
        raise NotImplementedError

    # Optional: score(batch) -> Tensor[N]; interpolate(x_a, x_b, steps) -> Tensor.

    @classmethod
    def default_lr_for(cls, hp) -> float:
        """The LR when --lr is not given (may depend on hyperparameters, e.g. the GAN's loss)."""
        return cls.default_lr

    # ---- checks the framework runs before building anything
    @classmethod
    def check_train_options(cls, opts: TrainOptions, data) -> None:
        if data.modality not in cls.modalities:
            raise BadInput(
                f"{cls.name} trains on {' or '.join(cls.modalities)} datasets, but {data.ref} holds {data.modality} items"
            )
        for flag, field in (
            ("--conditional", "conditional"),
            ("--text-conditional", "text_conditional"),
            ("--init", "init"),
            ("--compile", "compile"),
            ("--autoencoder", "autoencoder"),
        ):
            if getattr(opts, field) and field not in cls.train_options:
                raise BadInput(f"{cls.name} does not support {flag}")
        if opts.conditional and not data.label_names:
            raise BadInput(f"--conditional needs labelled items, but {data.ref} has no labels")

    @classmethod
    def check_sample_options(cls, opts: SampleOptions, config: dict[str, Any]) -> None:
        from genloom.training.options import SAMPLE_FLAGS

        for field in sorted(opts.given() - set(cls.sample_options)):
            raise BadInput(f"{cls.name} models do not support {SAMPLE_FLAGS.get(field, field)}")
        if opts.n < 1:
            raise BadInput(f"--n must be at least 1 (got {opts.n})")
        if opts.label is not None and not config.get("conditional"):
            raise BadInput("--label needs a class-conditional model (train it with --conditional)")
        if opts.label is not None and opts.label not in config.get("label_names", []):
            raise BadInput(f"unknown label {opts.label!r}: the model knows {', '.join(config.get('label_names', []))}")
