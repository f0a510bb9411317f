"""The reranker: a cross-encoder initialised from the sentence encoder's own weights.

The encoder's transformer (MiniLM's BERT layers) reads query and passage together, and a fresh
linear head on its [CLS] state gives one relevance logit (Nogueira & Cho 2019, monoBERT). It is
trained listwise: for each query, its positive and its hard negatives (then other queries'
positives from the batch, when it has too few) are one softmax, the positive the right class.
The pair encoding is genloom.retrieval.rerank.encode_pairs, the one used at query time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from genloom.finetune.config import FinetuneConfig, batches, lr_at, optimizer_step, run_stats


def train_cross_encoder(
    base: Path,
    records: list[dict],
    out: Path,
    config: FinetuneConfig,
    progress: Callable[[int, int, float], None] | None = None,
) -> dict:
    """Train a reranker from the encoder in `base` on the pair records; save a HF folder to `out`."""
    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from genloom.devices import configure_cpu_threads
    from genloom.retrieval.rerank import encode_pairs

    config.check()
    configure_cpu_threads()  # torch's default (every core) crawls when other processes share them
    torch.manual_seed(config.seed)
    hf_logging.set_verbosity_error()  # "some weights were newly initialised": the head, on purpose
    model = AutoModelForSequenceClassification.from_pretrained(str(base), num_labels=1, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(str(base), local_files_only=True)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr)
    per_query = 1 + max(1, config.negatives)  # the positive and at least one wrong passage
    total = config.total_steps(len(records))
    started = time.perf_counter()
    losses: list[float] = []
    for step, batch in enumerate(batches(records, config, total)):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, total, config)
        queries, passages = [], []
        for i, r in enumerate(batch):
            candidates = [r["positive"], *r.get("negatives", [])[: config.negatives]]
            others = [o["positive"] for j, o in enumerate(batch) if j != i and o["positive"] != r["positive"]]
            candidates += others[: per_query - len(candidates)]
            while len(candidates) < per_query:  # a batch of one with no negatives: repeat, masked below
                candidates.append("")
            queries += [r["query"]] * per_query
            passages += candidates
        logits = model(**encode_pairs(tokenizer, queries, passages, config.max_length)).logits.view(-1, per_query)
        logits = logits.masked_fill(torch.tensor([[p == "" for p in passages]]).view(-1, per_query), float("-inf"))
        loss = F.cross_entropy(logits, torch.zeros(len(batch), dtype=torch.long))
        losses.append(optimizer_step(model, optimizer, loss))
        if progress:
            progress(step + 1, total, losses[-1])
    model.eval()
    model.config.genloom_role = "reranker"
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return run_stats(losses, started)
