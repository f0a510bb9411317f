"""Pick the compute device: CUDA, then Apple's MPS, then the CPU."""

from __future__ import annotations

from genloom.errors import BadInput


def resolve_device(requested: str | None = "auto") -> str:
    import torch

    if requested in (None, "", "auto"):
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise BadInput(f"device {requested!r} requested but CUDA is not available; use --device cpu or auto")
    if requested == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise BadInput("device 'mps' requested but MPS is not available; use --device cpu or auto")
    if requested not in ("cpu", "mps") and not requested.startswith("cuda"):
        raise BadInput(f"unknown device {requested!r}: use auto, cpu, cuda, cuda:N or mps")
    return requested
