"""Ancestral DDPM sampling (Ho, Jain & Abbeel 2020), as a scheduler apart from the network.

diffusers-style: `add_noise(x0, noise, t)` for training, `set_timesteps(n)` then
`step(eps, t, x_t)` for sampling. The network never sees this file, so swapping DDPM
for DDIM (ddim_scheduler.py) touches no model code.

Notation: β_t the schedule, α_t = 1 − β_t, ᾱ_t = ∏_{s≤t} α_s; timesteps are 0-based
(t = 0 … T−1), so ᾱ_{−1} = 1 stands for "no noise".
"""

from __future__ import annotations

import torch

from genloom.architectures.noise_schedules import DEFAULT_TIMESTEPS, beta_schedule


class DDPMScheduler:
    """Ancestral sampler: x_{t−1} ~ q(x_{t−1} | x_t, x̂_0), with x̂_0 predicted from ε_θ."""

    def __init__(
        self,
        betas: torch.Tensor | None = None,
        *,
        schedule: str = "linear",
        num_train_timesteps: int = DEFAULT_TIMESTEPS,
        clip_sample: bool = True,  # images live in [−1, 1]; clipping x̂_0 stops early-step blow-ups
    ):
        if betas is None:
            betas = beta_schedule(schedule, num_train_timesteps)
        # Products are taken in float64 then stored as float32: ᾱ_T is ~4e-5 and loses digits otherwise.
        betas = torch.as_tensor(betas, dtype=torch.float64)
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        self.num_train_timesteps = len(betas)
        self.clip_sample = clip_sample
        self.betas = betas.float()
        self.alphas_cumprod = alphas_cumprod.float()
        self.sqrt_alphas_cumprod = alphas_cumprod.sqrt().float()
        self.sqrt_one_minus_alphas_cumprod = (1.0 - alphas_cumprod).sqrt().float()
        self.set_timesteps(self.num_train_timesteps)

    def to(self, device: torch.device | str) -> "DDPMScheduler":
        for name in ("betas", "alphas_cumprod", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    # ------------------------------------------------------------------ training

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = √ᾱ_t · x_0 + √(1 − ᾱ_t) · ε   (Ho et al. eq. 4, reparameterised)."""
        shape = (-1,) + (1,) * (x0.dim() - 1)
        return (
            self.sqrt_alphas_cumprod.to(x0.device)[t].view(shape) * x0
            + self.sqrt_one_minus_alphas_cumprod.to(x0.device)[t].view(shape) * noise
        )

    # ------------------------------------------------------------------ sampling

    def set_timesteps(self, num_inference_steps: int | None = None) -> None:
        """Visit `num_inference_steps` timesteps, evenly spaced from T−1 ("leading" spacing);
        the default, T, is the original ancestral sampler over every step."""
        n = num_inference_steps or self.num_train_timesteps
        if not 1 <= n <= self.num_train_timesteps:
            from genloom.errors import BadInput

            raise BadInput(f"--steps must be between 1 and {self.num_train_timesteps} for DDPM (got {n})")
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
    ) -> torch.Tensor:
        """One reverse step x_t → x_{t'} (t' the previous visited timestep) given ε_θ(x_t, t)."""
        t = int(t)
        prev_t = self.previous_timestep(t)
        # 1. ᾱ at both ends; with skipped steps the effective β is 1 − ᾱ_t / ᾱ_{t'}.
        alpha_bar_t = self.alphas_cumprod[t].item()
        alpha_bar_prev = self.alphas_cumprod[prev_t].item() if prev_t >= 0 else 1.0
        beta_t = 1.0 - alpha_bar_t / alpha_bar_prev
        alpha_t = 1.0 - beta_t

        # 2. predict x_0 from the noise estimate: x̂_0 = (x_t − √(1−ᾱ_t)·ε) / √ᾱ_t   (eq. 15)
        x0 = (sample - (1.0 - alpha_bar_t) ** 0.5 * model_output) / alpha_bar_t**0.5

        # 3. keep x̂_0 in the data range
        if self.clip_sample:
            x0 = x0.clamp(-1.0, 1.0)

        # 4. posterior mean μ̃_t(x_t, x̂_0) = √ᾱ_{t−1}·β_t/(1−ᾱ_t)·x̂_0 + √α_t·(1−ᾱ_{t−1})/(1−ᾱ_t)·x_t   (eq. 7)
        coef_x0 = alpha_bar_prev**0.5 * beta_t / (1.0 - alpha_bar_t)
        coef_xt = alpha_t**0.5 * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar_t)
        mean = coef_x0 * x0 + coef_xt * sample

        # 5. add noise with the posterior variance β̃_t = (1−ᾱ_{t−1})/(1−ᾱ_t)·β_t   (eq. 7; "fixed small")
        if prev_t < 0:
            return mean  # the last step returns the mean: no noise at t = 0
        variance = max((1.0 - alpha_bar_prev) / (1.0 - alpha_bar_t) * beta_t, 1e-20)
        noise = torch.randn(sample.shape, generator=generator, device=_gen_device(generator), dtype=sample.dtype)
        return mean + variance**0.5 * noise.to(sample.device)


def _gen_device(generator: torch.Generator | None) -> torch.device | str:
    # Noise is drawn on the generator's device (CPU by default), so a seed gives the same samples on any device.
    return generator.device if generator is not None else "cpu"
