"""Reranking: a cross-encoder rescores the top N of a search's hits, (query, passage) together.

    hits = search(session, q, collection="docs", k=max(k, depth))
    result = rerank(session, q, hits, "docs-reranker@2", depth=50)   # result.hits, result.ms

A reranker is a registered model (format hf-tar, architecture 'cross-encoder'; `genloom train
reranker` makes one, genloom.finetune) or a local Hugging Face folder of a
sequence-classification model with one output. Only the top `depth` hits are rescored, in
batches; the rest keep their order below them. The pair encoding (`encode_pairs`) is the one
training uses, so a model scores at query time exactly what it was trained on.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from genloom.db.models import Collection
from genloom.errors import BadInput

DEFAULT_DEPTH = 50
MAX_LENGTH = 256  # query + passage tokens; MiniLM's own limit for passages
_cache: dict[str, Any] = {}
_lock = threading.Lock()  # fast tokenizers are not thread-safe (see genloom.embeddings)


@dataclasses.dataclass
class RerankResult:
    hits: list
    ms: float
    model: str  # NAME@V or the folder
    depth: int


def passage_text(hit) -> str:
    """What the reranker reads of a hit: its title with the chunk text, as the embedder does."""
    return f"{hit.title}\n\n{hit.text}" if hit.title else hit.text


def encode_pairs(tokenizer, queries: list[str], passages: list[str], max_length: int = MAX_LENGTH):
    """Token ids of (query, passage) pairs; only the passage is cut when a pair is too long."""
    return tokenizer(
        queries, passages, padding=True, truncation="only_second", max_length=max_length, return_tensors="pt"
    )


def load_cross_encoder(directory: Path):
    """(model, tokenizer) of a one-output sequence-classification folder, in eval mode; cached."""
    key = str(Path(directory).resolve())
    with _lock:
        if key not in _cache:
            from transformers import AutoModelForSequenceClassification, AutoTokenizer
            from transformers.utils import logging as hf_logging

            from genloom.devices import configure_cpu_threads

            hf_logging.disable_progress_bar()
            configure_cpu_threads()  # torch's default (every core) crawls when another process shares them
            try:
                model = AutoModelForSequenceClassification.from_pretrained(key, local_files_only=True)
                tokenizer = AutoTokenizer.from_pretrained(key, local_files_only=True)
            except (OSError, ValueError) as exc:
                raise BadInput(f"cannot load reranker from {key}: {exc}") from None
            if model.config.num_labels != 1:
                raise BadInput(f"{key} is not a reranker: it has {model.config.num_labels} outputs, a reranker has 1")
            _cache[key] = (model.eval(), tokenizer)
        return _cache[key]


def score_pairs(directory: Path, query: str, passages: list[str], *, batch_size: int = 32) -> list[float]:
    """The cross-encoder's relevance score of each passage for the query (higher is better)."""
    import torch

    model, tokenizer = load_cross_encoder(directory)
    scores: list[float] = []
    with _lock, torch.inference_mode():
        for start in range(0, len(passages), batch_size):
            batch = passages[start : start + batch_size]
            logits = model(**encode_pairs(tokenizer, [query] * len(batch), batch)).logits
            scores.extend(float(v) for v in logits[:, 0])
    return scores


def rerank(
    session: Session, query: str, hits: list, model: str, *, depth: int = DEFAULT_DEPTH, batch_size: int = 32
) -> RerankResult:
    """Rescore the top `depth` hits with the reranker `model` (registry NAME[@V] or a folder)."""
    from genloom.registry import model_dir, resolve_model

    if depth < 1:
        raise BadInput(f"--rerank-depth must be at least 1 (got {depth})")
    started = time.perf_counter()
    directory = model_dir(session, model)
    label = str(directory)
    if not Path(model).expanduser().is_dir():
        row = resolve_model(session, model)
        label = f"{row.name}@{row.version}"
    head, tail = hits[:depth], hits[depth:]
    scores = score_pairs(directory, query, [passage_text(h) for h in head], batch_size=batch_size)
    for hit, score in zip(head, scores):
        hit.rerank_score = score
    head = sorted(head, key=lambda h: -h.rerank_score)
    return RerankResult(head + tail, (time.perf_counter() - started) * 1000.0, label, depth)


