"""Which embedding model a search uses: the collection's own (the one ingest uses), or another
that has vectors for the collection (`search(..., embedding_model=NAME)`).

Vectors of every model share the `embeddings` table, each model with its own partial HNSW index
(`genloom.retrieval.vector`); `genloom embed` (the job in ingest/embed_models.py) adds them.
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
        stored = embeddings.model_name(local_embedding_model(session, name))
    except (embeddings.EmbeddingModelError, NotFound):
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


def local_embedding_model(session: Session, name: str | None) -> str | None:
    """An embedding model as `genloom.embeddings` loads it: the bundled default or a folder as given,
    a registered NAME[@V] (`genloom train embedder`) as its unpacked folder, whose path carries the
    checkpoint's hash, so two trainings never share vectors under one name."""
    from pathlib import Path

    from genloom import embeddings
    from genloom.registry import model_dir

    if name in (None, "", embeddings.DEFAULT_MODEL) or Path(name).expanduser().is_dir():
        return name
    if "/" in name or name.startswith(("~", ".")):  # a path, not a registry name: embeddings says it is missing
        return name
    return str(model_dir(session, name))
