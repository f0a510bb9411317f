"""A DCGAN-style generator and discriminator (Radford et al. 2016) for images of any size.

Generator: z (+ class embedding) → linear → C×h×w at about 4×4 → transposed stride-2
convolutions with BatchNorm + ReLU → tanh at H×W. Discriminator: stride-2 convolutions
with LeakyReLU(0.2) → linear score; class-conditional by projection (Miyato & Koyama 2018);
optional spectral norm on every layer.

Losses:
- `loss=bce` (default): the non-saturating GAN loss, Adam(2e-4, betas 0.5, 0.999), one D step per G step.
- `loss=wgan-gp`: Wasserstein loss with gradient penalty (Gulrajani et al. 2017): λ = 10,
  5 critic steps per generator step (each on a fresh real batch), Adam(1e-4, betas 0.5, 0.9).
Logged per step: both losses, the critic's gradient norm, the gradient penalty, and a
mode-collapse signal `diversity`: mean pairwise distance of generated images divided by
that of the real batch (≈ 1 healthy, → 0 when the generator collapses to a few images).
Samples come from an EMA of the generator's weights.
"""

from __future__ import annotations

import dataclasses
import io
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from genloom.errors import BadInput
from genloom.training.architecture import Architecture, Samples
from genloom.training.ema import EMA

LOSSES = ("bce", "wgan-gp")


@dataclasses.dataclass
class GANHyperparams:
    loss: str = "bce"  # bce (non-saturating) | wgan-gp
    z_dim: int = 64
    channels: int = 64  # width at the highest resolution; doubles per halving
    spectral_norm: bool = False  # spectral norm on D's layers (stabilises bce without GP)
    gp_lambda: float = 10.0  # WGAN-GP penalty weight
    critic_steps: int = 0  # D steps per G step; 0: 1 for bce, 5 for wgan-gp
    beta1: float = 0.5
    beta2: float = 0.0  # 0: 0.999 for bce, 0.9 for wgan-gp
    ema_decay: float = 0.999  # generator EMA used for sampling; 0 disables


def _halvings(h: int, w: int) -> int:
    return max(1, int(math.floor(math.log2(max(min(h, w), 4) / 4))))


