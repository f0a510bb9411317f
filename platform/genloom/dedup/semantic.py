"""Semantic near-duplicates (SemDeDup-style, Abbas et al. 2023): embeddings in pgvector,
neighbours within a cosine threshold through an HNSW index, one representative kept.

Embeddings are rows of `item_embeddings` (items are content-addressed, so an item is
embedded once per embedder and reused by every version that holds it). Each embedder
has a partial expression HNSW index, `((embedding::vector(D)) vector_cosine_ops) WHERE
embedder_id = E`, created on first use. Neighbour search is one SQL statement per batch
of items (a LATERAL k-NN per item); pgvector's iterative index scan keeps returning
rows when the candidate filter rejects some.

Embedders:
- `text`: the sentence model of `genloom/embeddings.py` (all-MiniLM-L6-v2 by default);
- `features`: the dataset's feature network (`evaluation/features.py`), 128-d;
- `pixels`: the image itself, denoised (values < 0.15 set to 0) and moved so its centre
  of mass is the image centre (sub-pixel, bilinear), then mean-centred. Classifier
  features are built to forget what distinguishes two different 1s; near-duplicate
  detection needs exactly that, and pixel alignment undoes 1-pixel shifts exactly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session

from genloom.db.models import ItemEmbedder
from genloom.db.queries import dedup as queries
from genloom.db.queries.dedup import VectorSpace
from genloom.db.tenancy import current_tenant, distributed_by_tenant
from genloom.dedup import Decision
from genloom.errors import BadInput

# Default cosine thresholds per embedder kind, chosen on planted duplicates (bench/dedup_planted.py).
DEFAULT_THRESHOLDS = {"text": 0.95, "pixels": 0.997, "features": 0.995}
MAX_INDEXED_DIM = 2000  # pgvector's HNSW limit for `vector`


@dataclasses.dataclass(frozen=True)
class SemanticConfig:
    threshold: float = 0.95  # cosine similarity at or above which two items are duplicates
    k: int = 10  # neighbours fetched per item (beyond itself)
    ef_search: int = 64  # HNSW candidate list per query (recall vs speed)
    batch: int = 256  # items per SQL statement
    max_passes: int = 4  # re-check kept items until no pair above threshold is left

    def __post_init__(self):
        if not 0.0 < self.threshold <= 1.0:
            raise BadInput(f"cosine threshold must be in (0, 1], got {self.threshold}")
        if self.k < 1 or self.ef_search < self.k:
            raise BadInput("k must be ≥ 1 and ef_search ≥ k")


# --------------------------------------------------------------------------- embedders


PIXEL_MAX_DIM = 256


def pixel_embedding(images: np.ndarray, *, denoise: float = 0.15, max_dim: int = PIXEL_MAX_DIM) -> np.ndarray:
    """Aligned, denoised, mean-centred pixels (N×C×H×W floats in [0, 1]) → N×D, L2-normalised.

    Images with more than `max_dim` values are area-pooled (28×28 → 14×14 = 196-d): the
    HNSW graph and its vectors then fit Postgres's shared buffers at 60,000 items, which
    makes neighbour queries ~10× faster than 784-d ones, for a small loss in separation
    (planted copies ≥ 0.998, distinct MNIST neighbours ≤ 0.996 at the 99.9th percentile)."""
    from scipy import ndimage

    x = np.asarray(images, dtype=np.float32)
    if x.ndim == 3:
        x = x[:, None]
    n, c, h, w = x.shape
    gray = x.mean(axis=1)
    clean = np.where(gray < denoise, 0.0, gray)
    ys, xs = np.mgrid[:h, :w]
    mass = clean.sum(axis=(1, 2)) + 1e-8
    cy = (clean * ys).sum(axis=(1, 2)) / mass
    cx = (clean * xs).sum(axis=(1, 2)) / mass
    out = np.empty_like(x)
    for i in range(n):
        shift = ((h - 1) / 2 - cy[i], (w - 1) / 2 - cx[i])
        src = np.where(x[i] < denoise, 0.0, x[i])
        for ch in range(c):
            out[i, ch] = ndimage.shift(src[ch], shift, order=1, mode="constant")
    flat = out.reshape(n, -1)
    if flat.shape[1] > max_dim:  # area-pool until the vector is at most max_dim long
        factor = int(np.ceil(np.sqrt(flat.shape[1] / max_dim)))
        hh, ww = h // factor, w // factor
        pooled = out[:, :, : hh * factor, : ww * factor].reshape(n, c, hh, factor, ww, factor).mean(axis=(3, 5))
        flat = pooled.reshape(n, -1)
    flat = flat - flat.mean(axis=1, keepdims=True)
    return _normalise(flat)


def _normalise(v: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return (v / np.maximum(norms, 1e-12)).astype(np.float32)


def ensure_embedder(
    session: Session, name: str, *, modality: str, dim: int, model_id: int | None = None, metadata: dict | None = None
) -> ItemEmbedder:
    from sqlalchemy.dialects.postgresql import insert as pg_insert

    session.execute(
        pg_insert(ItemEmbedder)
        .values(name=name, modality=modality, dim=dim, model_id=model_id, metadata_=metadata or {})
        .on_conflict_do_nothing(index_elements=["name"])
    )
    row = session.scalars(sa.select(ItemEmbedder).where(ItemEmbedder.name == name)).one()
    if row.dim != dim:
        raise BadInput(f"embedder {name!r} is recorded with {row.dim} dimensions, got {dim}")
    return row


def index_name(embedder_id: int) -> str:
    return queries.item_index_name(embedder_id)


def ensure_index(session: Session, embedder: ItemEmbedder) -> None:
    """The embedder's partial HNSW index (cosine). IF NOT EXISTS makes it idempotent; an
    advisory lock stops two first runs from building it twice."""
    if embedder.dim > MAX_INDEXED_DIM:
        raise BadInput(f"{embedder.dim}-d vectors exceed pgvector's HNSW limit of {MAX_INDEXED_DIM}")
    session.execute(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext(index_name(embedder.id)))))
    queries.create_item_index(session, embedder.id, embedder.dim)


def missing_items(session: Session, embedder_id: int, item_ids: Sequence[int]) -> list[int]:
    return queries.items_without_vector(session, embedder_id, item_ids)


def store_embeddings(session: Session, embedder_id: int, item_ids: Sequence[int], vectors: np.ndarray) -> int:
    """Binary COPY into item_embeddings, in the caller's transaction."""
    if len(item_ids) != len(vectors):
        raise ValueError("one vector per item")
    if not len(item_ids):
        return 0
    queries.copy_item_embeddings(session, embedder_id, item_ids, vectors)
    return len(item_ids)


