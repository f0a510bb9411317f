"""Bulk writes of documents, chunks and embeddings, inside the caller's transaction.

Chunks and embeddings go in with binary COPY (pgvector's psycopg dumper writes the
vectors; through a staging table, as COPY cannot target a table under row-level security): ~10x faster than INSERTs at these sizes. Chunk ids are taken from the
sequence first, so the embeddings' COPY can reference them without a round trip per row.
The ingest pipeline (ingest/pipeline.py) and `genloom embed` (ingest/embed_models.py) call these;
this is the store's one place that drives psycopg's COPY for them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session


@dataclasses.dataclass
class PreparedDocument:
    """A document ready to write: its chunks and their embeddings (rows of `vectors`)."""

    external_id: str
    version: int
    sha256: str
    title: str | None
    uri: str | None
    mime_type: str | None
    metadata: dict[str, Any]
    chunk_texts: list[str]
    token_counts: list[int]
    vectors: np.ndarray  # (len(chunk_texts), dim) float32, L2-normalised
    user_metadata: dict[str, Any] = dataclasses.field(default_factory=dict)  # inherited set-meta keys (in metadata too)
    chunk_metadata: list[dict[str, Any]] | None = None  # per chunk: start/end offsets, page, heading


def _psycopg(session: Session) -> Any:
    """The psycopg connection under the session, with pgvector's types registered once."""
    conn: Any = session.connection().connection.driver_connection
    if not getattr(conn, "_genloom_vector", False):
        from pgvector.psycopg import register_vector

        register_vector(conn)
        conn._genloom_vector = True
    return conn


def write_documents(
    session: Session, collection_id: int, embedding_model_id: int, docs: list[PreparedDocument]
) -> tuple[list[int], list[int]]:
    """Insert documents, chunks and embeddings; return (document ids, chunk ids)."""
    from psycopg.types.json import Jsonb

    from genloom.db.tenancy import copy_in

    if not docs:
        return [], []
    returned: dict[str, int] = dict(
        session.execute(
            sa.text(
                """
                INSERT INTO documents (collection_id, external_id, version, uri, title, mime_type, sha256, metadata,
                                       user_metadata)
                SELECT :c, * FROM unnest(
                    CAST(:external_ids AS text[]), CAST(:versions AS int[]), CAST(:uris AS text[]),
                    CAST(:titles AS text[]), CAST(:mimes AS text[]), CAST(:shas AS text[]), CAST(:metas AS jsonb[]),
                    CAST(:user_metas AS jsonb[]))
                RETURNING external_id, id
                """
            ),
            {
                "c": collection_id,
                "external_ids": [d.external_id for d in docs],
                "versions": [d.version for d in docs],
                "uris": [d.uri for d in docs],
                "titles": [d.title for d in docs],
                "mimes": [d.mime_type for d in docs],
                "shas": [d.sha256 for d in docs],
                "metas": [_json({**d.metadata, **d.user_metadata}) for d in docs],
                "user_metas": [_json(d.user_metadata) for d in docs],
            },
        ).all()
    )
    doc_ids = [returned[d.external_id] for d in docs]  # external ids are unique within a batch
    n_chunks = sum(len(d.chunk_texts) for d in docs)
    chunk_ids = list(
        session.execute(
            sa.text("SELECT nextval(pg_get_serial_sequence('chunks', 'id')) FROM generate_series(1, :n)"),
            {"n": n_chunks},
        ).scalars()
    )
    conn = _psycopg(session)
    with conn.cursor() as cur:
        with copy_in(cur, "chunks", ["id", "document_id", "ordinal", "text", "token_count", "metadata"]) as copy:
            copy.set_types(["int8", "int8", "int4", "text", "int4", "jsonb"])
            i = 0
            for doc_id, doc in zip(doc_ids, docs):
                metas = doc.chunk_metadata or [{}] * len(doc.chunk_texts)
                for ordinal, (text, tokens, meta) in enumerate(zip(doc.chunk_texts, doc.token_counts, metas)):
                    copy.write_row((chunk_ids[i], doc_id, ordinal, text, tokens, Jsonb(meta)))
                    i += 1
        with copy_in(cur, "embeddings", ["chunk_id", "embedding_model_id", "embedding"]) as copy:
            copy.set_types(["int8", "int8", "vector"])
            i = 0
            for doc in docs:
                for vector in doc.vectors:
                    copy.write_row((chunk_ids[i], embedding_model_id, vector))
                    i += 1
    return doc_ids, chunk_ids


def append_chunks(
    session: Session,
    document_id: int,
    embedding_model_id: int,
    first_ordinal: int,
    texts: list[str],
    token_counts: list[int],
    vectors: np.ndarray,
    metadata: list[dict[str, Any]],
) -> list[int]:
    """COPY one slice of a (large) document's chunks and embeddings; return the chunk ids.

    The caller indexes them for BM25 once the whole document is in (see pipeline._write_streamed).
    """
    from psycopg.types.json import Jsonb

    if not texts:
        return []
    chunk_ids = list(
        session.execute(
            sa.text("SELECT nextval(pg_get_serial_sequence('chunks', 'id')) FROM generate_series(1, :n)"),
            {"n": len(texts)},
        ).scalars()
    )
    from genloom.db.tenancy import copy_in  # COPY cannot target a table under row-level security

    conn = _psycopg(session)
    with conn.cursor() as cur:
        with copy_in(cur, "chunks", ["id", "document_id", "ordinal", "text", "token_count", "metadata"]) as copy:
            copy.set_types(["int8", "int8", "int4", "text", "int4", "jsonb"])
            for i, (chunk_id, text, tokens, meta) in enumerate(zip(chunk_ids, texts, token_counts, metadata)):
                copy.write_row((chunk_id, document_id, first_ordinal + i, text, tokens, Jsonb(meta)))
        with copy_in(cur, "embeddings", ["chunk_id", "embedding_model_id", "embedding"]) as copy:
            copy.set_types(["int8", "int8", "vector"])
            for chunk_id, vector in zip(chunk_ids, vectors):
                copy.write_row((chunk_id, embedding_model_id, vector))
    return chunk_ids


def copy_embeddings(session: Session, embedding_model_id: int, chunk_ids: list[int], vectors: np.ndarray) -> None:
    """COPY vectors of one model for existing chunks (`genloom embed`: a second model's vectors)."""
    from genloom.db.tenancy import copy_in  # COPY cannot target a table under row-level security

    with _psycopg(session).cursor() as cur:
        with copy_in(cur, "embeddings", ["chunk_id", "embedding_model_id", "embedding"]) as copy:
            copy.set_types(["int8", "int8", "vector"])
            for chunk_id, vector in zip(chunk_ids, vectors):
                copy.write_row((chunk_id, embedding_model_id, vector))


def _json(value: dict) -> str:
    import json

    return json.dumps(value, ensure_ascii=False)
