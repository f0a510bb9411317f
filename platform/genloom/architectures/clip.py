"""A CLIP-style contrastive image–text model (Radford et al. 2021), small enough for digits.

    image → small CNN → projection head → e_img ∈ ℝ^d, ‖e_img‖ = 1
    caption → frozen MiniLM (the shipped sentence encoder) → projection head → e_txt ∈ ℝ^d
    logits = exp(τ) · e_img · e_txtᵀ,   loss = ½ (CE(logits, T) + CE(logitsᵀ, Tᵀ))

τ is learned (initialised at log 1/0.07 and clamped at log 100, as in CLIP). With ten
classes, a batch holds many images of the same class, so the target T of row i spreads over
every caption of i's class (a multi-positive InfoNCE; one-hot T would call a "seven" caption
a negative for every other seven in the batch). An item's caption is its stored one (this
dataset version's, `genloom datasets caption`), else a fresh phrasing of its label per step
(captions.py); items sharing a stored caption are positives of each other.

Used for retrieval (`genloom eval clip`: text→image and image→text top-1) and to steer
diffusion (`genloom sample --guide clip:NAME@V`): guidance follows the gradient of
`CLIPModel.similarity`, the cosine between an image and a prompt.
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
from genloom.training.architecture import Architecture
from genloom.training.optim import adamw

TEXT_DIM = 384  # all-MiniLM-L6-v2
MAX_LOGIT_SCALE = math.log(100.0)


@dataclasses.dataclass
class CLIPHyperparams:
    embed_dim: int = 64  # the shared image–text space
    channels: int = 32  # image encoder width; doubles per stride-2 stage
    text_hidden: int = 256  # hidden width of the text projection head
    init_temperature: float = 0.07
    weight_decay: float = 0.01
    eval_items: int = 1000  # val images per evaluation


class ImageEncoder(nn.Module):
    """Three conv stages (the last two stride 2), global average pooling, a linear projection head."""

    def __init__(self, channels_in: int, width: int, embed_dim: int):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(channels_in, w, 3, padding=1),
            nn.GroupNorm(8, w),
            nn.SiLU(),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1),
            nn.GroupNorm(8, 2 * w),
            nn.SiLU(),
            nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1),
            nn.GroupNorm(8, 4 * w),
            nn.SiLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(4 * w, embed_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] → unit vectors."""
        return F.normalize(self.head(self.features(images * 2 - 1)), dim=-1)


class TextHead(nn.Module):
    """Projection of a (frozen) MiniLM sentence embedding into the shared space."""

    def __init__(self, hidden: int, embed_dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(TEXT_DIM, hidden), nn.GELU(), nn.Linear(hidden, embed_dim))

    def forward(self, sentence_embeds: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.mlp(sentence_embeds), dim=-1)


class CLIPNet(nn.Module):
    def __init__(self, channels_in: int, hp: CLIPHyperparams):
        super().__init__()
        self.image = ImageEncoder(channels_in, hp.channels, hp.embed_dim)
        self.text = TextHead(hp.text_hidden, hp.embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / hp.init_temperature)))

    def loss(self, images: torch.Tensor, sentence_embeds: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        """Symmetric InfoNCE; `groups[i]` names the caption class of pair i (same group = positive)."""
        e_img, e_txt = self.image(images), self.text(sentence_embeds)
        logits = self.logit_scale.clamp(max=MAX_LOGIT_SCALE).exp() * e_img @ e_txt.T
        same = (groups[:, None] == groups[None, :]).float()
        targets = same / same.sum(1, keepdim=True)
        return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))


def class_captions(labels: list[str]) -> list[str]:
    """One caption per label, the first phrasing ("a handwritten seven"): what retrieval is scored on."""
    from genloom.architectures.captions import caption

    return [caption(label, 0) for label in labels]


def retrieval_accuracy(e_img: torch.Tensor, y: torch.Tensor, e_txt: torch.Tensor) -> dict[str, float]:
    """Top-1 retrieval between N images (labels y) and one caption per class (row k = class k).

    image→text: the share of images whose most similar caption is their class's.
    text→image: the share of captions whose most similar image is of their class."""
    sims = e_img @ e_txt.T  # (N, classes)
    i2t = float((sims.argmax(1) == y).float().mean())
    present = [k for k in range(e_txt.shape[0]) if bool((y == k).any())]
    t2i = sum(int(y[sims[:, k].argmax()] == k) for k in present) / max(1, len(present))
    return {"image_to_text_top1": i2t, "text_to_image_top1": t2i}


