"""Named queries of the ingest pipeline (ingest/pipeline.py) and `genloom embed` (ingest/embed_models.py).

Each runs in the caller's session (or, for the writer lock, the caller's connection): the caller
owns the transaction. The bulk COPY of chunks and embeddings is in genloom/db/bulk.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session


def record_run_collection(session: Session, run_id: int, collection_id: int, text_search_config: str) -> None:
    """The ingest run's collection, and the text search config its BM25 postings were built with."""
    session.execute(
        sa.text(
            "UPDATE runs SET collection_id = :c, "
            "params = params || jsonb_build_object('text_search_config', CAST(:t AS text)) WHERE id = :r"
        ),
        {"c": collection_id, "t": text_search_config, "r": run_id},
    )


def collection_exists(session: Session, collection_id: int) -> bool:
    """Whether the collection still exists (a `collections delete` may race an ingest)."""
    return bool(
        session.scalar(sa.text("SELECT EXISTS (SELECT 1 FROM collections WHERE id = :c)"), {"c": collection_id})
    )


def remember_pii_mode(session: Session, collection_id: int, mode: str) -> None:
    """--pii becomes the collection's default when it has none yet (a later --pii does not change it)."""
    session.execute(
        sa.text("UPDATE collections SET pii_mode = :m WHERE id = :c AND pii_mode IS NULL"),
        {"m": mode, "c": collection_id},
    )


def collection_pii_mode(session: Session, collection_id: int) -> str | None:
    """The collection's remembered PII mode (None: never set)."""
    return session.scalar(sa.text("SELECT pii_mode FROM collections WHERE id = :c"), {"c": collection_id})


# Documents of this collection that were files under a synced folder, are current, and whose
# file was not found this time. (external_id is the file's resolved path for file documents.)
_GONE_SQL = """
SELECT id, external_id FROM documents
WHERE collection_id = :c AND superseded_at IS NULL
  AND starts_with(uri, 'file:')
  AND starts_with(external_id, :prefix)
  AND NOT (external_id = ANY(:seen))
"""

# The same for a large file whose interrupted ingest was never finished: its rows go.
_GONE_INCOMPLETE_SQL = """
DELETE FROM documents
WHERE collection_id = :c AND incomplete
  AND starts_with(uri, 'file:')
  AND starts_with(external_id, :prefix)
  AND NOT (external_id = ANY(:seen))
"""


def gone_documents(session: Session, collection_id: int, prefix: str, seen: Iterable[str]) -> list[tuple[int, str]]:
    """(id, external id) of current file documents under PREFIX whose file is not in SEEN (--sync)."""
    rows = session.execute(sa.text(_GONE_SQL), {"c": collection_id, "prefix": prefix, "seen": sorted(seen)})
    return [(int(r.id), str(r.external_id)) for r in rows]


def delete_gone_incomplete(session: Session, collection_id: int, prefix: str, seen: Iterable[str]) -> None:
    """Delete unfinished large documents under PREFIX whose file is not in SEEN (--sync)."""
    session.execute(sa.text(_GONE_INCOMPLETE_SQL), {"c": collection_id, "prefix": prefix, "seen": sorted(seen)})


_CURRENT_SQL = """
SELECT external_id,
       max(version) AS last_version,
       max(id) FILTER (WHERE superseded_at IS NULL) AS current_id,
       max(sha256) FILTER (WHERE superseded_at IS NULL) AS current_sha256,
       -- set-meta keys of the latest version (current, or retired): a new version inherits them
       (array_agg(user_metadata ORDER BY version DESC))[1] AS user_metadata,
       (array_agg(metadata) FILTER (WHERE superseded_at IS NULL))[1] AS current_metadata
FROM documents
WHERE collection_id = :c AND external_id = ANY(:ids)
GROUP BY external_id
"""


def current_versions(session: Session, collection_id: int, external_ids: Sequence[str]) -> dict[str, sa.Row[Any]]:
    """Per external id: last_version, current_id, current_sha256, the inherited user_metadata and the current metadata."""
    rows = session.execute(sa.text(_CURRENT_SQL), {"c": collection_id, "ids": list(external_ids)})
    return {row.external_id: row for row in rows}


def supersede_documents(session: Session, document_ids: Sequence[int]) -> None:
    """Mark document versions as no longer current (a newer version is being written)."""
    session.execute(
        sa.text("UPDATE documents SET superseded_at = now() WHERE id = ANY(:ids)"), {"ids": list(document_ids)}
    )


def delete_document(session: Session, document_id: int) -> None:
    """Delete one document row (its chunks and embeddings go by cascade)."""
    session.execute(sa.text("DELETE FROM documents WHERE id = :i"), {"i": document_id})


# The row an interrupted streamed ingest left: its content hash, how many chunks it holds, and
# the texts of its first two (to tell whether this run would cut the document the same way).
_INCOMPLETE_SQL = """
SELECT id, sha256,
       (SELECT count(*) FROM chunks c WHERE c.document_id = d.id) AS chunks,
       ARRAY(SELECT text FROM chunks c WHERE c.document_id = d.id ORDER BY ordinal LIMIT 2) AS first
FROM documents d
WHERE collection_id = :c AND external_id = :e AND incomplete
"""


