"""Optimisers shared by the architectures (one home for how genloom builds them)."""

from __future__ import annotations

from typing import Any


def fused_kwargs(device: str) -> dict[str, Any]:
    """{'fused': True} on CUDA: one multi-tensor kernel per step instead of several per parameter.

    Small networks (the MNIST VAE, a 10 M-parameter GPT) launch more optimiser kernels than
    forward and backward ones, so on a GPU this is launch overhead saved every step. Other
    devices keep torch's default (foreach) implementation."""
    return {"fused": True} if str(device).startswith("cuda") else {}


def adamw(params, *, lr: float, device: str, **kwargs: Any):
    """torch's AdamW, fused on CUDA."""
    import torch

    return torch.optim.AdamW(params, lr=lr, **kwargs, **fused_kwargs(device))