def embed_missing(
    session: Session,
    embedder: ItemEmbedder,
    item_ids: Sequence[int],
    compute: Callable[[list[int]], np.ndarray],
    *,
    chunk: int = 4096,
    on_progress: Callable[[int], None] | None = None,
) -> int:
    """Embed the items that have no vector under `embedder` yet; returns how many were added."""
    todo = missing_items(session, embedder.id, item_ids)
    for start in range(0, len(todo), chunk):
        part = todo[start : start + chunk]
        store_embeddings(session, embedder.id, part, compute(part))
        if on_progress:
            on_progress(len(part))
    return len(todo)


# --------------------------------------------------------------------------- neighbours and the greedy pass


def item_space(embedder: ItemEmbedder) -> VectorSpace:
    return VectorSpace("item_embeddings", "item_id", "embedder_id", int(embedder.id), int(embedder.dim))


def neighbours(
    session: Session,
    space: VectorSpace | ItemEmbedder,
    query_ids: Sequence[int],
    candidate_ids: Sequence[int],
    cfg: SemanticConfig,
) -> dict[int, list[tuple[int, float]]]:
    """For each query id, its neighbours among `candidate_ids` with cosine ≥ threshold,
    most similar first (through the HNSW index: k per item, not all pairs).

    One node: the candidates go to a temporary table once. A Citus cluster: they go inline with
    each batch, so every statement is a router query on the tenant's shard (`neighbours_sql`)."""
    if isinstance(space, ItemEmbedder):
        space = item_space(space)
    on_cluster = distributed_by_tenant(session)
    if not on_cluster:
        queries.fill_candidates(session, candidate_ids)
    queries.set_hnsw_search(session, cfg.ef_search)
    sql = queries.neighbours_sql(space, None if on_cluster else "dedup_candidates")
    inline = {"candidates": list(map(int, candidate_ids)), "tenant": current_tenant()} if on_cluster else {}
    out: dict[int, list[tuple[int, float]]] = {}
    ids = list(map(int, query_ids))
    for start in range(0, len(ids), cfg.batch):
        rows = session.execute(
            sql, {"ids": ids[start : start + cfg.batch], "k": cfg.k + 1, "threshold": cfg.threshold - 1e-6, **inline}
        )
        for q, n, sim in rows:
            out.setdefault(q, []).append((n, min(1.0, float(sim))))
    return out


def greedy_keep(order: Sequence[int], nbrs: dict[int, list[tuple[int, float]]]) -> list[Decision]:
    """Walk items in keep-priority order: an item with a kept neighbour is dropped in favour
    of the most similar kept one; otherwise it is kept. No two kept items end up as
    neighbours of each other (when the neighbour lists are complete)."""
    kept: set[int] = set()
    decisions = []
    for item in order:
        best = next(((n, s) for n, s in nbrs.get(item, []) if n in kept), None)
        if best is None:
            kept.add(item)
        else:
            decisions.append(Decision(dropped=item, kept=best[0], method="semantic", similarity=best[1]))
    return decisions


def semantic_duplicates(
    session: Session,
    embedder: VectorSpace | ItemEmbedder,
    order: Sequence[int],
    cfg: SemanticConfig,
    *,
    on_pass: Callable[[int, int], None] | None = None,
) -> list[Decision]:
    """Greedy passes over `order` (already embedded) until a pass drops nothing: the first
    pass compares all items, later passes only the survivors, so a neighbour list that
    was full of since-dropped items cannot hide a pair of kept duplicates."""
    decisions: list[Decision] = []
    current = list(order)
    for p in range(cfg.max_passes):
        found = greedy_keep(current, neighbours(session, embedder, current, current, cfg))
        if on_pass:
            on_pass(p + 1, len(found))
        if not found:
            break
        decisions.extend(found)
        dropped = {d.dropped for d in found}
        current = [i for i in current if i not in dropped]
    return decisions


def cross_neighbours(
    session: Session,
    embedder: VectorSpace | ItemEmbedder,
    query_ids: Sequence[int],
    target_ids: Sequence[int],
    cfg: SemanticConfig,
) -> dict[int, list[tuple[int, float]]]:
    """Neighbours of `query_ids` among `target_ids` only (the leakage check: val/test vs train)."""
    return neighbours(session, embedder, query_ids, target_ids, cfg)
