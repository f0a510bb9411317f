"""The architectures genloom trains, by name: an explicit table, so the import graph shows every edge.

Each entry imports its module when asked for (`genloom --help` never loads torch). A new
architecture is one module under genloom/architectures/ and one line here.
"""

from __future__ import annotations

from collections.abc import Callable

from genloom.errors import BadInput
from genloom.training.architecture import Architecture


def _vae() -> type[Architecture]:
    from genloom.architectures.vae import VAE

    return VAE


def _gan() -> type[Architecture]:
    from genloom.architectures.gan import GAN

    return GAN


def _diffusion() -> type[Architecture]:
    from genloom.architectures.diffusion import DiffusionArchitecture

    return DiffusionArchitecture


def _transformer() -> type[Architecture]:
    from genloom.architectures.transformer import Transformer

    return Transformer


def _vae_gan() -> type[Architecture]:
    from genloom.architectures.vae_gan import VAEGAN

    return VAEGAN


def _latent_diffusion() -> type[Architecture]:
    from genloom.architectures.latent_diffusion import LatentDiffusion

    return LatentDiffusion


def _clip() -> type[Architecture]:
    from genloom.architectures.clip import CLIP

    return CLIP


ARCHITECTURES: dict[str, Callable[[], type[Architecture]]] = {
    "vae": _vae,
    "gan": _gan,
    "diffusion": _diffusion,
    "transformer": _transformer,
    "vae-gan": _vae_gan,  # the hybrids (docs/training.md)
    "latent-diffusion": _latent_diffusion,
    "clip": _clip,
}


def get_architecture(name: str) -> type[Architecture]:
    load = ARCHITECTURES.get(name)
    if load is None:
        raise BadInput(f"unknown architecture {name!r}: choose one of {', '.join(ARCHITECTURES)}")
    return load()