class CLIP(Architecture):
    name = "clip"
    modalities = ("image",)
    Hyperparams = CLIPHyperparams
    monitor = "val_loss"
    default_steps = 1000
    default_batch_size = 128
    default_lr = 1e-3

    def __init__(self, ctx, data, opts, hp: CLIPHyperparams):
        super().__init__(ctx, data, opts, hp)
        if hp.embed_dim < 1 or hp.channels < 1 or hp.channels % 8 or hp.init_temperature <= 0:
            raise BadInput("--set embed_dim must be positive, channels a multiple of 8, init_temperature > 0")
        from genloom.architectures.captions import CaptionTable

        self.net = CLIPNet(data.shape[0], hp).to(ctx.device)
        # the items' stored captions, else every phrasing of their labels, embedded once with MiniLM
        self.captions = CaptionTable(data.version_id, list(data.label_names), ctx.device)
        self.opt = adamw(self.net.parameters(), lr=opts.lr, weight_decay=hp.weight_decay, device=ctx.device)
        self.gen = ctx.generator(offset=11)

    def modules(self):
        return {"net": self.net}

    def optimizers(self):
        return {"opt": self.opt}

    def _pairs(self, batch, generator):
        text, groups = self.captions.lookup(batch.item_ids, batch.y, generator)
        return batch.x.to(self.ctx.device), text, groups

    def train_step(self, batch, step):
        images, text, y = self._pairs(batch, None)
        with self.ctx.autocast():
            loss = self.net.loss(images, text, y)  # not DDP-wrapped: backward_step all-reduces the grads
        norm = self.ctx.backward_step(loss, self.opt)
        return {"loss": loss.detach(), "temperature": (-self.net.logit_scale.detach()).exp(), "grad_norm": norm}

    def evaluate(self, source):
        split = "val" if source.info.split_counts.get("val") else "train"
        batch = source.load(split, limit=self.hp.eval_items)
        if not len(batch):
            return {}
        images, text, groups = self._pairs(batch, torch.Generator().manual_seed(1234))
        metrics = {"val_loss": float(self.net.loss(images, text, groups))}
        y = batch.y.to(self.ctx.device)
        if self.captions.by_label is not None and bool((y >= 0).all()):  # retrieval over the class captions
            e_txt = self.net.text(self.captions.by_label[:, 0])
            metrics.update({f"val_{k}": v for k, v in retrieval_accuracy(self.net.image(images), y, e_txt).items()})
        return metrics

    def export(self):
        buf = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in self.net.state_dict().items()}, buf)
        return buf.getvalue(), {"hparams": dataclasses.asdict(self.hp)}

    @classmethod
    def load(cls, checkpoint: bytes, config: dict[str, Any], device: str) -> CLIPModel:
        net = CLIPNet(int(config["shape"][0]), CLIPHyperparams(**config["hparams"]))
        net.load_state_dict(torch.load(io.BytesIO(checkpoint), map_location="cpu", weights_only=True))
        return CLIPModel(net.to(device).eval(), config, device)


class CLIPModel:
    """A registered CLIP model: embeds images and prompts, scores retrieval, steers diffusion."""

    def __init__(self, net: CLIPNet, config: dict[str, Any], device: str):
        self.net, self.config, self.device = net, config, device
        self.labels: list[str] = list(config.get("label_names", []))
        self.shape = tuple(config["shape"])

    def sample(self, opts):
        raise BadInput(
            "clip models do not sample: use one with `genloom eval clip` or `genloom sample --guide clip:NAME@V`"
        )

    @torch.no_grad()
    def embed_texts(self, prompts: list[str]) -> torch.Tensor:
        from genloom.architectures.captions import embed_prompts

        return self.net.text(embed_prompts(prompts).to(self.device))

    @torch.no_grad()
    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.net.image(chunk.to(self.device)) for chunk in images.split(512)])

    def check_images(self, shape: tuple[int, ...], what: str) -> None:
        if tuple(shape) != self.shape:
            raise BadInput(
                f"{what} makes {'×'.join(map(str, shape))} images but the clip model was trained on "
                f"{'×'.join(map(str, self.shape))}"
            )

    def similarity(self, images: torch.Tensor, prompt_embeds: torch.Tensor) -> torch.Tensor:
        """cos(e_img(image_i), e_txt_i) per image, differentiable: guidance takes its gradient."""
        return (self.net.image(images) * prompt_embeds).sum(-1)

    def guide(self, prompts: list[str], scale: float, to_image):
        """The `guide(x_t, x̂_0)` hook of `Diffusion.sample`: scale · ∇_{x̂_0} cos(image(x̂_0), prompt).

        `to_image` maps the sampler's x̂_0 to images in [0, 1] (pixels: (x + 1)/2; latents: the
        autoencoder's decoder), so the gradient flows back through the decoder into the latent.
        The gradient is taken at x̂_0, the denoised estimate, where a classifier trained on clean
        images is meaningful (as CLIP-guided diffusion does); scale 0 adds exactly nothing."""
        text = self.embed_texts(prompts)

        def gradient(x_t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
            with torch.enable_grad():
                x0 = x0.detach().requires_grad_(True)
                (grad,) = torch.autograd.grad(self.similarity(to_image(x0), text).sum(), x0)
            return scale * grad

        return gradient
