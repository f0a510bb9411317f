"""The options every fine-tuning run shares, and the encoder it starts from."""

from __future__ import annotations

import dataclasses
import math
import random
from pathlib import Path

from sqlalchemy.orm import Session

from genloom.errors import BadInput


@dataclasses.dataclass
class FinetuneConfig:
    epochs: float = 1.0
    batch_size: int = 16  # queries per step; in-batch negatives grow with it
    lr: float = 2e-5  # sentence-transformers' default for MiniLM fine-tuning
    warmup: float = 0.1  # share of the steps with a linearly rising learning rate
    negatives: int = 1  # mined hard negatives per query and step (besides the in-batch ones)
    max_length: int = 256  # tokens per passage (MiniLM was trained at 256)
    scale: float = 20.0  # bi-encoder: cosine similarities × scale are the logits (temperature 0.05)
    seed: int = 0
    steps: int | None = None  # optimisation steps; None: --epochs passes over the pairs
    calibration_questions: int = 300  # reader: held-out questions its abstention threshold is chosen on
    max_seconds: float | None = None  # reader: stop after this much training time (the schedule follows it)

    def check(self) -> None:
        if (
            (self.steps is not None and self.steps < 1)
            or self.epochs <= 0
            or self.batch_size < 1
            or self.lr <= 0
            or self.negatives < 0
        ):
            raise BadInput("need --steps >= 1, --epochs > 0, --batch-size >= 1, --lr > 0 and --negatives >= 0")
        if not 0 <= self.warmup < 1:
            raise BadInput(f"--warmup is a share of the steps, within [0, 1) (got {self.warmup})")

    def total_steps(self, n_records: int) -> int:
        return self.steps or math.ceil(self.epochs * math.ceil(n_records / self.batch_size))


def lr_at(step: int, total: int, config: FinetuneConfig) -> float:
    """Linear warm-up, then linear decay to 0 (as sentence-transformers' fit does)."""
    warm = max(1, int(total * config.warmup))
    if step < warm:
        return config.lr * (step + 1) / warm
    return config.lr * max(0.0, (total - step) / max(1, total - warm))


def base_encoder_dir(session: Session, ref: str | None) -> Path:
    """The encoder to start from: the shipped MiniLM (None), a local folder, or a registered NAME[@V]."""
    from genloom import embeddings
    from genloom.registry import model_dir

    if ref in (None, "", embeddings.DEFAULT_MODEL):
        return embeddings.model_path(None)
    return model_dir(session, ref)


def batches(records: list[dict], config: FinetuneConfig, total_steps: int):
    """`total_steps` batches of records, reshuffled (seeded) each time the records run out."""
    rng = random.Random(config.seed)
    order: list[int] = []
    for _ in range(total_steps):
        if len(order) < config.batch_size:
            more = list(range(len(records)))
            rng.shuffle(more)
            order += more
        batch, order = order[: config.batch_size], order[config.batch_size :]
        yield [records[i] for i in batch]


def optimizer_step(model, optimizer, loss) -> float:
    """One update: clear, backpropagate, clip the gradient norm at 1 (as sentence-transformers'
    fit does), step. Returns the loss as a float."""
    import torch

    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return loss.item()


def run_stats(losses: list[float], started: float) -> dict:
    """What a fine-tuning run reports: steps, seconds, the first loss and the mean of the last ten."""
    import time

    return {
        "steps": len(losses),
        "seconds": round(time.perf_counter() - started, 2),
        "loss_first": round(losses[0], 4) if losses else None,
        "loss_last": round(sum(losses[-10:]) / len(losses[-10:]), 4) if losses else None,
    }
