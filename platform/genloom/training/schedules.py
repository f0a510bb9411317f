"""Learning-rate schedules, kept apart from the networks (nanoGPT's get_lr, as a LambdaLR factor)."""

from __future__ import annotations

import math


def warmup_cosine(step: int, *, total: int, warmup: int, min_ratio: float = 0.1) -> float:
    """Multiplier of the base LR at `step`."""
    # 1. linear warmup from ~0 to 1 over `warmup` steps
    if step < warmup:
        return (step + 1) / (warmup + 1)
    # 2. after the budget, stay at the floor
    if step >= total:
        return min_ratio
    # 3. in between, cosine from 1 down to min_ratio
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + 0.5 * (1.0 - min_ratio) * (1.0 + math.cos(math.pi * progress))


def warmup_constant(step: int, *, total: int, warmup: int, min_ratio: float = 0.1) -> float:
    return (step + 1) / (warmup + 1) if step < warmup else 1.0


SCHEDULES = {"cosine": warmup_cosine, "constant": warmup_constant}


def make_scheduler(optimizer, name: str, *, total: int, warmup: int, min_ratio: float):
    import functools

    import torch

    from genloom.errors import BadInput

    if name not in SCHEDULES:
        raise BadInput(f"unknown lr_schedule {name!r}: use {' or '.join(SCHEDULES)}")
    fn = functools.partial(SCHEDULES[name], total=total, warmup=warmup, min_ratio=min_ratio)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)
