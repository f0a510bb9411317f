"""Demo step 1: the store is up, migrated, and has every table."""

from __future__ import annotations

from genloom.db.engine import get_engine
from genloom.db.queries import table_row_counts
from genloom.db.status import database_status

TITLE = "store: PostgreSQL + pgvector, schema at head"


def run(ctx) -> dict:
    status = database_status(start=True)
    engine = get_engine()
    with engine.connect() as conn:
        counts = table_row_counts(conn)
    return {
        "server_version": status["server_version"],
        "pgvector_version": status["pgvector_version"],
        "schema_revision": status["schema_revision"],
        "embedded": status["embedded"],
        "vector_check": status["vector_check"],
        "tables": len(counts),
        "rows": counts,
    }
