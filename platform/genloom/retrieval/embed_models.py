"""Which embedding model a search uses: the collection's own, or a second one (`genloom embed`,
the job in ingest/embed_models.py) that has vectors for the collection.

    embed_collection("handbook", "/models/bge-small")      # resumable; its own HNSW index
    search(session, "refunds", collection="handbook", embedding_model="/models/bge-small")

Vectors of every model share the `embeddings` table (one row per chunk and model); each model
has its own partial HNSW index (`genloom.retrieval.vector`). The collection's own model (the
one ingest uses) stays the default for search; `embedding_model=` picks another that has
vectors for the collection. Chunks keep the size the ingest model chose: a model with a
shorter max sequence length than that truncates them (sentence-transformers cuts silently),
which `embed_collection` reports up front.

Embedding is resumable: each batch commits, and a re-run embeds only the current chunks that
have no vector from that model yet (new documents ingested since, or what an interrupted run
left). Retired and superseded versions are not embedded.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from genloom.db.models import EmbeddingModel
from genloom.errors import NotFound


def resolve_search_model(
    session: Session, collection_id: int, default_id: int | None, name: str | None
) -> EmbeddingModel | None:
    """The model a search embeds with: `name` (which must have vectors in the collection), else the collection's."""
    if name is None:
        return session.get(EmbeddingModel, default_id) if default_id is not None else None
    from genloom import embeddings

    try:
        stored = embeddings.model_name(name)
    except embeddings.EmbeddingModelError:
        stored = name  # a name recorded earlier whose folder is gone still finds its row below
    model = session.scalar(sa.select(EmbeddingModel).where(EmbeddingModel.name.in_([name, stored])))
    available = session.scalars(
        sa.text(
            """
            SELECT m.name FROM embedding_models m
            WHERE m.id = :default OR EXISTS (
                SELECT 1 FROM embeddings e JOIN retrieval_chunks rc ON rc.chunk_id = e.chunk_id
                WHERE rc.collection_id = :c AND e.embedding_model_id = m.id)
            ORDER BY m.name
            """
        ),
        {"c": collection_id, "default": default_id},
    ).all()
    if model is None or model.name not in available:
        raise NotFound(
            f"embedding model {name!r} has no vectors in this collection; models with vectors: "
            f"{', '.join(available) or 'none'} (add one with: genloom embed --collection NAME --model DIR)"
        )
    return model
