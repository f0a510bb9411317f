"""The embedder: a sentence encoder fine-tuned with in-batch negatives (MultipleNegativesRankingLoss).

For a batch of B (query, positive, hard negatives) records, every query is scored against every
passage in the batch (the B positives and the mined negatives): cosine × scale are the logits,
and the loss is cross-entropy with the query's own positive as the class. Each query thus
learns against B - 1 + B·negatives wrong passages at the cost of one forward pass per text
(Henderson et al. 2017; Karpukhin et al. 2020, DPR). A passage that is also another query's
positive in the batch (two judgements of one document) is masked, not counted as wrong.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from genloom.finetune.config import FinetuneConfig, batches, lr_at, optimizer_step, run_stats


def train_bi_encoder(
    base: Path,
    records: list[dict],
    out: Path,
    config: FinetuneConfig,
    progress: Callable[[int, int, float], None] | None = None,
) -> dict:
    """Fine-tune the sentence-transformers model in `base` on the pair records; save it to `out`.

    progress(step, total, loss) after every step. Returns {"steps", "seconds", "loss_first", "loss_last"}.
    """
    import torch
    import torch.nn.functional as F
    from sentence_transformers import SentenceTransformer

    config.check()
    torch.manual_seed(config.seed)
    model = SentenceTransformer(str(base), device="cpu", local_files_only=True)
    reads = model.max_seq_length  # what the saved model reads at embed time: the base's, not the training cut
    model.max_seq_length = min(model.max_seq_length or config.max_length, config.max_length)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr)

    def encode(texts: list[str]):
        features = (getattr(model, "preprocess", None) or model.tokenize)(texts)  # tokenize: before ST 6
        return F.normalize(model(dict(features))["sentence_embedding"], dim=-1)

    total = config.total_steps(len(records))
    started = time.perf_counter()
    losses: list[float] = []
    for step, batch in enumerate(batches(records, config, total)):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, total, config)
        passages = [r["positive"] for r in batch]
        passage_ids = [r.get("positive_id") for r in batch]
        for r in batch:
            for text, pid in list(zip(r.get("negatives", []), r.get("negative_ids", [])))[: config.negatives]:
                passages.append(text)
                passage_ids.append(pid)
        q = encode([r["query"] for r in batch])
        d = encode(passages)
        logits = config.scale * q @ d.T  # (B, B + negatives)
        # 1. mask passages that are relevant to a query but are not its own column
        own = [r.get("positive_id") for r in batch]
        mask = torch.zeros_like(logits, dtype=torch.bool)
        for i, rec in enumerate(batch):
            for j, pid in enumerate(passage_ids):
                if j != i and pid is not None and pid == own[i] and rec.get("positive_id") is not None:
                    mask[i, j] = True
        logits = logits.masked_fill(mask, float("-inf"))
        # 2. cross-entropy: the query's own positive (column i) is the right class
        loss = F.cross_entropy(logits, torch.arange(len(batch)))
        losses.append(optimizer_step(model, optimizer, loss))
        if progress:
            progress(step + 1, total, losses[-1])
    model.eval()
    # Training may cut passages short (--set max_length=128) to save time; the saved model must still
    # read whole chunks, or every passage it embeds is truncated where the frozen model's is not.
    model.max_seq_length = reads
    model.save(str(out))
    return run_stats(losses, started)
