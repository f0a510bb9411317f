"""DDPM with an ε-prediction U-Net: the training objective, classifier-free guidance, EMA.

    loss = model(x0, class_labels=…, text_embeds=…)      # L = E‖ε − ε_θ(x_t, t, c)‖²  (Ho et al. 2020, eq. 14)
    images = model.sample(16, sampler="ddim", steps=50, guidance=2.0, class_labels=…)

The schedule constants are buffers (they follow `.to(device)` and the state dict); the
samplers live in ddpm_scheduler.py and ddim_scheduler.py and never touch the network.
Conditions (a class label, or a MiniLM text embedding of a caption) are dropped with
probability `cond_drop_prob` during training, so one network learns both ε(x, c) and
ε(x) and guidance needs no second model (Ho & Salimans 2022).
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from genloom.architectures.noise_schedules import DEFAULT_TIMESTEPS, beta_schedule
from genloom.architectures.unet import UNet, UNetConfig
from genloom.errors import BadInput
from genloom.training.architecture import Architecture, Samples
from genloom.training.ema import EMA
from genloom.training.optim import adamw

if TYPE_CHECKING:
    from genloom.architectures.captions import CaptionTable
    from genloom.architectures.ddim_scheduler import DDIMScheduler
    from genloom.architectures.ddpm_scheduler import DDPMScheduler

CONDITIONINGS = ("none", "class", "text")
SAMPLERS = ("ddpm", "ddim")


@dataclasses.dataclass
class DiffusionConfig:
    image_size: int = 8
    image_channels: int = 1
    schedule: str = "linear"  # linear (Ho et al. 2020) or cosine (Nichol & Dhariwal 2021)
    timesteps: int = DEFAULT_TIMESTEPS
    base_channels: int = 32
    channel_mults: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    attention: bool = True
    dropout: float = 0.0
    scale_shift: bool = True  # FiLM-style conditioning in every residual block
    conditioning: str = "none"  # none | class | text
    num_classes: int = 0  # class conditioning: labels are indices into `class_names`
    class_names: tuple[str, ...] = ()
    text_embed_dim: int = 384  # all-MiniLM-L6-v2
    cond_drop_prob: float = 0.1  # Ho & Salimans (2022) use 0.1–0.2
    ema_decay: float = 0.999
    # Pixels live in [−1, 1]: clip x̂_0 there. Latent diffusion turns it off (latents are unbounded).
    clip_sample: bool = True

    def unet_config(self) -> UNetConfig:
        return UNetConfig(
            image_channels=self.image_channels,
            image_size=self.image_size,
            base_channels=self.base_channels,
            channel_mults=tuple(self.channel_mults),
            num_res_blocks=self.num_res_blocks,
            num_classes=self.num_classes if self.conditioning == "class" else None,
            text_embed_dim=self.text_embed_dim if self.conditioning == "text" else None,
            attention=self.attention,
            dropout=self.dropout,
            scale_shift=self.scale_shift,
        )

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["channel_mults"] = list(self.channel_mults)
        data["class_names"] = list(self.class_names)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "DiffusionConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for key in ("channel_mults", "class_names"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)


class Diffusion(nn.Module):
    # The β schedule, registered as buffers in __init__ (declared so they type as tensors, not Module attributes).
    betas: torch.Tensor
    sqrt_alphas_cumprod: torch.Tensor
    sqrt_one_minus_alphas_cumprod: torch.Tensor

    def __init__(self, config: DiffusionConfig):
        super().__init__()
        if config.conditioning not in CONDITIONINGS:
            raise ValueError(f"conditioning must be one of {CONDITIONINGS}, got {config.conditioning!r}")
        if config.conditioning == "class" and config.num_classes < 1:
            raise ValueError("class conditioning needs num_classes ≥ 1")
        self.config = config
        self.unet = UNet(config.unet_config())
        betas = beta_schedule(config.schedule, config.timesteps)
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        # Buffers, so the schedule follows .to(device) and is saved with the weights.
        self.register_buffer("betas", betas.float())
        self.register_buffer("sqrt_alphas_cumprod", alphas_cumprod.sqrt().float())
        self.register_buffer("sqrt_one_minus_alphas_cumprod", (1.0 - alphas_cumprod).sqrt().float())

    @property
    def conditioning(self) -> str:
        return self.config.conditioning

    # ------------------------------------------------------------------ training objective

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = √ᾱ_t · x_0 + √(1 − ᾱ_t) · ε   (Ho et al. eq. 4)."""
        return (
            self.sqrt_alphas_cumprod[t][:, None, None, None] * x0
            + self.sqrt_one_minus_alphas_cumprod[t][:, None, None, None] * noise
        )

    def forward(
        self,
        x0: torch.Tensor,
        class_labels: torch.Tensor | None = None,
        text_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The simplified DDPM loss on a batch of images in [−1, 1]: ‖ε − ε_θ(x_t, t, c)‖² (eq. 14)."""
        b = x0.shape[0]
        t = torch.randint(0, self.config.timesteps, (b,), device=x0.device)
        noise = torch.randn_like(x0)
        x_t = self.q_sample(x0, t, noise)
        keep = None
        if self.conditioning != "none":
            # Drop the condition with probability p: the same network then also learns ε(x).
            keep = torch.rand(b, device=x0.device) >= self.config.cond_drop_prob
        eps = self.unet(x_t, t, class_labels=class_labels, text_embeds=text_embeds, keep=keep)
        return F.mse_loss(eps, noise)

    # ------------------------------------------------------------------ sampling

    def guided_eps(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        class_labels: torch.Tensor | None,
        text_embeds: torch.Tensor | None,
        guidance: float,
    ) -> torch.Tensor:
        """Classifier-free guidance: ε̃ = (1 + w)·ε(x, c) − w·ε(x)   (Ho & Salimans 2022, eq. 6)."""
        has_condition = class_labels is not None or text_embeds is not None
        if guidance == 0 or not has_condition:
            return self.unet(x, t, class_labels=class_labels, text_embeds=text_embeds)
        # One batched call for both terms: the first half conditioned, the second with the null condition.
        b = x.shape[0]
        keep = torch.cat(
            [torch.ones(b, dtype=torch.bool, device=x.device), torch.zeros(b, dtype=torch.bool, device=x.device)]
        )
        eps = self.unet(
            torch.cat([x, x]),
            torch.cat([t, t]),
            class_labels=torch.cat([class_labels, class_labels]) if class_labels is not None else None,
            text_embeds=torch.cat([text_embeds, text_embeds]) if text_embeds is not None else None,
            keep=keep,
        )
        cond, uncond = eps.chunk(2)
        return (1 + guidance) * cond - guidance * uncond

    def make_scheduler(self, sampler: str = "ddim", steps: int | None = None, eta: float = 0.0):
        """A DDPM or DDIM scheduler over this model's own β schedule, with its timesteps set."""
        from genloom.architectures.ddim_scheduler import DEFAULT_STEPS, DDIMScheduler
        from genloom.architectures.ddpm_scheduler import DDPMScheduler

        betas = self.betas.detach().double().cpu()
        scheduler: DDPMScheduler | DDIMScheduler
        if sampler == "ddpm":
            scheduler = DDPMScheduler(betas, clip_sample=self.config.clip_sample)
            scheduler.set_timesteps(steps or self.config.timesteps)
        elif sampler == "ddim":
            scheduler = DDIMScheduler(betas, eta=eta, clip_sample=self.config.clip_sample)
            scheduler.set_timesteps(steps or DEFAULT_STEPS)
        else:
            raise BadInput(f"unknown sampler {sampler!r}: use ddpm or ddim")
        return scheduler.to(self.betas.device)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        sampler: str = "ddim",
        steps: int | None = None,
        eta: float = 0.0,
        guidance: float = 0.0,
        class_labels: torch.Tensor | None = None,
        text_embeds: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        on_step: Callable[[int, int], None] | None = None,
        guide: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """n images in [−1, 1], shape (n, C, H, W). Same generator seed → same images.

        `guide(x_t, x̂_0)` returns s·∇_{x_t} log p(y | x_t) (e.g. CLIP guidance: the gradient of the
        similarity of the image to a prompt); it shifts ε̃ ← ε̃ − √(1 − ᾱ_t)·guide (Dhariwal &
        Nichol 2021, eq. 14). A guide that returns zeros leaves every step exactly as unguided."""
        c = self.config
        device = self.betas.device
        scheduler = self.make_scheduler(sampler, steps, eta)
        gen_device = generator.device if generator is not None else "cpu"
        x = torch.randn((n, c.image_channels, c.image_size, c.image_size), generator=generator, device=gen_device).to(
            device
        )
        if class_labels is not None:
            class_labels = class_labels.to(device)
        if text_embeds is not None:
            text_embeds = text_embeds.to(device)
        total = len(scheduler.timesteps)
        for i, t in enumerate(scheduler.timesteps.tolist()):
            t_batch = torch.full((n,), t, device=device, dtype=torch.long)
            eps = self.guided_eps(x, t_batch, class_labels, text_embeds, guidance)
            if guide is not None:
                sigma = self.sqrt_one_minus_alphas_cumprod[t]
                x0 = (x - sigma * eps) / self.sqrt_alphas_cumprod[t]
                eps = eps - sigma * guide(x, x0)
            x = scheduler.step(eps, t, x, generator=generator)
            if on_step is not None:
                on_step(i + 1, total)
        return x.clamp(-1.0, 1.0) if c.clip_sample else x


# --------------------------------------------------------------------------- the architecture (training job)


@dataclasses.dataclass
class DiffusionHyperparams:
    schedule: str = "linear"  # linear | cosine
    timesteps: int = DEFAULT_TIMESTEPS
    base_channels: int = 32
    channel_mults: str = "1,2,2"  # one U-Net level per entry; each level but the last halves H and W
    num_res_blocks: int = 1
    attention: bool = True
    dropout: float = 0.0
    scale_shift: bool = True
    cond_drop_prob: float = 0.1
    ema_decay: float = 0.999
    weight_decay: float = 0.0
    eval_items: int = 512  # val images per evaluation (the loss is noisy; more costs time)


def _mults(text: str) -> tuple[int, ...]:
    try:
        mults = tuple(int(p) for p in str(text).replace(" ", "").split(",") if p)
    except ValueError:
        mults = ()
    if not mults or min(mults) < 1:
        raise BadInput(f"--set channel_mults={text}: expected positive integers like 1,2,2")
    return mults


def diffusion_config(hp, **fields) -> DiffusionConfig:
    """A DiffusionConfig from --set hyperparameters (DiffusionHyperparams or alike) and the data's fields."""
    if hp.schedule not in ("linear", "cosine"):
        raise BadInput(f"--set schedule={hp.schedule}: use linear or cosine")
    if not 0.0 <= hp.cond_drop_prob < 1.0:
        raise BadInput(f"--set cond_drop_prob={hp.cond_drop_prob}: must be in [0, 1)")
    return DiffusionConfig(
        schedule=hp.schedule,
        timesteps=hp.timesteps,
        base_channels=hp.base_channels,
        channel_mults=_mults(hp.channel_mults),
        num_res_blocks=hp.num_res_blocks,
        attention=hp.attention,
        dropout=hp.dropout,
        scale_shift=hp.scale_shift,
        cond_drop_prob=hp.cond_drop_prob,
        ema_decay=hp.ema_decay,
        **fields,
    )


class DiffusionArchitecture(Architecture):
    name = "diffusion"
    modalities = ("image",)
    Hyperparams = DiffusionHyperparams
    train_options = frozenset({"conditional", "text_conditional", "compile"})
    sample_options = frozenset({"label", "steps", "sampler", "eta", "guidance", "prompt", "guide", "guide_scale"})
    monitor = "val_loss"
    default_steps = 2000
    default_batch_size = 128
    default_lr = 1e-3  # small U-Nets on small images tolerate more than DDPM's 2e-4

    def __init__(self, ctx, data, opts, hp: DiffusionHyperparams):
        super().__init__(ctx, data, opts, hp)
        if opts.conditional and opts.text_conditional:
            raise BadInput("give --conditional (class labels) or --text-conditional (captions), not both")
        c, h, w = data.shape
        if h != w:
            raise BadInput(
                f"diffusion needs square images, but {data.ref} holds {h}×{w}: re-import with --resize {h} {h}"
            )
        conditioning = "text" if opts.text_conditional else "class" if opts.conditional else "none"
        self.build(
            diffusion_config(
                hp,
                image_size=h,
                image_channels=c,
                conditioning=conditioning,
                num_classes=data.num_classes if conditioning == "class" else 0,
                class_names=tuple(data.label_names),
            )
        )

    def build(self, config: DiffusionConfig) -> None:
        """The ε-network for `config`, its caption table (text conditioning), EMA and optimiser."""
        ctx = self.ctx
        self.config = config
        self.net = Diffusion(config).to(ctx.device)
        self.captions: CaptionTable | None = None
        if config.conditioning == "text":
            from genloom.architectures.captions import CaptionTable

            # the items' stored captions, else every phrasing of their labels, embedded once with MiniLM
            self.captions = CaptionTable(self.data.version_id, list(config.class_names), ctx.device)
            with torch.no_grad():
                self.net.unet.text_center.copy_(self.captions.center)
        self.model = ctx.ddp(ctx.maybe_compile(self.net))
        self.ema = EMA(self.net, self.hp.ema_decay)
        self.opt = adamw(self.net.parameters(), lr=ctx.lr, weight_decay=self.hp.weight_decay, device=ctx.device)

    def modules(self):
        return {"net": self.net, "ema": self.ema.shadow}

    def optimizers(self):
        return {"opt": self.opt}

    def _condition(self, batch, generator: torch.Generator | None = None):
        """(class labels, text embeddings) for a batch: each item's stored caption, else a fresh phrasing of its label."""
        if self.config.conditioning == "none":
            return None, None
        if self.config.conditioning == "text":
            if self.captions is None:  # build() makes the table whenever conditioning is text
                raise RuntimeError("text conditioning without a caption table")
            return None, self.captions.lookup(batch.item_ids, batch.y, generator)[0]
        y = batch.y.to(self.ctx.device)
        if (y < 0).any():
            raise BadInput("some training items have no label; conditional diffusion needs every item labelled")
        return y, None

    def train_step(self, batch, step):
        x = batch.x.to(self.ctx.device, non_blocking=True) * 2.0 - 1.0  # [0, 1] → [−1, 1]
        labels, text = self._condition(batch)
        with self.ctx.autocast():
            loss = self.model(x, class_labels=labels, text_embeds=text)
        norm = self.ctx.backward_step(loss, self.opt)
        self.ema.update(self.net)
        return {"loss": loss.detach(), "grad_norm": norm}

    def evaluate(self, source):
        """ε-MSE of the EMA model on (up to eval_items of) the val split, with the same t and noise every time."""
        split = "val" if source.info.split_counts.get("val") else "train"
        batch = source.load(split, limit=self.hp.eval_items)
        if not len(batch):
            return {}
        gen = torch.Generator().manual_seed(1234)
        x0 = batch.x.to(self.ctx.device) * 2.0 - 1.0
        labels, text = self._condition(batch, gen)
        net = cast(Diffusion, self.ema.shadow)  # EMA keeps a copy of self.net, typed as nn.Module
        t = torch.randint(0, self.config.timesteps, (len(x0),), generator=gen).to(self.ctx.device)
        noise = torch.randn(x0.shape, generator=gen).to(self.ctx.device)
        eps = net.unet(net.q_sample(x0, t, noise), t, class_labels=labels, text_embeds=text)
        return {"val_loss": float(F.mse_loss(eps.float(), noise))}

    def extra_state(self):
        return {"ema_updates": self.ema.updates}

    def load_extra_state(self, state):
        self.ema.updates = int(state.get("ema_updates", 0))

    def export(self):
        buf = io.BytesIO()
        # The registered weights are the EMA weights: those are what sampling uses.
        torch.save({k: v.detach().cpu() for k, v in self.ema.shadow.state_dict().items()}, buf)
        return buf.getvalue(), {
            "diffusion": self.config.to_dict(),
            "conditioning": self.config.conditioning,
            "ema": True,
        }

    # ---- inference
    @classmethod
    def load(cls, checkpoint: bytes, config: dict[str, Any], device: str) -> "DiffusionSampler":
        model = Diffusion(DiffusionConfig.from_dict(config["diffusion"]))
        model.load_state_dict(torch.load(io.BytesIO(checkpoint), map_location="cpu", weights_only=True))
        return DiffusionSampler(model.to(device).eval(), config, device)

    @classmethod
    def check_sample_options(cls, opts, config):
        from genloom.architectures.ddim_scheduler import DEFAULT_STEPS

        conditioning = config.get("conditioning", "none")
        check_guide_options(opts, conditioning)
        if opts.prompt is not None and conditioning != "text" and opts.guide is None:
            kind = "class-conditional" if conditioning == "class" else "unconditional"
            hint = " (use --label)" if conditioning == "class" else ""
            raise BadInput(
                f"--prompt needs a text-conditioned model (train with --text-conditional); this one is {kind}{hint}"
            )
        if opts.prompt is not None and not opts.prompt.strip():
            raise BadInput("--prompt is empty")
        if opts.guidance is not None and conditioning == "none":
            raise BadInput(
                "--guidance needs a conditional model (train with --conditional or --text-conditional); this one is unconditional"
            )
        if opts.guidance is not None and opts.guidance < 0:
            raise BadInput(f"--guidance must be ≥ 0 (got {opts.guidance})")
        if opts.label is not None and conditioning == "text":
            # a label of a text model becomes its first caption ("a handwritten seven")
            if opts.label not in config.get("label_names", []):
                raise BadInput(
                    f"unknown label {opts.label!r}: the model knows {', '.join(config.get('label_names', []))}"
                )
            opts = dataclasses.replace(opts, label=None)
        if opts.sampler is not None and opts.sampler not in SAMPLERS:
            raise BadInput(f"unknown --sampler {opts.sampler!r}: use ddpm or ddim")
        if opts.eta is not None and (opts.sampler or "ddim") != "ddim":
            raise BadInput("--eta applies to the DDIM sampler only")
        if opts.eta is not None and opts.eta < 0:
            raise BadInput(f"--eta must be ≥ 0 (got {opts.eta})")
        timesteps = int(config.get("diffusion", {}).get("timesteps", DEFAULT_TIMESTEPS))
        if opts.steps is not None and not 1 <= opts.steps <= timesteps:
            raise BadInput(
                f"--steps must be between 1 and {timesteps} (got {opts.steps}); DDIM's default is {DEFAULT_STEPS}"
            )
        super().check_sample_options(opts, config)


DEFAULT_GUIDANCE = 1.0  # w for conditioned sampling when --guidance is not given
DEFAULT_GUIDE_SCALE = 1.0  # --guide-scale when --guide is given alone


def check_guide_options(opts, conditioning: str) -> None:
    """--guide clip:NAME[@V] [--guide-scale S]: well-formed, and with a prompt to steer towards."""
    if opts.guide_scale is not None and opts.guide is None:
        raise BadInput("--guide-scale needs --guide clip:NAME[@V]")
    if opts.guide is None:
        return
    kind, _, ref = opts.guide.partition(":")
    if kind != "clip" or not ref:
        raise BadInput(f"--guide {opts.guide!r}: expected clip:NAME[@V] (a registered clip model)")
    if opts.guide_scale is not None and opts.guide_scale < 0:
        raise BadInput(f"--guide-scale must be ≥ 0 (got {opts.guide_scale})")
    if opts.prompt is None and conditioning != "text":
        raise BadInput("--guide needs --prompt: the text the clip model steers the samples towards")


class DiffusionSampler:
    """A registered diffusion model (EMA weights) ready to sample with DDPM or DDIM."""

    def __init__(self, model: Diffusion, config: dict[str, Any], device: str):
        self.model, self.config, self.device = model, config, device
        self.labels: list[str] = list(config.get("label_names", []))

    def _conditions(self, opts):
        """(class labels, text embeddings, per-sample labels, per-sample prompts) for n samples."""
        n = opts.n
        cond = self.model.conditioning
        if cond == "class":
            idx = (
                [self.labels.index(opts.label)] * n
                if opts.label is not None
                else [i % len(self.labels) for i in range(n)]
            )
            return torch.tensor(idx), None, [self.labels[i] for i in idx], None
        if cond == "text":
            from genloom.architectures.captions import caption, embed_prompts

            labels: list[str | None]
            if opts.prompt is not None:
                prompts = [opts.prompt] * n
                labels = [None] * n
            else:  # no prompt: cycle through the labels' first phrasing ("a handwritten seven")
                names: list[str] = (
                    [opts.label] * n
                    if opts.label is not None
                    else [self.labels[i % len(self.labels)] for i in range(n)]
                )
                prompts = [caption(lab, 0) for lab in names]
                labels = list(names)
            unique = sorted(set(prompts))
            table = embed_prompts(unique)
            text = table[torch.tensor([unique.index(p) for p in prompts])]
            return None, text, labels, prompts
        if opts.prompt is not None:  # an unconditional model steered by --guide towards the prompt
            return None, None, None, [opts.prompt] * n
        return None, None, None, None

    def to_image(self, x: torch.Tensor) -> torch.Tensor:
        """The sampler's x (pixels in [−1, 1]) as images in [0, 1]; differentiable for guidance."""
        return (x + 1.0) / 2.0

    def _guide(self, opts, prompts):
        """The --guide hook for Diffusion.sample (None without --guide)."""
        if opts.guide_model is None:
            return None
        scale = opts.guide_scale if opts.guide_scale is not None else DEFAULT_GUIDE_SCALE
        return opts.guide_model.guide(prompts, scale, self.to_image)

    def sample(self, opts) -> Samples:
        class_labels, text, labels, prompts = self._conditions(opts)
        sampler = opts.sampler or "ddim"
        guidance = (
            opts.guidance
            if opts.guidance is not None
            else (DEFAULT_GUIDANCE if self.model.conditioning != "none" else 0.0)
        )
        steps = opts.steps or (50 if sampler == "ddim" else self.model.config.timesteps)
        eta = opts.eta or 0.0
        generator = torch.Generator().manual_seed(opts.seed)
        # Only long samplings (DDPM's 1,000 steps) are worth a bar; the caller draws it.
        progress = opts.progress if steps >= 200 else None
        on_step = (lambda i, total: progress("sampling", i, total, "")) if progress else None
        images = self.model.sample(
            opts.n,
            sampler=sampler,
            steps=steps,
            eta=eta,
            guidance=guidance,
            class_labels=class_labels,
            text_embeds=text,
            generator=generator,
            on_step=on_step,
            guide=self._guide(opts, prompts),
        )
        meta = {"sampler": sampler, "steps": steps, "guidance": guidance, "seed": opts.seed}
        if sampler == "ddim":
            meta["eta"] = eta
        if opts.guide is not None:
            meta.update(
                guide=opts.guide, guide_scale=opts.guide_scale if opts.guide_scale is not None else DEFAULT_GUIDE_SCALE
            )
        metadata = [dict(meta, index=i, **({"prompt": prompts[i]} if prompts else {})) for i in range(opts.n)]
        with torch.no_grad():
            images = self.to_image(images).clamp(0.0, 1.0)
        return Samples(images=images.cpu(), labels=labels, metadata=metadata)
