"""A small U-Net ε-network for diffusion on small images (8×8 digits, 28×28 MNIST).

Time enters as a sinusoidal embedding (Vaswani et al. 2017, as in Ho et al. 2020) passed
through an MLP and added inside every residual block. Two optional conditions are added
to the same embedding:
- a class label (nn.Embedding with one extra row, the *null class*, used when the
  condition is dropped for classifier-free guidance);
- a text-condition vector (a 384-d MiniLM sentence embedding) projected into the time
  embedding, with a learned *null text* vector for the dropped condition.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn


@dataclasses.dataclass
class UNetConfig:
    image_channels: int = 1
    image_size: int = 8
    base_channels: int = 32
    # one level per entry; every level but the last halves the resolution (28→14→7, 8→4→2)
    channel_mults: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    num_classes: int | None = None  # class-conditional when set; row `num_classes` is the null class
    text_embed_dim: int | None = None  # text-conditional when set (384 for all-MiniLM-L6-v2)
    attention: bool = True  # one self-attention block at the bottleneck (cheap there: ≤ 7×7)
    dropout: float = 0.0
    # FiLM-style conditioning (Nichol & Dhariwal 2021, "use_scale_shift_norm"): the embedding scales and
    # shifts each block's normalised features instead of only being added; conditions steer much harder.
    scale_shift: bool = True

    @property
    def time_embed_dim(self) -> int:
        return 4 * self.base_channels


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """[sin(t·ω_i), cos(t·ω_i)] with ω_i = max_period^(−i/(dim/2)) (Transformer positional encoding)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None, :]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=-1)


def _groups(channels: int) -> int:
    return math.gcd(8, channels)


class ResBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, temb_dim: int, dropout: float, scale_shift: bool = False):
        super().__init__()
        self.scale_shift = scale_shift
        self.norm1 = nn.GroupNorm(_groups(in_ch), in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.temb = nn.Linear(temb_dim, 2 * out_ch if scale_shift else out_ch)
        self.norm2 = nn.GroupNorm(_groups(out_ch), out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        emb = self.temb(F.silu(temb))[:, :, None, None]
        if self.scale_shift:
            scale, shift = emb.chunk(2, dim=1)
            h = self.norm2(h) * (1 + scale) + shift
        else:
            h = self.norm2(h + emb)
        h = self.conv2(self.dropout(F.silu(h)))
        return h + self.skip(x)


class SelfAttention(nn.Module):
    def __init__(self, channels: int, heads: int = 4):
        super().__init__()
        assert channels % heads == 0, f"attention channels {channels} must divide into {heads} heads"
        self.heads = heads
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).transpose(-1, -2).unbind(1)
        out = F.scaled_dot_product_attention(q, k, v)  # (b, heads, hw, c/heads)
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class UNet(nn.Module):
    text_center: torch.Tensor  # a buffer (text conditioning only), registered in __init__

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = c = config
        temb_dim = c.time_embed_dim
        self.time_mlp = nn.Sequential(nn.Linear(c.base_channels, temb_dim), nn.SiLU(), nn.Linear(temb_dim, temb_dim))
        if c.num_classes is not None:
            self.class_embed = nn.Embedding(c.num_classes + 1, temb_dim)
        if c.text_embed_dim is not None:
            self.text_proj = nn.Sequential(
                nn.Linear(c.text_embed_dim, temb_dim), nn.SiLU(), nn.Linear(temb_dim, temb_dim)
            )
            self.null_text = nn.Parameter(torch.zeros(temb_dim))
            # Captions of different labels share most of their embedding ("a handwritten …"); subtracting
            # their mean (set once from the caption table, saved with the weights) leaves what tells them apart.
            self.register_buffer("text_center", torch.zeros(c.text_embed_dim))

        self.conv_in = nn.Conv2d(c.image_channels, c.base_channels, 3, padding=1)
        channels = [c.base_channels]
        ch = c.base_channels
        self.down = nn.ModuleList()
        for level, mult in enumerate(c.channel_mults):
            for _ in range(c.num_res_blocks):
                self.down.append(ResBlock(ch, c.base_channels * mult, temb_dim, c.dropout, c.scale_shift))
                ch = c.base_channels * mult
                channels.append(ch)
            if level != len(c.channel_mults) - 1:
                self.down.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))  # halve the resolution
                channels.append(ch)

        self.mid1 = ResBlock(ch, ch, temb_dim, c.dropout, c.scale_shift)
        self.mid_attn = SelfAttention(ch) if c.attention else nn.Identity()
        self.mid2 = ResBlock(ch, ch, temb_dim, c.dropout, c.scale_shift)

        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(c.channel_mults))):
            for _ in range(c.num_res_blocks + 1):
                self.up.append(
                    ResBlock(ch + channels.pop(), c.base_channels * mult, temb_dim, c.dropout, c.scale_shift)
                )
                ch = c.base_channels * mult
            if level != 0:
                self.up.append(nn.Conv2d(ch, ch, 3, padding=1))  # after a nearest-neighbour upsample
        self.norm_out = nn.GroupNorm(_groups(ch), ch)
        self.conv_out = nn.Conv2d(ch, c.image_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)  # start as ε̂ = 0: a stable first step
        if self.conv_out.bias is not None:  # always: Conv2d has a bias by default
            nn.init.zeros_(self.conv_out.bias)

    @property
    def null_class(self) -> int:
        return self.config.num_classes  # type: ignore[return-value]

    def embed_condition(
        self,
        t: torch.Tensor,
        class_labels: torch.Tensor | None = None,
        text_embeds: torch.Tensor | None = None,
        keep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Time embedding plus the conditions; where `keep` is False the condition is the null one."""
        temb = self.time_mlp(sinusoidal_embedding(t, self.config.base_channels))
        if self.config.num_classes is not None:
            if class_labels is None:
                class_labels = torch.full((t.shape[0],), self.null_class, device=t.device, dtype=torch.long)
            elif keep is not None:
                class_labels = torch.where(keep, class_labels, torch.full_like(class_labels, self.null_class))
            temb = temb + self.class_embed(class_labels)
        if self.config.text_embed_dim is not None:
            if text_embeds is None:
                temb = temb + self.null_text
            else:
                projected = self.text_proj(text_embeds.to(temb.dtype) - self.text_center)
                if keep is not None:
                    projected = torch.where(keep[:, None], projected, self.null_text.expand_as(projected))
                temb = temb + projected
        return temb

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        class_labels: torch.Tensor | None = None,
        text_embeds: torch.Tensor | None = None,
        keep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """ε̂(x_t, t, c): same shape as x. `t` is (B,) integer timesteps."""
        temb = self.embed_condition(t, class_labels, text_embeds, keep)
        h = self.conv_in(x)
        skips = [h]
        for layer in self.down:
            h = layer(h, temb) if isinstance(layer, ResBlock) else layer(h)
            skips.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, temb)), temb)
        for layer in self.up:
            if isinstance(layer, ResBlock):
                h = layer(torch.cat([h, skips.pop()], dim=1), temb)
            else:
                # upsample to the size of the skip it meets next (7→14→28, and odd sizes too)
                h = layer(F.interpolate(h, size=skips[-1].shape[-2:], mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))
