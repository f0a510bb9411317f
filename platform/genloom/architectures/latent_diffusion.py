"""Latent diffusion (Rombach et al. 2022): DDPM in the latent space of a registered autoencoder.

    genloom train latent-diffusion --dataset mnist --autoencoder vae-mnist@1 --text-conditional

1. The autoencoder (a registered `vae` or `vae-gan`, frozen) encodes every training image to
   its posterior mean μ ∈ ℝ^d. With d = s², μ is laid out as a 1×s×s "image" (16 → 4×4, 64 → 8×8)
   and scaled to unit variance (the scale is measured once on the train split, as Stable
   Diffusion's `scale_factor`), so diffusion.py's U-Net and noise schedule apply unchanged.
2. The ε-network (diffusion.py's `Diffusion`, with x̂_0 clipping off: latents are unbounded) is
   trained on those latents, conditioned on captions through the frozen MiniLM sentence encoder
   with classifier-free guidance (`--text-conditional`), or unconditional.
3. Sampling runs DDIM (or DDPM) in latent space and decodes with the autoencoder's decoder: a
   4×4 latent costs a fraction of the U-Net work of a 28×28 image at the same number of steps.

The registered model pins the autoencoder by exact version and id (config `autoencoder`), so
the model, every sampling run and every stored sample name both models.
"""

from __future__ import annotations

import dataclasses
import io
import math
from typing import Any

import torch

from genloom.architectures.diffusion import (
    Diffusion,
    DiffusionArchitecture,
    DiffusionConfig,
    DiffusionHyperparams,
    DiffusionSampler,
    diffusion_config,
)
from genloom.errors import BadInput

AUTOENCODERS = ("vae", "vae-gan")


@dataclasses.dataclass
class LatentDiffusionHyperparams(DiffusionHyperparams):
    """The pixel model's --set keys, with defaults for 4×4 latents, plus the latent ones."""

    channel_mults: str = "1,2"  # 4×4 → 2×2
    attention: bool = False
    latent_size: int = 0  # side s of the s×s latent; 0: from the autoencoder (latent_dim = s²)
    scale_items: int = 2048  # train images whose latents set the scale factor


def load_autoencoder(ref: str, device: str):
    """(Model row, VAEModel) of a registered VAE or VAE-GAN; a one-line error for anything else."""
    # Loaded here, not through genloom.jobs (a layer above the networks): only these two qualify.
    from genloom.architectures.vae import VAE
    from genloom.architectures.vae_gan import VAEGAN
    from genloom.db.engine import session_scope
    from genloom.registry import load_checkpoint, resolve_model

    with session_scope() as s:
        row = resolve_model(s, ref)
        if row.architecture not in AUTOENCODERS:
            raise BadInput(f"--autoencoder {ref} is a {row.architecture} model: use a vae or vae-gan")
        arch_cls: type[VAE] = VAEGAN if row.architecture == "vae-gan" else VAE
        model = arch_cls.load(load_checkpoint(s, row), dict(row.config), device)
        s.expunge(row)
    for p in model.net.parameters():
        p.requires_grad_(False)
    return row, model


def latent_side(latent_dim: int, ref: str, wanted: int = 0) -> int:
    """s with s² = latent_dim, checked against the size the latent-diffusion model expects."""
    side = math.isqrt(latent_dim)
    if side * side != latent_dim:
        raise BadInput(
            f"autoencoder {ref} has latent_dim={latent_dim}, not a square: latent diffusion lays latents out "
            "as s×s (train the autoencoder with --set latent_dim=16 or 64)"
        )
    if wanted and wanted != side:
        raise BadInput(
            f"autoencoder {ref} has {side}×{side} latents (latent_dim={latent_dim}) but this latent diffusion "
            f"model expects {wanted}×{wanted}"
        )
    return side


