"""Beta schedules for diffusion, as pure functions of the number of steps T.

Each returns a float64 tensor of shape (T,): β_1 … β_T. Kept apart from the networks and
the schedulers so a schedule can be swapped (or checked against its closed form) alone.
"""

from __future__ import annotations

import math

import torch

DEFAULT_TIMESTEPS = 1000  # T in Ho et al. (2020) and Nichol & Dhariwal (2021)
SCHEDULES = ("linear", "cosine")


def linear_beta_schedule(
    timesteps: int = DEFAULT_TIMESTEPS, beta_start: float = 1e-4, beta_end: float = 0.02
) -> torch.Tensor:
    """Ho, Jain & Abbeel (2020), "Denoising Diffusion Probabilistic Models", §4:
    β_t increases linearly from 1e-4 to 0.02 over T = 1000 steps.

    The end points are rescaled by 1000/T so that other T keep the same total noise
    (as in improved-diffusion's `get_named_beta_schedule`)."""
    scale = 1000 / timesteps
    return torch.linspace(beta_start * scale, beta_end * scale, timesteps, dtype=torch.float64)


def cosine_alpha_bar(t: torch.Tensor | float, s: float = 0.008) -> torch.Tensor:
    """ᾱ(t) = cos²(((t + s) / (1 + s)) · π/2) for t ∈ [0, 1]: Nichol & Dhariwal (2021), eq. 17 (unnormalised)."""
    t = torch.as_tensor(t, dtype=torch.float64)
    return torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2


def cosine_beta_schedule(timesteps: int = DEFAULT_TIMESTEPS, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal (2021), "Improved Denoising Diffusion Probabilistic Models", §3.2:
    ᾱ_t = f(t)/f(0) with f(t) = cos²(((t/T + s)/(1 + s))·π/2), and β_t = 1 − ᾱ_t/ᾱ_{t−1},
    clipped at 0.999 to avoid the singularity at t = T. The small offset s = 0.008 keeps
    β_t from being too small near t = 0."""
    steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    alpha_bar = cosine_alpha_bar(steps, s) / cosine_alpha_bar(0.0, s)
    betas = 1 - alpha_bar[1:] / alpha_bar[:-1]
    return betas.clamp(max=max_beta)


def beta_schedule(name: str, timesteps: int = DEFAULT_TIMESTEPS) -> torch.Tensor:
    """The named schedule ('linear' or 'cosine')."""
    if name == "linear":
        return linear_beta_schedule(timesteps)
    if name == "cosine":
        return cosine_beta_schedule(timesteps)
    from genloom.errors import BadInput

    raise BadInput(f"unknown noise schedule {name!r}: use one of {', '.join(SCHEDULES)}")