def clear_cache() -> None:
    with _lock:
        _cache.clear()


def collection_reranker(session: Session, collection: str) -> tuple[str | None, int | None]:
    """The collection's default reranker (NAME@V) and depth, set by `genloom collections set`."""
    import sqlalchemy as sa

    row = session.execute(
        sa.text(
            "SELECT m.name, m.version, c.rerank_depth FROM collections c "
            "LEFT JOIN models m ON m.id = c.reranker_model_id WHERE c.name = :n"
        ),
        {"n": collection},
    ).first()
    if row is None or row.name is None:
        return None, None
    return f"{row.name}@{row.version}", row.rerank_depth


def choose_reranker(
    session: Session,
    collection: str | Collection,
    rerank_model: str | None,
    rerank_depth: int | None,
    use_default: bool,
) -> tuple[str | None, int]:
    """(reranker or None, depth): the one given, else the collection's default unless use_default is False."""
    if rerank_depth is not None and rerank_depth < 1:
        raise BadInput(f"--rerank-depth must be at least 1 (got {rerank_depth})")
    if rerank_model is None and use_default:
        name = collection if isinstance(collection, str) else collection.name
        rerank_model, default_depth = collection_reranker(session, name)
        rerank_depth = rerank_depth or default_depth
    return rerank_model, rerank_depth or DEFAULT_DEPTH


def search_many_reranked(
    session: Session,
    queries: list[tuple[str, str]],
    *,
    collection: str,
    k: int = 10,
    rerank_model: str | None = None,
    rerank_depth: int | None = None,
    use_default: bool = True,
    **options: Any,
) -> Iterator[tuple[str, list, dict[str, Any]]]:
    """`search_many` (queries embedded in batches), each query's top `rerank_depth` hits then reranked by the
    reranker given or the collection's default: yields (query_id, top-k hits, {"rerank_ms", "reranker",
    "rerank_depth"}), with rerank_ms None when no reranker applies."""
    from genloom.retrieval.search import search_many

    rerank_model, depth = choose_reranker(session, collection, rerank_model, rerank_depth, use_default)
    fetched = max(k, depth) if rerank_model else k
    found = search_many(session, queries, collection=collection, k=fetched, **options)
    for (query_id, hits), (_, text) in zip(found, queries):  # in order: ids may repeat with other texts
        info: dict[str, Any] = {"rerank_ms": None}
        if rerank_model:
            result = rerank(session, text, hits, rerank_model, depth=depth)
            hits = result.hits
            info.update(rerank_ms=result.ms, reranker=result.model, rerank_depth=depth)
        yield query_id, hits[:k], info


def search_reranked(
    session: Session,
    query: str,
    *,
    collection: str | Collection,
    k: int = 10,
    rerank_model: str | None = None,
    rerank_depth: int | None = None,
    use_default: bool = True,
    **options: Any,
) -> tuple[list, dict[str, Any]]:
    """`search`, then the reranker (given, else the collection's default unless use_default is False)
    over its top `rerank_depth` hits. Returns (top-k hits, {"search_ms", "rerank_ms", "reranker", "rerank_depth"})."""
    from genloom.retrieval.search import search

    rerank_model, depth = choose_reranker(session, collection, rerank_model, rerank_depth, use_default)
    started = time.perf_counter()
    hits = search(session, query, collection=collection, k=max(k, depth) if rerank_model else k, **options)
    info: dict[str, Any] = {"search_ms": (time.perf_counter() - started) * 1000.0, "rerank_ms": None}
    if rerank_model:
        result = rerank(session, query, hits, rerank_model, depth=depth)
        hits = result.hits
        info.update(rerank_ms=result.ms, reranker=result.model, rerank_depth=depth)
    return hits[:k], info
