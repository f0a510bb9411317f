"""Named queries about the server and the store as a whole, for callers outside genloom.db.

Raw SQL lives with the store (genloom/db) or with the documented search SQL (genloom/retrieval);
tests/test_store_boundary.py counts what is still elsewhere. Queries of one domain that grow
past a handful get a module of their own here.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from genloom.db.models import Base


def ping(session: Session) -> None:
    """One round trip: the database answers (the API's health check)."""
    session.execute(sa.text("SELECT 1"))


def connection_usage(session: Session) -> tuple[int, int]:
    """(max_connections, connections in use now): what `genloom serve --workers` must fit in."""
    max_connections = int(session.execute(sa.text("SHOW max_connections")).scalar_one())
    in_use = int(session.execute(sa.text("SELECT count(*) FROM pg_stat_activity")).scalar_one())
    return max_connections, in_use


def table_row_counts(connection: sa.Connection) -> dict[str, int]:
    """Rows per table of the typed schema, as the connection's role sees them (the demo's store step)."""
    return {
        name: int(connection.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())
        for name, table in sorted(Base.metadata.tables.items())
    }


def version_texts(session: Session, version_id: int, split: str | None = None) -> list[str]:
    """The texts of a dataset version's members (of one split, or all), in item order: what
    readers of JSON-record datasets (training pairs, question/answer records) parse."""
    where = "m.version_id = :v" + (" AND m.split = :s" if split else "")
    rows = session.execute(
        sa.text(f"SELECT i.text FROM dataset_members m JOIN items i ON i.id = m.item_id WHERE {where} ORDER BY i.id"),
        {"v": version_id, **({"s": split} if split else {})},
    )
    return [text or "" for (text,) in rows]


def update_document_metadata(session: Session, document_id: int, metadata: dict, sha256: str) -> None:
    """Replace a current document version's metadata (and the content hash that covers it) in place:
    ingest's `--meta` change of an unchanged document, which keeps its chunks and vectors."""
    import json

    session.execute(
        sa.text("UPDATE documents SET metadata = CAST(:m AS jsonb), sha256 = :h WHERE id = :id"),
        {"m": json.dumps(metadata, ensure_ascii=False), "h": sha256, "id": document_id},
    )
