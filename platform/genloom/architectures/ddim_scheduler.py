"""DDIM sampling (Song, Meng & Ermon 2021, "Denoising Diffusion Implicit Models"), as a scheduler.

A DDPM-trained ε-network samples in far fewer steps (default 50) by following the
non-Markovian process of §4; η = 0 is deterministic, η = 1 recovers DDPM's variance.
Same interface as ddpm_scheduler.py: `set_timesteps(n)`, `step(eps, t, x_t)`, `add_noise`.
"""

from __future__ import annotations

import torch

from genloom.architectures.noise_schedules import DEFAULT_TIMESTEPS, beta_schedule

DEFAULT_STEPS = 50


class DDIMScheduler:
    def __init__(
        self,
        betas: torch.Tensor | None = None,
        *,
        schedule: str = "linear",
        num_train_timesteps: int = DEFAULT_TIMESTEPS,
        eta: float = 0.0,
        clip_sample: bool = True,
    ):
        if betas is None:
            betas = beta_schedule(schedule, num_train_timesteps)
        betas = torch.as_tensor(betas, dtype=torch.float64)
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        self.num_train_timesteps = len(betas)
        self.eta = float(eta)
        self.clip_sample = clip_sample
        self.betas = betas.float()
        self.alphas_cumprod = alphas_cumprod.float()
        self.sqrt_alphas_cumprod = alphas_cumprod.sqrt().float()
        self.sqrt_one_minus_alphas_cumprod = (1.0 - alphas_cumprod).sqrt().float()
        # ᾱ "before" the first step is 1 (clean data), as diffusers' set_alpha_to_one=True.
        self.final_alpha_cumprod = 1.0
        self.set_timesteps(DEFAULT_STEPS)

    def to(self, device: torch.device | str) -> "DDIMScheduler":
        for name in ("betas", "alphas_cumprod", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = √ᾱ_t · x_0 + √(1 − ᾱ_t) · ε   (the forward process both papers share)."""
        shape = (-1,) + (1,) * (x0.dim() - 1)
        return (
            self.sqrt_alphas_cumprod.to(x0.device)[t].view(shape) * x0
            + self.sqrt_one_minus_alphas_cumprod.to(x0.device)[t].view(shape) * noise
        )

    def set_timesteps(self, num_inference_steps: int = DEFAULT_STEPS) -> None:
        """τ: `num_inference_steps` timesteps spaced T/n apart, from (n−1)·T/n down to 0
        ("leading" spacing, §4.2's sub-sequence τ of [1, …, T])."""
        n = int(num_inference_steps)
        if not 1 <= n <= self.num_train_timesteps:
            from genloom.errors import BadInput

            raise BadInput(f"--steps must be between 1 and {self.num_train_timesteps} for DDIM (got {n})")
        self.num_inference_steps = n
        self.step_ratio = self.num_train_timesteps // n
        self.timesteps = (torch.arange(n) * self.step_ratio).flip(0)

    def previous_timestep(self, t: int) -> int:
        return t - self.step_ratio

    def step(
        self,
        model_output: torch.Tensor,
        t: int,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
        eta: float | None = None,
    ) -> torch.Tensor:
        t = int(t)
        eta = self.eta if eta is None else float(eta)
        # 1. previous timestep on τ, and ᾱ at both ends (ᾱ_prev = 1 past the last step)
        prev_t = self.previous_timestep(t)
        alpha_bar_t = self.alphas_cumprod[t].item()
        alpha_bar_prev = self.alphas_cumprod[prev_t].item() if prev_t >= 0 else self.final_alpha_cumprod

        # 2. predicted x_0 = (x_t − √(1−ᾱ_t)·ε_θ) / √ᾱ_t   (eq. 12, "predicted x_0")
        x0 = (sample - (1.0 - alpha_bar_t) ** 0.5 * model_output) / alpha_bar_t**0.5

        # 3. clip x̂_0 and re-derive ε from it, so both terms of eq. 12 agree
        eps = model_output
        if self.clip_sample:
            x0 = x0.clamp(-1.0, 1.0)
            eps = (sample - alpha_bar_t**0.5 * x0) / (1.0 - alpha_bar_t) ** 0.5

        # 4. σ_t(η) = η · √((1−ᾱ_{t−1})/(1−ᾱ_t)) · √(1 − ᾱ_t/ᾱ_{t−1})   (eq. 16)
        sigma = (
            eta * ((1.0 - alpha_bar_prev) / (1.0 - alpha_bar_t)) ** 0.5 * (1.0 - alpha_bar_t / alpha_bar_prev) ** 0.5
        )

        # 5. "direction pointing to x_t": √(1 − ᾱ_{t−1} − σ_t²) · ε_θ   (eq. 12)
        direction = max(1.0 - alpha_bar_prev - sigma**2, 0.0) ** 0.5 * eps

        # 6. x_{t−1} = √ᾱ_{t−1} · x̂_0 + direction + σ_t · z   (eq. 12)
        prev = alpha_bar_prev**0.5 * x0 + direction
        if sigma > 0:
            device = generator.device if generator is not None else "cpu"
            noise = torch.randn(sample.shape, generator=generator, device=device, dtype=sample.dtype)
            prev = prev + sigma * noise.to(sample.device)
        return prev