class LatentDiffusion(DiffusionArchitecture):
    name = "latent-diffusion"
    Hyperparams = LatentDiffusionHyperparams  # its own --set keys (a subclass of the pixel model's)
    train_options = frozenset({"text_conditional", "autoencoder", "compile"})
    sample_options = frozenset({"steps", "sampler", "eta", "guidance", "prompt", "label", "guide", "guide_scale"})

    def __init__(self, ctx, data, opts, hp: LatentDiffusionHyperparams):
        # Not DiffusionArchitecture.__init__: the data here are latents, not the dataset's images.
        self.ctx, self.data, self.opts, self.hp = ctx, data, opts, hp
        if not opts.autoencoder:
            raise BadInput("latent-diffusion needs --autoencoder NAME@V (a registered vae or vae-gan)")
        row, self.autoencoder = load_autoencoder(opts.autoencoder, ctx.device)
        from genloom.refs import format_ref

        self.autoencoder_ref = {"model": format_ref(row.name, row.version), "model_id": row.id}
        ae_shape = tuple(self.autoencoder.config["shape"])
        if ae_shape != tuple(data.shape):
            raise BadInput(
                f"autoencoder {self.autoencoder_ref['model']} was trained on {'×'.join(map(str, ae_shape))} images "
                f"but {data.ref} holds {'×'.join(map(str, data.shape))}"
            )
        if self.autoencoder.net.num_classes:
            raise BadInput(
                f"autoencoder {self.autoencoder_ref['model']} is class-conditional: use an unconditional one"
            )
        side = latent_side(self.autoencoder.net.hp.latent_dim, self.autoencoder_ref["model"], hp.latent_size)
        self.build(
            diffusion_config(
                hp,
                image_size=side,
                image_channels=1,
                conditioning="text" if opts.text_conditional else "none",
                class_names=tuple(data.label_names),
                clip_sample=False,
            )
        )
        self.latent_scale = 1.0
        self.scale_measured = False

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] → scaled latents (N, 1, s, s): the autoencoder's posterior mean."""
        mu, _ = self.autoencoder.net.encode(x.to(self.ctx.device))
        s = self.config.image_size
        return mu.view(-1, 1, s, s) * self.latent_scale

    def _measure_scale(self, source) -> None:
        """1 / std of the train latents, so diffusion sees unit-variance data (once per run)."""
        if self.scale_measured:
            return
        batch = source.load("train", limit=self.hp.scale_items)
        mu, _ = self.autoencoder.net.encode(batch.x.to(self.ctx.device))
        self.latent_scale = float(1.0 / mu.float().std().clamp_min(1e-6))
        self.scale_measured = True

    def train_batches(self, source):
        with torch.no_grad():
            self._measure_scale(source)
        return super().train_batches(source)

    def train_step(self, batch, step):
        z = self.encode(batch.x)
        _, text = self._condition(batch)
        with self.ctx.autocast():
            loss = self.model(z, text_embeds=text)
        norm = self.ctx.backward_step(loss, self.opt)
        self.ema.update(self.net)
        return {"loss": loss.detach(), "grad_norm": norm}

    def evaluate(self, source):
        """ε-MSE of the EMA model on val latents, with the same t and noise every time."""
        self._measure_scale(source)
        split = "val" if source.info.split_counts.get("val") else "train"
        batch = source.load(split, limit=self.hp.eval_items)
        if not len(batch):
            return {}
        gen = torch.Generator().manual_seed(1234)
        z0 = self.encode(batch.x)
        _, text = self._condition(batch, gen)
        net: Any = self.ema.shadow  # nn.Module.__getattr__ would type .unet as Tensor | Module
        t = torch.randint(0, self.config.timesteps, (len(z0),), generator=gen).to(self.ctx.device)
        noise = torch.randn(z0.shape, generator=gen).to(self.ctx.device)
        eps = net.unet(net.q_sample(z0, t, noise), t, text_embeds=text)
        return {"val_loss": float(torch.nn.functional.mse_loss(eps.float(), noise))}

    def extra_state(self):
        return {"ema_updates": self.ema.updates, "latent_scale": self.latent_scale}

    def load_extra_state(self, state):
        super().load_extra_state(state)
        if "latent_scale" in state:
            self.latent_scale, self.scale_measured = float(state["latent_scale"]), True

    def export(self):
        blob, config = super().export()
        return blob, {**config, "autoencoder": self.autoencoder_ref, "latent_scale": self.latent_scale}

    # ---- inference
    @classmethod
    def load(cls, checkpoint: bytes, config: dict[str, Any], device: str) -> LatentDiffusionSampler:
        model = Diffusion(DiffusionConfig.from_dict(config["diffusion"]))
        model.load_state_dict(torch.load(io.BytesIO(checkpoint), map_location="cpu", weights_only=True))
        _, autoencoder = load_autoencoder(config["autoencoder"]["model"], device)
        return LatentDiffusionSampler(model.to(device).eval(), config, device, autoencoder)


class LatentDiffusionSampler(DiffusionSampler):
    """Samples latents with the diffusion sampler, then decodes them with the pinned autoencoder."""

    def __init__(self, model: Diffusion, config: dict[str, Any], device: str, autoencoder):
        super().__init__(model, config, device)
        self.autoencoder = autoencoder
        self.latent_scale = float(config["latent_scale"])
        self.lineage = {"autoencoder": dict(config["autoencoder"])}

    def to_image(self, z: torch.Tensor) -> torch.Tensor:
        """Scaled latents (N, 1, s, s) → decoded images in [0, 1]; differentiable for guidance."""
        net = self.autoencoder.net
        return net.mean_image(net.decode(z.flatten(1) / self.latent_scale))
