"""What `genloom db status` reports, and the pgvector self-check."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from genloom.db import embedded
from genloom.db.engine import get_engine
from genloom.db.migrate import current_revision, head_revision
from genloom.db.url import is_embedded, libpq_url, redact

VECTOR_CHECK_DIM = 384  # MiniLM's size: the crash of issue 12 needed real widths, 3-d vectors passed
VECTOR_CHECK_ROWS = 200


def database_status(*, start: bool = False, check_vectors: bool = True) -> dict[str, Any]:
    """The server genloom uses, its versions and the schema revision.

    A stopped embedded server is reported as stopped and left stopped unless `start`.
    """
    from genloom.db import cluster

    nodes = cluster.node_states() if is_embedded() else []
    if nodes and not start and nodes[0]["state"] == "stopped":
        return {
            "embedded": True,
            "server": "stopped",
            "cluster": nodes,
            "hint": "start it with: genloom db cluster start",
        }
    if not nodes and is_embedded() and not start and embedded.server_state() == "stopped":
        return {
            "embedded": True,
            "server": "stopped",
            "data_dir": str(embedded.data_dir()),
            "hint": "start it with: genloom db start (or genloom db status --start)",
        }
    engine = get_engine()
    with engine.connect() as conn:
        server_version = conn.execute(sa.text("SHOW server_version")).scalar()
        pgvector_version = conn.execute(
            sa.text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        ).scalar()
        database = conn.execute(sa.text("SELECT current_database()")).scalar()
        size = conn.execute(sa.text("SELECT pg_size_pretty(pg_database_size(current_database()))")).scalar()
    report: dict[str, Any] = {
        "embedded": is_embedded(),
        "server": "running",
        "url": redact(libpq_url()),
        "database": database,
        "server_version": server_version,
        "pgvector_version": pgvector_version,
        "schema_revision": current_revision(engine),
        "schema_head": head_revision(),
        "data_dir": str(embedded.data_dir()) if is_embedded() else None,
        "size": size,
    }
    from genloom.db import routing

    if nodes:
        report["cluster"] = nodes
        report["data_dir"] = None
    replicas = routing.replica_report(engine)
    if replicas:
        report["replicas"] = replicas
    if check_vectors:
        report["vector_check"] = vector_check(engine)
    return report


def vector_check(engine: Engine) -> str:
    """'ok', or 'failed: <cause>': insert and search 384-d vectors through an HNSW index.

    Everything happens in a temporary table inside a transaction that is rolled back, so the
    check leaves nothing behind. It exercises the distance functions that crashed on CPUs
    without AVX-512 with the previous wheel (issue 12), with the index path forced.
    """
    statements = [
        f"CREATE TEMP TABLE genloom_vector_check (id int PRIMARY KEY, e vector({VECTOR_CHECK_DIM})) ON COMMIT DROP",
        "CREATE INDEX ON genloom_vector_check USING hnsw (e vector_cosine_ops)",
        # Deterministic, distinct vectors: component j of row i is sin(i * (j + 1)).
        f"""INSERT INTO genloom_vector_check
            SELECT i, (SELECT array_agg(sin(i * (j + 1)))::vector FROM generate_series(0, {VECTOR_CHECK_DIM - 1}) j)
            FROM generate_series(1, {VECTOR_CHECK_ROWS}) i""",
        "SET LOCAL enable_seqscan = off",
    ]
    try:
        with engine.connect() as conn:
            transaction = conn.begin()
            try:
                for statement in statements:
                    conn.execute(sa.text(statement))
                nearest = (
                    conn.execute(
                        sa.text(
                            "SELECT id FROM genloom_vector_check "
                            "ORDER BY e <=> (SELECT e FROM genloom_vector_check WHERE id = 7) LIMIT 3"
                        )
                    )
                    .scalars()
                    .all()
                )
                l2 = conn.execute(
                    sa.text("SELECT l2_distance(e, e) + inner_product(e, e) * 0 FROM genloom_vector_check WHERE id = 1")
                ).scalar()
            finally:
                transaction.rollback()
    except sa.exc.DBAPIError as exc:
        from genloom.db.engine import crash_message

        cause = crash_message(exc) or str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        return f"failed: {cause}"
    if not nearest or nearest[0] != 7 or l2 != 0:
        return f"failed: wrong results (nearest {nearest}, self-distance {l2})"
    return "ok"
