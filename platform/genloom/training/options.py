"""Typed options: what `genloom train` and `genloom sample` pass to the framework and architectures.

`--set KEY=VALUE` fills two dataclasses: framework keys (`FRAMEWORK_KEYS`, e.g. warmup,
grad_clip, patience) go into `TrainOptions`; every other key must be a field of the
architecture's own `Hyperparams` dataclass and is converted to that field's type.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from genloom.errors import BadInput
from genloom.pairs import parse_pairs
from genloom.progress import ProgressFn


@dataclasses.dataclass
class TrainOptions:
    """Options common to every architecture (the `genloom train` flags)."""

    dataset: str  # NAME[@V]
    steps: int | None = None  # total optimisation steps; None: from epochs or the architecture default
    epochs: float | None = None  # alternative to steps: passes over the train split
    batch_size: int | None = None  # None: the architecture's default
    lr: float | None = None  # None: the architecture's default
    conditional: bool = False  # class-conditional on the item labels
    text_conditional: bool = False  # conditioned on a text embedding (caption) of each item
    autoencoder: str | None = None  # latent diffusion: the registered VAE / VAE-GAN (NAME@V) whose latents it models
    init: str | None = None  # start from a registered model or a local Hugging Face directory
    seed: int = 0
    checkpoint_every: int = 0  # steps between resumable checkpoints; 0: about 10 per run
    eval_every: int = 0  # steps between validation passes; 0: about 5 per run
    compile: bool = False  # torch.compile the networks
    name: str | None = None  # registry name; default ARCH-DATASET
    device: str = "auto"
    resume: bool = False
    # Framework keys settable with --set (they apply to every architecture).
    warmup: int = -1  # LR warmup steps; -1: 5 % of the run (at most 500)
    lr_schedule: str = "cosine"  # cosine | constant
    min_lr_ratio: float = 0.1  # cosine decays to lr × this
    grad_clip: float = 1.0  # max global grad norm; 0 disables
    patience: int = 0  # early stopping: evaluations without improvement before stopping; 0: off
    log_every: int = 0  # steps between metric rows; 0: about 100 per run
    time_budget: float = 0  # seconds of training after which the run stops and registers; 0: none
    keep_best: bool = False  # register the weights of the best evaluation of the monitor, not the last
    hparams: dict[str, Any] = dataclasses.field(default_factory=dict)  # the architecture's --set keys


FRAMEWORK_KEYS = (
    "warmup",
    "lr_schedule",
    "min_lr_ratio",
    "grad_clip",
    "patience",
    "log_every",
    "time_budget",
    "keep_best",
)


@dataclasses.dataclass
class SampleOptions:
    """Options of `genloom sample`; an architecture lists the ones it accepts in `sample_options`."""

    n: int = 16
    label: str | None = None  # class label for conditional models
    seed: int = 0
    interpolate: tuple[int, int] | None = None  # two item ids: latent interpolation (VAE)
    steps: int | None = None  # interpolation steps (VAE) or sampler steps (diffusion)
    sampler: str | None = None  # ddpm | ddim
    eta: float | None = None  # DDIM η
    guidance: float | None = None  # classifier-free guidance weight w
    prompt: str | None = None  # text prompt (text-conditioned diffusion, transformer, CLIP guidance)
    guide: str | None = None  # clip:NAME[@V]: steer diffusion sampling with a CLIP model's gradient
    guide_scale: float | None = None  # strength of --guide (0: exactly unguided)
    max_new_tokens: int | None = None
    temperature: float | None = None
    top_k: int | None = None
    device: str = "auto"
    # Long samplers (DDPM's 1,000 steps) report here; the caller draws it. Not a run parameter.
    progress: ProgressFn | None = dataclasses.field(default=None, repr=False, compare=False)
    # The --guide model, loaded by the sample job (genloom.jobs.sample). Not a run parameter.
    guide_model: Any = dataclasses.field(default=None, repr=False, compare=False)

    def params(self) -> dict[str, Any]:
        """The options as a run's parameters (JSON): the ones set, without the progress callback."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in ("progress", "guide_model") and getattr(self, f.name) is not None
        }

    def given(self) -> set[str]:
        """Names of the optional options the user actually set (n, seed, device always apply)."""
        return {
            f.name
            for f in dataclasses.fields(self)
            if f.name not in ("n", "seed", "device", "progress", "guide_model") and getattr(self, f.name) is not None
        }


# Flag spelling of each SampleOptions field, for error messages.
SAMPLE_FLAGS = {
    "label": "--label",
    "interpolate": "--interpolate",
    "steps": "--steps",
    "sampler": "--sampler",
    "eta": "--eta",
    "guidance": "--guidance",
    "prompt": "--prompt",
    "guide": "--guide",
    "guide_scale": "--guide-scale",
    "max_new_tokens": "--max-new-tokens",
    "temperature": "--temperature",
    "top_k": "--top-k",
}


def parse_set(pairs: list[str]) -> dict[str, str]:
    """['loss=wgan-gp', 'n_layer=4'] → {'loss': 'wgan-gp', 'n_layer': '4'} (values still strings)."""
    return {key.replace("-", "_"): value.strip() for key, value in parse_pairs(pairs, "--set").items()}


def convert(value: str, annotation: Any, key: str) -> Any:
    """A --set string converted to a dataclass field's type (bool, int, float, str, Optional[...])."""
    if isinstance(annotation, str):
        annotation = {"int": int, "float": float, "bool": bool, "str": str}.get(
            annotation.replace(" | None", "").replace("Optional[", "").rstrip("]"), str
        )
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value.lower() in ("none", "null", ""):
            return None
        annotation = args[0] if args else str
    try:
        if annotation is bool:
            low = value.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if annotation is int:
            return int(value)
        if annotation is float:
            return float(value)
    except ValueError:
        name = getattr(annotation, "__name__", str(annotation))
        raise BadInput(f"--set {key}={value}: expected {name}") from None
    return value


def fill_dataclass(cls: type, values: dict[str, str], *, what: str) -> Any:
    """Build dataclass `cls` from --set strings; unknown keys are a one-line error listing the known ones."""
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        known = ", ".join(sorted(fields | set(FRAMEWORK_KEYS))) or "none"
        raise BadInput(f"unknown --set key {unknown[0]!r} for {what} (known: {known})")
    return cls(**{k: convert(v, hints[k], k) for k, v in values.items()})


def split_set(values: dict[str, str], options: TrainOptions) -> dict[str, str]:
    """Apply framework keys to `options` in place; return the architecture's keys."""
    hints = typing.get_type_hints(TrainOptions)
    rest = {}
    for key, value in values.items():
        if key in FRAMEWORK_KEYS:
            setattr(options, key, convert(value, hints[key], key))
        else:
            rest[key] = value
    return rest
