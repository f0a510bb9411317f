"""A convolutional variational autoencoder (Kingma & Welling 2014) for images of any size.

The encoder halves the image with stride-2 convolutions down to about 4×4 (8×8 → 4×4,
28×28 → 7×7), a linear layer gives the posterior mean and log-variance, and the decoder
mirrors it with transposed convolutions (resizing to H×W exactly when the size is odd).
Likelihood: Bernoulli on [0, 1] pixels (the default, as in pytorch/examples' VAE) or
Gaussian with a fixed σ. Loss = reconstruction + β·KL; the reported validation metric is
the negative ELBO with β = 1, in nats per image. Class-conditional with --conditional
(one-hot label into encoder and decoder). `score` gives each item's negative ELBO (an
anomaly score), `interpolate` decodes the straight line between two items' latent means.
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
from genloom.training.optim import adamw


@dataclasses.dataclass
class VAEHyperparams:
    latent_dim: int = 16  # size of z
    channels: int = 32  # width of the first conv layer; doubles at each downsampling
    likelihood: str = "bernoulli"  # bernoulli (pixels in [0, 1]) | gaussian (fixed sigma)
    sigma: float = 0.1  # std of the Gaussian likelihood
    beta: float = 1.0  # weight of the KL term in training (β-VAE); the reported ELBO always uses 1
    weight_decay: float = 0.0


def _downsamplings(h: int, w: int) -> int:
    """How many stride-2 halvings bring the smaller side to about 4 (at least one)."""
    return max(1, int(math.floor(math.log2(max(min(h, w), 4) / 4))))


class ConvVAE(nn.Module):
    def __init__(self, shape: tuple[int, int, int], hp: VAEHyperparams, num_classes: int = 0):
        super().__init__()
        c, h, w = shape
        self.shape = shape
        self.hp = hp
        self.num_classes = num_classes
        d = _downsamplings(h, w)
        widths = [hp.channels * 2**i for i in range(d + 1)]
        enc: list[nn.Module] = [nn.Conv2d(c, widths[0], 3, padding=1), nn.SiLU()]
        for i in range(d):
            enc += [
                nn.Conv2d(widths[i], widths[i + 1], 4, stride=2, padding=1),
                nn.SiLU(),
                nn.Conv2d(widths[i + 1], widths[i + 1], 3, padding=1),
                nn.SiLU(),
            ]
        self.encoder = nn.Sequential(*enc)
        self.low = (widths[-1], math.ceil(h / 2**d), math.ceil(w / 2**d))
        flat = int(math.prod(self.low))
        self.to_stats = nn.Linear(flat + num_classes, 2 * hp.latent_dim)
        self.from_z = nn.Linear(hp.latent_dim + num_classes, flat)
        dec: list[nn.Module] = []
        for i in reversed(range(d)):
            dec += [
                nn.SiLU(),
                nn.ConvTranspose2d(widths[i + 1], widths[i], 4, stride=2, padding=1),
                nn.SiLU(),
                nn.Conv2d(widths[i], widths[i], 3, padding=1),
            ]
        dec += [nn.SiLU(), nn.Conv2d(widths[0], c, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)

    def _onehot(self, y: torch.Tensor | None, n: int, device) -> torch.Tensor | None:
        if not self.num_classes:
            return None
        if y is None:
            raise BadInput("a conditional VAE needs labels")
        return y if y.dtype.is_floating_point else F.one_hot(y.clamp(min=0), self.num_classes).float()

    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.encoder(x).flatten(1)
        cond = self._onehot(y, x.shape[0], x.device)
        if cond is not None:
            feats = torch.cat([feats, cond.to(feats.dtype)], 1)
        mu, logvar = self.to_stats(feats).chunk(2, dim=1)
        return mu, logvar.clamp(-12, 8)

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (Bernoulli) or means (Gaussian) of p(x | z), N×C×H×W."""
        cond = self._onehot(y, z.shape[0], z.device)
        if cond is not None:
            z = torch.cat([z, cond.to(z.dtype)], 1)
        out = self.decoder(self.from_z(z).view(-1, *self.low))
        if out.shape[-2:] != self.shape[1:]:
            out = F.interpolate(out, size=self.shape[1:], mode="bilinear", align_corners=False)
        return out

    def reconstruction_nll(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """−log p(x | z) per image, in nats."""
        out = out.float()
        if self.hp.likelihood == "bernoulli":
            return F.binary_cross_entropy_with_logits(out, x, reduction="none").flatten(1).sum(1)
        sigma = self.hp.sigma
        nll = 0.5 * ((x - out) / sigma) ** 2 + math.log(sigma) + 0.5 * math.log(2 * math.pi)
        return nll.flatten(1).sum(1)

    def forward(
        self,
        x: torch.Tensor,
        y: torch.Tensor | None = None,
        *,
        sample: bool = True,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(reconstruction NLL, KL) per image. sample=False decodes the posterior mean (deterministic scores)."""
        mu, logvar = self.encode(x, y)
        if sample:
            eps = torch.randn(mu.shape, device=mu.device, dtype=mu.dtype, generator=generator)
            z = mu + eps * torch.exp(0.5 * logvar)  # the reparameterisation trick
        else:
            z = mu
        kl = 0.5 * (mu.float() ** 2 + logvar.float().exp() - 1.0 - logvar.float()).sum(1)
        return self.reconstruction_nll(self.decode(z, y), x), kl

    def mean_image(self, out: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(out.float()) if self.hp.likelihood == "bernoulli" else out.float().clamp(0, 1)


class VAE(Architecture):
    name = "vae"
    modalities = ("image",)
    Hyperparams = VAEHyperparams
    train_options = frozenset({"conditional", "compile"})
    sample_options = frozenset({"label", "interpolate", "steps"})
    monitor = "val_neg_elbo"
    default_steps = 2000
    default_batch_size = 128
    default_lr = 1e-3
    score_name = "neg_elbo"

    def __init__(self, ctx, data, opts, hp: VAEHyperparams):
        super().__init__(ctx, data, opts, hp)
        if hp.likelihood not in ("bernoulli", "gaussian"):
            raise BadInput(f"--set likelihood={hp.likelihood}: use bernoulli or gaussian")
        if hp.latent_dim < 1 or hp.channels < 1:
            raise BadInput("--set latent_dim and channels must be positive")
        self.num_classes = data.num_classes if opts.conditional else 0
        self.net = ConvVAE(tuple(data.shape), hp, self.num_classes).to(ctx.device)
        self.model = ctx.ddp(ctx.maybe_compile(self.net))
        self.opt = adamw(self.net.parameters(), lr=opts.lr, weight_decay=hp.weight_decay, device=ctx.device)

    def modules(self):
        return {"net": self.net}

    def optimizers(self):
        return {"opt": self.opt}

    def _labels(self, batch):
        return batch.y.to(self.ctx.device) if self.num_classes else None

    def train_step(self, batch, step):
        x = batch.x.to(self.ctx.device, non_blocking=True)
        with self.ctx.autocast():
            rec, kl = self.model(x, self._labels(batch))
        loss = (rec + self.hp.beta * kl).mean()
        norm = self.ctx.backward_step(loss, self.opt)
        return {"loss": loss.detach(), "recon": rec.detach().mean(), "kl": kl.detach().mean(), "grad_norm": norm}

    def evaluate(self, source):
        total = rec_sum = kl_sum = 0.0
        gen = torch.Generator(device=self.ctx.device).manual_seed(1234)  # the same z noise at every evaluation
        split = "val" if source.info.split_counts.get("val") else "test"
        for batch in source.stream(split, batch_size=512):
            x = batch.x.to(self.ctx.device)
            rec, kl = self.net(x, self._labels(batch), generator=gen)
            rec_sum += float(rec.sum())
            kl_sum += float(kl.sum())
            total += len(batch)
        if not total:
            return {}
        return {"val_neg_elbo": (rec_sum + kl_sum) / total, "val_recon": rec_sum / total, "val_kl": kl_sum / total}

    def export(self):
        buf = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in self.net.state_dict().items()}, buf)
        return buf.getvalue(), {"hparams": dataclasses.asdict(self.hp), "num_classes": self.num_classes}

    # ---- inference
    @classmethod
    def load(cls, checkpoint: bytes, config: dict[str, Any], device: str) -> VAEModel:
        hp = VAEHyperparams(**config["hparams"])
        net = ConvVAE(tuple(config["shape"]), hp, int(config.get("num_classes", 0)))
        net.load_state_dict(torch.load(io.BytesIO(checkpoint), map_location="cpu", weights_only=True))
        return VAEModel(net.to(device).eval(), config, device)


class VAEModel:
    """A registered VAE, ready to sample, score and interpolate."""

    score_name = "neg_elbo"

    def __init__(self, net: ConvVAE, config: dict[str, Any], device: str):
        self.net, self.config, self.device = net, config, device
        self.labels: list[str] = list(config.get("label_names", []))

    def _condition(self, n: int, label: str | None):
        if not self.net.num_classes:
            return None, None
        idx = [self.labels.index(label)] * n if label is not None else [i % self.net.num_classes for i in range(n)]
        return torch.tensor(idx, device=self.device), [self.labels[i] for i in idx]

    @torch.no_grad()
    def sample(self, opts) -> Samples:
        gen = torch.Generator(device="cpu").manual_seed(opts.seed)
        z = torch.randn(opts.n, self.net.hp.latent_dim, generator=gen).to(self.device)
        y, labels = self._condition(opts.n, opts.label)
        images = self.net.mean_image(self.net.decode(z, y)).cpu()
        return Samples(images=images, labels=labels)

    @torch.no_grad()
    def score(self, batch) -> torch.Tensor:
        """Negative ELBO per item (posterior mean, so deterministic): higher = more anomalous."""
        y = batch.y.to(self.device) if self.net.num_classes else None
        rec, kl = self.net(batch.x.to(self.device), y, sample=False)
        return (rec + kl).cpu()

    @torch.no_grad()
    def interpolate(self, x_a: torch.Tensor, x_b: torch.Tensor, steps: int, labels=(None, None)) -> torch.Tensor:
        if steps < 2:
            raise BadInput(f"--steps must be at least 2 for an interpolation (got {steps})")
        if tuple(x_a.shape) != tuple(self.config["shape"]):
            raise BadInput(f"items are {tuple(x_a.shape)} but the model was trained on {tuple(self.config['shape'])}")
        ya = yb = None
        if self.net.num_classes:
            onehot = []
            for lab in labels:
                v = torch.zeros(self.net.num_classes, device=self.device)
                if lab in self.labels:
                    v[self.labels.index(lab)] = 1.0
                onehot.append(v[None])
            ya, yb = onehot
        mu_a, _ = self.net.encode(x_a[None].to(self.device), ya)
        mu_b, _ = self.net.encode(x_b[None].to(self.device), yb)
        t = torch.linspace(0, 1, steps, device=self.device)[:, None]
        z = (1 - t) * mu_a + t * mu_b
        y = (1 - t) * ya + t * yb if ya is not None and yb is not None else None
        return self.net.mean_image(self.net.decode(z, y)).cpu()
