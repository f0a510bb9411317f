"""Collections: a named set of documents with one text-search config and one embedding model."""

from __future__ import annotations

import re

import sqlalchemy as sa
from sqlalchemy.orm import Session

from genloom.db.models import Collection
from genloom.errors import BadInput, NotFound

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


def get_collection(session: Session, name: str) -> Collection:
    """The collection called `name`, or NotFound naming the ones that exist."""
    found = session.scalar(sa.select(Collection).where(Collection.name == name))
    if found is None:
        names = session.scalars(sa.select(Collection.name).order_by(Collection.name).limit(10)).all()
        known = f"; existing: {', '.join(names)}" if names else "; there are no collections yet"
        raise NotFound(
            f"collection {name!r} not found{known}", cli_hint=f"create it with: genloom ingest PATH --collection {name}"
        )
    return found


def validate_name(name: str) -> str:
    if not name or not _NAME.match(name):
        raise BadInput(
            f"invalid collection name {name!r}: use 1-128 letters, digits, '_', '-', '.', ':' (starting with a letter or digit)"
        )
    return name


def check_text_search_config(session: Session, config: str) -> str:
    exists = session.scalar(sa.text("SELECT 1 FROM pg_ts_config WHERE cfgname = :c"), {"c": config})
    if not exists:
        known = session.scalars(sa.text("SELECT cfgname FROM pg_ts_config ORDER BY cfgname")).all()
        raise BadInput(f"unknown text-search config {config!r}; Postgres has: {', '.join(known)}")
    return config


def ensure_collection(
    session: Session,
    name: str,
    *,
    text_search_config: str = "english",
    embedding_model_id: int | None = None,
) -> Collection:
    """Get or create a collection (safe against a concurrent creator), with its BM25 statistics row.

    An existing collection keeps its text-search config; a different embedding model is an
    error, because its vectors would not be comparable with the ones already stored.
    """
    validate_name(name)
    check_text_search_config(session, text_search_config)
    session.execute(
        sa.text(
            "INSERT INTO collections (name, text_search_config, embedding_model_id) "
            "VALUES (:n, :c, :m) ON CONFLICT (name) DO NOTHING"
        ),
        {"n": name, "c": text_search_config, "m": embedding_model_id},
    )
    collection = session.scalar(sa.select(Collection).where(Collection.name == name))
    assert collection is not None
    session.refresh(collection)
    if embedding_model_id is not None:
        if collection.embedding_model_id is None:
            collection.embedding_model_id = embedding_model_id
            session.flush()
        elif collection.embedding_model_id != embedding_model_id:
            model = session.scalar(
                sa.text("SELECT name FROM embedding_models WHERE id = :i"), {"i": collection.embedding_model_id}
            )
            raise BadInput(
                f"collection {name!r} is embedded with {model!r}; ingest with that model or use another collection"
            )
    session.execute(
        sa.text("INSERT INTO retrieval_collection_stats (collection_id) VALUES (:c) ON CONFLICT DO NOTHING"),
        {"c": collection.id},
    )
    return collection


def collection_summary(session: Session, collection: Collection) -> dict:
    """Counts a person wants to see: current documents and chunks, versions, BM25 statistics."""
    row = session.execute(
        sa.text(
            """
            SELECT
              (SELECT count(*) FROM documents WHERE collection_id = :c AND superseded_at IS NULL) AS documents,
              (SELECT count(*) FROM documents WHERE collection_id = :c) AS document_versions,
              s.n_chunks AS chunks,
              s.total_length::float8 / greatest(s.n_chunks, 1) AS avg_chunk_length,
              (SELECT count(*) FROM retrieval_term_stats WHERE collection_id = :c AND df > 0) AS terms
            FROM retrieval_collection_stats s WHERE s.collection_id = :c
            """
        ),
        {"c": collection.id},
    ).mappings().first()
    return {"collection": collection.name, "text_search_config": collection.text_search_config, **(dict(row) if row else {})}
