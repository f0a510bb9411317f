"""Embedding models and their HNSW indexes.

All models share the `embeddings` table (an untyped `vector` column). Each model gets
a partial expression index, pgvector's documented pattern for mixed dimensions:

    CREATE INDEX ix_embeddings_hnsw_<id> ON embeddings
    USING hnsw ((embedding::vector(<dim>)) vector_cosine_ops) WHERE embedding_model_id = <id>

A query uses it only when its ORDER BY is the same expression and its WHERE names the
same model id as a literal (the planner cannot prove a partial index's predicate from a
bind parameter), which is why the search SQL inlines those two integers.
"""

from __future__ import annotations

import dataclasses

import sqlalchemy as sa
from sqlalchemy.orm import Session

from genloom.db.models import EmbeddingModel
from genloom.errors import BadInput


@dataclasses.dataclass(frozen=True)
class HnswConfig:
    m: int = 16  # graph degree: 16 is pgvector's default and reaches recall@10 > 0.95 here
    ef_construction: int = 64  # build-time beam; higher builds slower and recalls a little more
    ef_search: int = 100  # query-time beam; at least the branch depth so one pass fills it


def hnsw_index_name(model_id: int) -> str:
    return f"ix_embeddings_hnsw_{int(model_id)}"


def ensure_embedding_model(session: Session, name: str, dim: int, *, hnsw: HnswConfig = HnswConfig()) -> EmbeddingModel:
    """Get or create the embedding_models row, and make sure its HNSW index exists."""
    if not 1 <= dim <= 2000:
        raise BadInput(f"embedding dimension {dim} is outside pgvector's HNSW limit (1..2000)")
    session.execute(
        sa.text(
            "INSERT INTO embedding_models (name, dim, metadata) VALUES (:n, :d, CAST(:meta AS jsonb)) "
            "ON CONFLICT (name) DO NOTHING"
        ),
        {"n": name, "d": dim, "meta": f'{{"hnsw_m": {hnsw.m}, "hnsw_ef_construction": {hnsw.ef_construction}}}'},
    )
    model = session.scalar(sa.select(EmbeddingModel).where(EmbeddingModel.name == name))
    assert model is not None
    if model.dim != dim:
        raise BadInput(f"embedding model {name!r} is registered with dimension {model.dim}, not {dim}")
    ensure_hnsw_index(session, model.id, model.dim, hnsw=hnsw)
    return model


def ensure_hnsw_index(session: Session, model_id: int, dim: int, *, hnsw: HnswConfig = HnswConfig()) -> None:
    name = hnsw_index_name(model_id)
    exists = session.scalar(sa.text("SELECT 1 FROM pg_indexes WHERE indexname = :n"), {"n": name})
    if exists:
        return
    # Two ingests starting together must not race on CREATE INDEX.
    session.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('genloom-hnsw-index'))"))
    session.execute(
        sa.text(
            f"CREATE INDEX IF NOT EXISTS {name} ON embeddings USING hnsw "
            f"((embedding::vector({int(dim)})) vector_cosine_ops) "
            f"WITH (m = {int(hnsw.m)}, ef_construction = {int(hnsw.ef_construction)}) "
            f"WHERE embedding_model_id = {int(model_id)}"
        )
    )


def model_for_collection(session: Session, embedding_model_id: int | None) -> EmbeddingModel | None:
    if embedding_model_id is None:
        return None
    return session.get(EmbeddingModel, embedding_model_id)


def vector_literal(values) -> str:
    """pgvector's text form; used as a bind parameter cast to vector in SQL."""
    return "[" + ",".join(f"{float(v):.7g}" for v in values) + "]"