def incomplete_document(session: Session, collection_id: int, external_id: str) -> sa.Row[Any] | None:
    """(id, sha256, chunks, first) of the document's unfinished streamed version, if any."""
    return session.execute(sa.text(_INCOMPLETE_SQL), {"c": collection_id, "e": external_id}).first()


# Incomplete and superseded, so no search and no BM25 statistic sees it until it is whole.
_INSERT_INCOMPLETE_SQL = """
INSERT INTO documents (collection_id, external_id, version, uri, title, mime_type, sha256, metadata,
                       user_metadata, superseded_at, incomplete)
VALUES (:c, :e, (SELECT coalesce(max(version), 0) + 1 FROM documents WHERE collection_id = :c AND external_id = :e),
        :u, :t, :m, :h, CAST(:meta AS jsonb), CAST(:user AS jsonb), now(), true)
RETURNING id
"""


def insert_incomplete_document(
    session: Session,
    collection_id: int,
    *,
    external_id: str,
    uri: str | None,
    title: str | None,
    mime_type: str | None,
    sha256: str,
    metadata: dict[str, Any],
    user_metadata: dict[str, Any],
) -> int:
    """The row a streamed document's chunks hang on until it is whole; its id."""
    return int(
        session.execute(
            sa.text(_INSERT_INCOMPLETE_SQL),
            {
                "c": collection_id,
                "e": external_id,
                "u": uri,
                "t": title,
                "m": mime_type,
                "h": sha256,
                "meta": json.dumps(metadata, ensure_ascii=False),
                "user": json.dumps(user_metadata, ensure_ascii=False),
            },
        ).scalar_one()
    )


def make_current(session: Session, document_id: int) -> list[int]:
    """A streamed document is whole: make it the current version; its chunk ids in order."""
    session.execute(
        sa.text("UPDATE documents SET superseded_at = NULL, incomplete = false WHERE id = :i"), {"i": document_id}
    )
    return [
        int(i)
        for i in session.scalars(
            sa.text("SELECT id FROM chunks WHERE document_id = :d ORDER BY ordinal"), {"d": document_id}
        )
    ]


def try_document_lock(connection: sa.Connection, key: str) -> bool:
    """Take the session advisory lock KEY (one writer per streamed document); False if another holds it."""
    return bool(connection.execute(sa.text("SELECT pg_try_advisory_lock(hashtext(:k))"), {"k": key}).scalar())


def release_document_lock(connection: sa.Connection, key: str) -> None:
    connection.execute(sa.text("SELECT pg_advisory_unlock(hashtext(:k))"), {"k": key})


# Current chunks of the collection with no vector from model :m yet (`genloom embed`'s work list).
_TO_EMBED_SQL = """
SELECT c.id, d.title, c.text
FROM chunks c
JOIN documents d ON d.id = c.document_id
WHERE d.collection_id = :c AND d.superseded_at IS NULL
  AND NOT EXISTS (SELECT 1 FROM embeddings e WHERE e.chunk_id = c.id AND e.embedding_model_id = :m)
ORDER BY c.id
LIMIT :n
"""

# Per collection: current chunks without a vector from :m, all current chunks, the longest chunk.
_EMBED_COUNTS_SQL = """
SELECT count(*) FILTER (
           WHERE NOT EXISTS (SELECT 1 FROM embeddings e WHERE e.chunk_id = c.id AND e.embedding_model_id = :m)
       ) AS missing,
       count(*) AS current,
       coalesce(max(c.token_count), 0) AS longest
FROM chunks c
JOIN documents d ON d.id = c.document_id
WHERE d.collection_id = :c AND d.superseded_at IS NULL
"""


def chunks_to_embed(session: Session, collection_id: int, embedding_model_id: int, limit: int) -> list[sa.Row[Any]]:
    """(id, title, text) of up to LIMIT current chunks that have no vector from the model yet, by id."""
    return list(session.execute(sa.text(_TO_EMBED_SQL), {"c": collection_id, "m": embedding_model_id, "n": limit}))


def embed_counts(session: Session, collection_id: int, embedding_model_id: int) -> tuple[int, int, int]:
    """(current chunks without the model's vector, current chunks, longest chunk in tokens)."""
    row = session.execute(sa.text(_EMBED_COUNTS_SQL), {"c": collection_id, "m": embedding_model_id}).one()
    return int(row.missing), int(row.current), int(row.longest)


# A document as one passage: its current version's chunks joined in order (training pairs).
_PASSAGES_SQL = """
SELECT d.external_id, d.title, string_agg(c.text, E'\\n' ORDER BY c.ordinal) AS text
FROM documents d JOIN chunks c ON c.document_id = d.id
WHERE d.collection_id = :c AND d.superseded_at IS NULL AND d.external_id = ANY(:ids)
GROUP BY d.id
"""


def current_passages(session: Session, collection_id: int, external_ids: Sequence[str]) -> list[tuple[Any, ...]]:
    """(external_id, title, text) of the current documents among EXTERNAL_IDS, each its chunks in order."""
    rows = session.execute(sa.text(_PASSAGES_SQL), {"c": collection_id, "ids": list(external_ids)})
    return [tuple(r) for r in rows]
