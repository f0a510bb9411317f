"""The feature network: a small CNN classifier whose penultimate layer replaces Inception.

Inception-v3 weights cannot be downloaded, and Inception features of 8×8 or 28×28
digits would be poor anyway; what FID-like metrics need is a network that knows the
data. Two conv blocks (conv-conv-pool, as in the classic Keras MNIST CNN that reaches
≥ 99 % on MNIST) work for any image of at least 8×8; adaptive pooling to 3×3 gives every
input size the same head. `features` (128-d, after ReLU like Inception's pool3) feed
FID/KID/PRDC; `logits` give label distribution and conditional accuracy.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn


@dataclasses.dataclass
class FeatureNetConfig:
    channels: int = 1
    height: int = 28
    width: int = 28
    num_classes: int = 10
    base: int = 32  # channels of the first block; the second has twice as many
    feature_dim: int = 128  # penultimate width: the dimension of FID's Gaussians
    dropout: float = 0.25


class FeatureNet(nn.Module):
    def __init__(self, cfg: FeatureNetConfig):
        super().__init__()
        self.cfg = cfg
        b = cfg.base
        self.body = nn.Sequential(
            nn.Conv2d(cfg.channels, b, 3, padding=1),
            nn.BatchNorm2d(b),
            nn.ReLU(),
            nn.Conv2d(b, b, 3, padding=1),
            nn.BatchNorm2d(b),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(b, 2 * b, 3, padding=1),
            nn.BatchNorm2d(2 * b),
            nn.ReLU(),
            nn.Conv2d(2 * b, 2 * b, 3, padding=1),
            nn.BatchNorm2d(2 * b),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(3),  # 8×8 → 2×2 → 3×3, 28×28 → 7×7 → 3×3: one head for all sizes
            nn.Flatten(),
            nn.Dropout(cfg.dropout),
            nn.Linear(2 * b * 9, cfg.feature_dim),
            nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(cfg.feature_dim, cfg.num_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        assert x.ndim == 4 and x.shape[1:] == (self.cfg.channels, self.cfg.height, self.cfg.width), (
            f"expected N×{self.cfg.channels}×{self.cfg.height}×{self.cfg.width}, got {tuple(x.shape)}"
        )
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
