"""VAE-GAN (Larsen et al. 2016): a VAE whose decoder is also trained against a discriminator.

The VAE (vae.py's `ConvVAE`) keeps its stable latent space: the encoder learns from
reconstruction + β·KL alone. The decoder learns from the reconstruction and from an
adversarial term: a spectral-norm discriminator (gan.py's `Discriminator`, Miyato et al.
2018) sees real images, decoded reconstructions and decoded prior samples z ~ N(0, I), and
the decoder is pushed to make both kinds look real (non-saturating loss). That adversarial
term is what sharpens the blurry means a VAE decodes from the prior.

Balanced updates: the discriminator steps only while it is not already winning (its
accuracy on the batch below `d_max_accuracy`, the equilibrium trick of Larsen et al. §3);
`d_skipped` logs how often it sat out. Logged separately per step: `recon`, `kl`, `adv`
(the decoder's adversarial loss) and `loss_d`.

The registered model is a plain VAE checkpoint (`ConvVAE` weights + its hyperparameters):
sampling, scoring, interpolation and latent diffusion load it exactly as they load a VAE.
"""

from __future__ import annotations

import dataclasses
import io

import torch
import torch.nn.functional as F

from genloom.architectures.gan import Discriminator, GANHyperparams
from genloom.architectures.vae import VAE, ConvVAE, VAEHyperparams, VAEModel
from genloom.errors import BadInput
from genloom.training.optim import adamw


@dataclasses.dataclass
class VAEGANHyperparams:
    latent_dim: int = 16
    channels: int = 32  # VAE width; doubles at each downsampling
    likelihood: str = "bernoulli"
    sigma: float = 0.1
    beta: float = 1.0  # KL weight
    d_channels: int = 32  # discriminator width
    adv_weight: float = 5.0  # weight of the decoder's adversarial loss next to the reconstruction (nats per image)
    d_lr_ratio: float = 1.0  # discriminator LR = lr × this
    d_max_accuracy: float = 0.9  # the discriminator steps only while its batch accuracy is below this
    weight_decay: float = 0.0

    def vae(self) -> VAEHyperparams:
        return VAEHyperparams(
            latent_dim=self.latent_dim,
            channels=self.channels,
            likelihood=self.likelihood,
            sigma=self.sigma,
            beta=self.beta,
            weight_decay=self.weight_decay,
        )


class VAEGAN(VAE):
    name = "vae-gan"
    Hyperparams = VAEGANHyperparams  # type: ignore[assignment]  # its own --set keys
    train_options = frozenset({"compile"})
    sample_options = frozenset({"interpolate", "steps"})
    monitor = "val_recon"  # the ELBO is not what the adversarial term optimises; reconstruction is
    default_lr = 5e-4

    def __init__(self, ctx, data, opts, hp: VAEGANHyperparams):
        if hp.adv_weight < 0 or not 0 < hp.d_max_accuracy <= 1:
            raise BadInput("--set adv_weight must be ≥ 0 and d_max_accuracy in (0, 1]")
        if hp.d_channels < 1:
            raise BadInput("--set d_channels must be positive")
        self.vae_hp = hp.vae()
        super().__init__(ctx, data, opts, self.vae_hp)
        self.hp = hp  # this class's own hyperparameters from here on (super() set the VAE's)
        self.D = Discriminator(tuple(data.shape), GANHyperparams(channels=hp.d_channels, spectral_norm=True)).to(
            ctx.device
        )
        self.opt = adamw(self.net.parameters(), lr=opts.lr, weight_decay=hp.weight_decay, device=ctx.device)
        self.opt_d = adamw(self.D.parameters(), lr=opts.lr * hp.d_lr_ratio, betas=(0.5, 0.999), device=ctx.device)
        self.gen = ctx.generator(offset=7)

    def modules(self):
        return {"net": self.net, "D": self.D}

    def optimizers(self):
        return {"opt": self.opt, "opt_d": self.opt_d}

    def train_step(self, batch, step):
        ctx, net, hp = self.ctx, self.net, self.hp
        x = batch.x.to(ctx.device, non_blocking=True)
        real = x * 2 - 1
        # 1. The VAE loss (it alone trains the encoder): reconstruction + β·KL, nats per image.
        mu, logvar = net.encode(x)
        z = mu + torch.randn(mu.shape, device=mu.device, generator=self.gen) * torch.exp(0.5 * logvar)
        rec = net.reconstruction_nll(net.decode(z), x)
        kl = 0.5 * (mu**2 + logvar.exp() - 1.0 - logvar).sum(1)
        # 2. What the discriminator judges: reconstructions (decoded from z.detach(), so the
        # adversarial gradient reaches the decoder only) and decoded prior samples.
        z_prior = torch.randn(mu.shape, device=mu.device, generator=self.gen)
        fakes = net.mean_image(net.decode(torch.cat([z.detach(), z_prior]))) * 2 - 1

        # 3. Discriminator step on real vs fake, unless it is already winning (balanced updates).
        s_real, s_fake = self.D(real), self.D(fakes.detach())
        loss_d = F.softplus(-s_real).mean() + F.softplus(s_fake).mean()
        with torch.no_grad():
            accuracy = 0.5 * ((s_real > 0).float().mean() + (s_fake < 0).float().mean())
        skipped = bool(accuracy >= hp.d_max_accuracy)
        if skipped:
            self.opt_d.zero_grad(set_to_none=True)
        else:
            ctx.backward_step(loss_d, self.opt_d)

        # 4. VAE step: the decoder also gets the non-saturating adversarial loss.
        adv = F.softplus(-self.D(fakes)).mean()
        loss = (rec + hp.beta * kl).mean() + hp.adv_weight * adv
        norm = ctx.backward_step(loss, self.opt)
        self.D.zero_grad(set_to_none=True)  # the VAE's backward filled D's grads too
        return {
            "loss": loss.detach(),
            "recon": rec.detach().mean(),
            "kl": kl.detach().mean(),
            "adv": adv.detach(),
            "loss_d": loss_d.detach(),
            "d_accuracy": accuracy,
            "d_skipped": torch.tensor(float(skipped)),
            "grad_norm": norm,
        }

    def export(self):
        buf = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in self.net.state_dict().items()}, buf)
        return buf.getvalue(), {
            "hparams": dataclasses.asdict(self.vae_hp),
            "num_classes": 0,
            "adversarial": dataclasses.asdict(self.hp),
        }

    @classmethod
    def load(cls, checkpoint, config, device) -> VAEModel:
        net = ConvVAE(tuple(config["shape"]), VAEHyperparams(**config["hparams"]), 0)
        net.load_state_dict(torch.load(io.BytesIO(checkpoint), map_location="cpu", weights_only=True))
        return VAEModel(net.to(device).eval(), config, device)
