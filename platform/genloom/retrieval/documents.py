"""Documents users manage: retire (sync, delete), purge, update metadata, list and show.

Every function works inside the caller's transaction and keeps the BM25 statistics exact:
a document leaves them when it stops being current (`bm25.retire_documents`). Writers to a
collection serialise on its statistics row (`bm25.lock_collection_stats`), as ingest does.

Retiring keeps the rows (a generation that cited a chunk can still show it); purging deletes
them, and each generation source that pointed at a purged chunk keeps a tombstone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from genloom.errors import BadInput, NotFound
from genloom.retrieval import bm25


def retire_documents(session: Session, collection_id: int, document_ids: Sequence[int], *, run_id: int | None) -> list[int]:
    """Take current documents out of search and BM25, keeping their rows; return the ids retired."""
    if not document_ids:
        return []
    retired = list(
        session.scalars(
            sa.text(
                """
                UPDATE documents SET superseded_at = now(), retired_at = now(), retired_by_run_id = :run
                WHERE collection_id = :c AND id = ANY(:ids) AND superseded_at IS NULL
                RETURNING id
                """
            ),
            {"c": collection_id, "ids": list(document_ids), "run": run_id},
        )
    )
    bm25.retire_documents(session, collection_id, retired)
    return retired