class Generator(nn.Module):
    def __init__(self, shape: tuple[int, int, int], hp: GANHyperparams, num_classes: int = 0):
        super().__init__()
        c, h, w = shape
        self.shape, self.num_classes, self.z_dim = shape, num_classes, hp.z_dim
        d = _halvings(h, w)
        widths = [hp.channels * 2**i for i in range(d + 1)]
        self.low = (widths[-1], math.ceil(h / 2**d), math.ceil(w / 2**d))
        self.embed = nn.Embedding(num_classes, hp.z_dim) if num_classes else None
        self.fc = nn.Sequential(
            nn.Linear(hp.z_dim, int(math.prod(self.low))), nn.BatchNorm1d(int(math.prod(self.low))), nn.ReLU()
        )
        layers: list[nn.Module] = []
        for i in reversed(range(d)):
            layers += [
                nn.ConvTranspose2d(widths[i + 1], widths[i], 4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(widths[i]),
                nn.ReLU(),
            ]
        layers += [nn.Conv2d(widths[0], c, 3, padding=1), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Images in [-1, 1]."""
        if self.embed is not None:
            z = z * self.embed(y)  # multiplicative conditioning keeps z's scale
        out = self.net(self.fc(z).view(-1, *self.low))
        if out.shape[-2:] != self.shape[1:]:
            out = F.interpolate(out, size=self.shape[1:], mode="bilinear", align_corners=False)
        return out


class Discriminator(nn.Module):
    def __init__(self, shape: tuple[int, int, int], hp: GANHyperparams, num_classes: int = 0):
        super().__init__()
        c, h, w = shape
        d = _halvings(h, w)
        widths = [hp.channels * 2**i for i in range(d + 1)]
        sn = nn.utils.parametrizations.spectral_norm if hp.spectral_norm else (lambda m: m)
        layers: list[nn.Module] = [sn(nn.Conv2d(c, widths[0], 3, padding=1)), nn.LeakyReLU(0.2)]
        for i in range(d):
            layers += [sn(nn.Conv2d(widths[i], widths[i + 1], 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
        self.features = nn.Sequential(*layers, nn.Flatten())
        flat = widths[-1] * math.ceil(h / 2**d) * math.ceil(w / 2**d)
        self.out = sn(nn.Linear(flat, 1))
        self.embed = sn(nn.Embedding(num_classes, flat)) if num_classes else None

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        f = self.features(x)
        score = self.out(f).squeeze(1)
        if self.embed is not None:
            score = score + (self.embed(y) * f).sum(1)  # projection discriminator
        return score


def diversity(images: torch.Tensor) -> torch.Tensor:
    """Mean pairwise L2 distance within a batch (flattened images)."""
    flat = images.flatten(1).float()
    n = flat.shape[0]
    if n < 2:
        return torch.tensor(0.0)
    return torch.cdist(flat, flat).sum() / (n * (n - 1))


class GAN(Architecture):
    name = "gan"
    modalities = ("image",)
    Hyperparams = GANHyperparams
    train_options = frozenset({"conditional", "compile"})
    sample_options = frozenset({"label"})
    monitor = "val_mmd"
    default_steps = 2000
    default_batch_size = 64
    default_lr = 2e-4

    @classmethod
    def default_lr_for(cls, hp: GANHyperparams) -> float:
        return 1e-4 if hp.loss == "wgan-gp" else 2e-4

    def __init__(self, ctx, data, opts, hp: GANHyperparams):
        super().__init__(ctx, data, opts, hp)
        if hp.loss not in LOSSES:
            raise BadInput(f"--set loss={hp.loss}: use {' or '.join(LOSSES)}")
        wgan = hp.loss == "wgan-gp"
        self.critic_steps = hp.critic_steps or (5 if wgan else 1)
        beta2 = hp.beta2 or (0.9 if wgan else 0.999)
        self.num_classes = data.num_classes if opts.conditional else 0
        shape = tuple(data.shape)
        self.G = Generator(shape, hp, self.num_classes).to(ctx.device)
        self.D = Discriminator(shape, hp, self.num_classes).to(ctx.device)
        self.g_fwd, self.d_fwd = ctx.maybe_compile(self.G), ctx.maybe_compile(self.D)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=opts.lr, betas=(hp.beta1, beta2))
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=opts.lr, betas=(hp.beta1, beta2))
        self.ema = EMA(self.G, hp.ema_decay) if hp.ema_decay > 0 else None
        self.gen = ctx.generator()

    def modules(self):
        return {"G": self.G, "D": self.D}

    def optimizers(self):
        return {"G": self.opt_g, "D": self.opt_d}

    def train_batches(self, source):
        """Groups of `critic_steps` real batches: each critic step sees a fresh one."""
        stream = source.train_stream()
        while True:
            yield [next(stream) for _ in range(self.critic_steps)]

    def _z(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.hp.z_dim, device=self.ctx.device, generator=self.gen)

    def _fake_labels(self, n: int) -> torch.Tensor | None:
        if not self.num_classes:
            return None
        return torch.randint(0, self.num_classes, (n,), device=self.ctx.device, generator=self.gen)

    def _gradient_penalty(self, real, fake, y):
        alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device, generator=self.gen)
        mixed = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
        score = self.d_fwd(mixed, y)
        (grad,) = torch.autograd.grad(score.sum(), mixed, create_graph=True)
        return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()

    def train_step(self, batches, step):
        ctx, hp = self.ctx, self.hp
        wgan = hp.loss == "wgan-gp"
        d_losses, gps, d_norms = [], [], []
        for batch in batches:
            real = batch.x.to(ctx.device) * 2 - 1
            y = batch.y.to(ctx.device) if self.num_classes else None
            with torch.no_grad(), ctx.autocast():
                fake = self.g_fwd(self._z(real.shape[0]), y)
            with ctx.autocast():
                # One forward over real and fake together (one D graph per step).
                scores = self.d_fwd(
                    torch.cat([real, fake.to(real.dtype)]), None if y is None else torch.cat([y, y])
                ).float()
            s_real, s_fake = scores.chunk(2)
            if wgan:
                gp = self._gradient_penalty(real, fake.float(), y)
                loss_d = s_fake.mean() - s_real.mean() + hp.gp_lambda * gp
                gps.append(gp.detach())
            else:
                loss_d = F.softplus(-s_real).mean() + F.softplus(s_fake).mean()
            d_norms.append(ctx.backward_step(loss_d, self.opt_d))
            d_losses.append(loss_d.detach())
        # Generator step (labels drawn uniformly for conditional models).
        n = batches[-1].x.shape[0]
        y_fake = self._fake_labels(n)
        with ctx.autocast():
            fake = self.g_fwd(self._z(n), y_fake)
            s_fake = self.d_fwd(fake, y_fake).float()
        loss_g = -s_fake.mean() if wgan else F.softplus(-s_fake).mean()
        g_norm = ctx.backward_step(loss_g, self.opt_g)
        self.D.zero_grad(set_to_none=True)  # G's backward also filled D's grads
        if self.ema is not None:
            self.ema.update(self.G)
        with torch.no_grad():
            div = diversity(fake.detach()) / diversity(real).clamp_min(1e-8)
        # 0-dim tensors: the trainer reads them when it logs (no host sync per step)
        metrics = {
            "loss": loss_g.detach(),
            "loss_g": loss_g.detach(),
            "loss_d": torch.stack(d_losses).mean(),
            "critic_grad_norm": torch.stack(d_norms).mean(),
            "g_grad_norm": g_norm,
            "diversity": div,
        }
        if gps:
            metrics["gradient_penalty"] = torch.stack(gps).mean()
        return metrics

    def _sampler_net(self) -> nn.Module:
        return self.ema.shadow if self.ema is not None else self.G

    def evaluate(self, source):
        """Pixel-space MMD (Gaussian kernel) between generated and val images, and the diversity ratio."""
        split = "val" if source.info.split_counts.get("val") else "train"
        real = source.load(split, limit=512)
        if real.x is None or len(real) == 0:
            return {}
        x = real.x.to(self.ctx.device)
        g = torch.Generator(device=self.ctx.device).manual_seed(4321)
        z = torch.randn(x.shape[0], self.hp.z_dim, device=self.ctx.device, generator=g)
        y = real.y.to(self.ctx.device).clamp(min=0) if self.num_classes else None
        net = self._sampler_net()
        fake = (net(z, y).float() + 1) / 2
        return {"val_mmd": mmd(fake, x), "val_diversity": float(diversity(fake) / diversity(x).clamp_min(1e-8))}

    def extra_state(self):
        return {"ema": self.ema.shadow.state_dict(), "ema_updates": self.ema.updates} if self.ema is not None else {}

    def load_extra_state(self, state):
        if self.ema is not None and "ema" in state:
            self.ema.shadow.load_state_dict(state["ema"])
            self.ema.updates = state.get("ema_updates", 0)

    def export(self):
        buf = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in self._sampler_net().state_dict().items()}, buf)
        return buf.getvalue(), {
            "hparams": dataclasses.asdict(self.hp),
            "num_classes": self.num_classes,
            "weights": "ema" if self.ema is not None else "generator",
        }

    @classmethod
    def load(cls, checkpoint: bytes, config: dict[str, Any], device: str) -> GANModel:
        hp = GANHyperparams(**config["hparams"])
        G = Generator(tuple(config["shape"]), hp, int(config.get("num_classes", 0)))
        G.load_state_dict(torch.load(io.BytesIO(checkpoint), map_location="cpu", weights_only=True))
        return GANModel(G.to(device).eval(), config, device)


def mmd(a: torch.Tensor, b: torch.Tensor) -> float:
    """Squared maximum mean discrepancy with a Gaussian kernel at the median-distance bandwidth."""
    a, b = a.flatten(1).float(), b.flatten(1).float()
    xy = torch.cat([a, b])
    d2 = torch.cdist(xy, xy) ** 2
    bandwidth = d2[d2 > 0].median().clamp_min(1e-8)
    k = torch.exp(-d2 / bandwidth)
    n = a.shape[0]
    return float(k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean())


class GANModel:
    """A registered generator, ready to sample."""

    def __init__(self, G: Generator, config: dict[str, Any], device: str):
        self.G, self.config, self.device = G, config, device
        self.labels: list[str] = list(config.get("label_names", []))

    @torch.no_grad()
    def sample(self, opts) -> Samples:
        gen = torch.Generator(device="cpu").manual_seed(opts.seed)
        z = torch.randn(opts.n, self.G.z_dim, generator=gen).to(self.device)
        y = None
        labels: list[str | None] | None = None
        if self.G.num_classes:
            idx = (
                [self.labels.index(opts.label)] * opts.n
                if opts.label is not None
                else [i % self.G.num_classes for i in range(opts.n)]
            )
            y = torch.tensor(idx, device=self.device)
            labels = [self.labels[i] for i in idx]
        images = ((self.G(z, y).float() + 1) / 2).clamp(0, 1).cpu()
        return Samples(images=images, labels=labels)
