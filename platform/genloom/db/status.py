"""What `genloom db status` reports."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from genloom.db import embedded
from genloom.db.engine import get_engine, is_embedded, libpq_url
from genloom.db.migrate import current_revision, head_revision


def database_status() -> dict[str, Any]:
    engine = get_engine()
    with engine.connect() as conn:
        server_version = conn.execute(sa.text("SHOW server_version")).scalar()
        pgvector_version = conn.execute(
            sa.text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        ).scalar()
        database = conn.execute(sa.text("SELECT current_database()")).scalar()
        size = conn.execute(sa.text("SELECT pg_size_pretty(pg_database_size(current_database()))")).scalar()
    return {
        "embedded": is_embedded(),
        "url": _redacted(libpq_url()),
        "database": database,
        "server_version": server_version,
        "pgvector_version": pgvector_version,
        "schema_revision": current_revision(engine),
        "schema_head": head_revision(),
        "data_dir": str(embedded.data_dir()) if is_embedded() else None,
        "size": size,
    }


def _redacted(url: str) -> str:
    from genloom.db.engine import _redact

    return _redact(url)
