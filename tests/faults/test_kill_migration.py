"""SIGKILL a migration at a random point: the `genloom db migrate` process, and separately the
embedded server's postmaster.

The store is put at revision 0001 and filled with enough chunks that the upgrade to head takes
seconds (0014 indexes every chunk for BM25; other revisions add columns, views and policies), so
the kill lands inside it. Alembic runs the whole upgrade in one transaction, so the store must be
left at its old revision or at head, never between: same schema, same rows as before the upgrade
or as after a clean one. The next `genloom db migrate` then finishes the job, and the store equals
the same store upgraded with no fault (see faults_support for the seed).
"""

from __future__ import annotations

import os
import time

import pytest
import sqlalchemy as sa
from faults_support import (
    Snapshot,
    db_growth,
    growth_targets,
    kill_at_event,
    kill_postmaster,
    measure_growth,
    query,
    rng_for,
    run,
    start,
)

pytestmark = pytest.mark.faults

OLD = "0001"

# A collection of 2,400 documents × 8 chunks, written in SQL valid at revision 0001.
FILL = [
    "INSERT INTO embedding_models (name, dim) VALUES ('m3', 3)",
    "INSERT INTO collections (name, embedding_model_id) SELECT 'c', id FROM embedding_models",
    "INSERT INTO documents (collection_id, external_id, sha256, title) "
    "SELECT id, 'doc' || n, lpad(to_hex(n), 64, '0'), 'Title ' || n FROM collections, generate_series(1, 2400) n",
    "INSERT INTO chunks (document_id, ordinal, text, token_count) "
    "SELECT d.id, o, 'chunk ' || o || ' of ' || d.external_id || ' about topic' || (d.id % 97) || ' and word' "
    "|| ((d.id * 7 + o) % 389) || ' with fusion ranking retrieval vectors', 12 "
    "FROM documents d, generate_series(0, 7) o",
    "INSERT INTO embeddings (chunk_id, embedding_model_id, embedding) "
    "SELECT c.id, m.id, CAST('[' || (c.id % 5) || ',1,0]' AS vector) FROM chunks c, embedding_models m",
    "UPDATE documents SET superseded_at = now() WHERE id % 50 = 0",
]

# The store's shape: every column, index, view, constraint, policy, RLS flag, function and trigger.
SCHEMA = """
SELECT 'column', table_name || '.' || column_name || ' ' || data_type || ' ' || is_nullable
       || ' ' || coalesce(column_default, '')
FROM information_schema.columns WHERE table_schema = 'public'
UNION ALL SELECT 'index', indexdef FROM pg_indexes WHERE schemaname = 'public'
UNION ALL SELECT 'view', viewname || ' ' || definition FROM pg_views WHERE schemaname = 'public'
UNION ALL SELECT 'constraint', conrelid::regclass::text || '.' || conname || ' ' || pg_get_constraintdef(oid)
FROM pg_constraint WHERE connamespace = 'public'::regnamespace
UNION ALL SELECT 'policy', tablename || '.' || policyname || ' ' || coalesce(qual, '') || ' ' || coalesce(with_check, '')
FROM pg_policies WHERE schemaname = 'public'
UNION ALL SELECT 'rls', relname || ' ' || relrowsecurity || ' ' || relforcerowsecurity
FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind = 'r'
UNION ALL SELECT 'function', proname || '(' || pg_get_function_identity_arguments(oid) || ') '
       || md5(pg_get_functiondef(oid))
FROM pg_proc WHERE pronamespace = 'public'::regnamespace AND prokind IN ('f', 'p')
UNION ALL SELECT 'trigger', tgrelid::regclass::text || '.' || tgname FROM pg_trigger WHERE NOT tgisinternal
UNION ALL SELECT 'revision', version_num FROM alembic_version
ORDER BY 1, 2
"""

# The rows that matter, by natural columns (sequence values a rolled-back attempt used are not data).
ROWS = {
    "documents": "id, collection_id, external_id, sha256, title, superseded_at IS NOT NULL",
    "chunks": "id, document_id, ordinal, text, token_count",
    "embeddings": "chunk_id, embedding::text",
    "retrieval_chunks": "chunk_id, collection_id, document_id, length, current",
    "retrieval_postings": "chunk_id, term, tf, chunk_length, current",
    "retrieval_term_stats": "collection_id, term, df",
    "retrieval_collection_stats": "collection_id, n_chunks, total_length",
}


def schema_of(url: str) -> list:
    return query(url, SCHEMA)


def rows_of(url: str) -> dict:
    """An md5 per table over its rows (ordered), for the tables that exist at the store's revision."""
    out = {}
    for table, cols in ROWS.items():
        if query(url, "SELECT to_regclass(:t) IS NOT NULL", t=f"public.{table}")[0][0]:
            out[table] = query(url, f"SELECT count(*), md5(string_agg(CAST(ROW({cols}) AS text), E'\\n' "
                                    f"ORDER BY CAST(ROW({cols}) AS text))) FROM {table}")[0]
    return out


def put_at_old_revision_with_data(url: str) -> None:
    """Down to base, up to OLD, and FILL: the same store, with the same ids, on any server."""
    from genloom.db import migrate

    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1), poolclass=sa.pool.NullPool)
    try:
        migrate.downgrade(engine, "base")
        migrate.upgrade(engine, OLD)
        with engine.begin() as conn:
            for statement in FILL:
                conn.execute(sa.text(statement))
    finally:
        engine.dispose()


def wait_until_alone(url: str, timeout: float = 60) -> None:
    """A killed client's backend runs its statement to the end, then finds the socket closed and
    rolls back; until then it holds the migration's locks. Wait for it to go."""
    deadline = time.monotonic() + timeout
    others = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    while query(url, others)[0][0]:
        assert time.monotonic() < deadline, "a killed migration's backend never ended"
        time.sleep(0.1)


def migrating(url: str, proc) -> float:
    """Wait until PROC holds the migration lock (its upgrade has begun); the time it was seen."""
    from genloom.db.migrate import MIGRATION_LOCK_KEY

    held = ("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND (classid::bigint << 32 | objid::bigint) = :k")
    deadline = time.monotonic() + 120
    while not query(url, held, k=MIGRATION_LOCK_KEY)[0][0]:
        assert proc.poll() is None, f"genloom db migrate ended before it migrated: {proc.stderr.read()[-1000:]}"
        assert time.monotonic() < deadline, "genloom db migrate never took the migration lock"
        time.sleep(0.02)
    return time.monotonic()


def clean_upgrade(url: str, env: dict) -> tuple[list, dict, int]:
    """`genloom db migrate` with no fault: the schema and rows it gives, and the bytes it wrote
    (the database's growth: the span a kill point is drawn from)."""

    def upgrade() -> None:
        proc = start("db", "migrate", env=env)
        migrating(url, proc)
        assert proc.wait(timeout=300) == 0, proc.stderr.read()[-2000:]

    grown = measure_growth(url, upgrade)
    return schema_of(url), rows_of(url), grown


def check_left_whole(url: str, before: tuple, after: tuple, what: dict) -> None:
    """At OLD with the rows it had, or at head as a clean upgrade leaves it; nothing between."""
    from genloom.db import migrate

    revision = query(url, "SELECT version_num FROM alembic_version")[0][0]
    what["left_at"] = revision
    print(f"migration kill: {what}")  # shown with -s: which outcome this seed exercised
    assert revision in (OLD, migrate.head_revision()), what
    expected = before if revision == OLD else after
    assert schema_of(url) == expected[0], what
    assert rows_of(url) == expected[1], what


def test_migrate_killed_at_random(db_url):
    put_at_old_revision_with_data(db_url)
    before = (schema_of(db_url), rows_of(db_url))
    snap = Snapshot(db_url)
    try:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        *after, span = clean_upgrade(snap.url, {**env, "DATABASE_URL": snap.url})
        assert after[0] != before[0] and after[1]["retrieval_postings"][0] > 0  # the upgrade did real work

        grown = db_growth(db_url)
        proc = start("db", "migrate", env={**env, "DATABASE_URL": db_url})
        migrating(db_url, proc)
        what = kill_at_event(proc, db_url, rng_for("migrate"), grown, growth_targets(span), event="bytes written")
        wait_until_alone(db_url)
        check_left_whole(db_url, before, after, what)

        run("db", "migrate", env={**env, "DATABASE_URL": db_url})
        assert (schema_of(db_url), rows_of(db_url)) == tuple(after), what
    finally:
        snap.drop()


def test_postmaster_killed_during_migrate(db_url, tmp_path):
    from genloom.db.embedded import Postmaster

    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(GENLOOM_HOME=str(home), OMP_NUM_THREADS="1")
    try:
        run("db", "start", env=env)
        killed = Postmaster.read(home / "pg")
        url = killed.uri("genloom")
        put_at_old_revision_with_data(url)
        before = (schema_of(url), rows_of(url))
        # The clean upgrade: the same store on the session's server.
        put_at_old_revision_with_data(db_url)
        *after, span = clean_upgrade(db_url, {**env, "DATABASE_URL": db_url})

        grown = db_growth(url)
        proc = start("db", "migrate", env=env)
        migrating(url, proc)
        what = kill_at_event(proc, url, rng_for("postmaster-migrate"), grown, growth_targets(span),
                             kill=kill_postmaster(killed), event="bytes written")

        # `genloom db url` starts the server again (crash recovery) without migrating: the store is whole.
        run("db", "url", env=env)
        restarted = Postmaster.read(home / "pg")
        assert restarted is not None and restarted.pid != killed.pid, what
        url = restarted.uri("genloom")
        check_left_whole(url, before, after, what)

        run("db", "migrate", env=env)
        assert (schema_of(url), rows_of(url)) == tuple(after), what
    finally:
        if home.exists():
            run("db", "stop", env=env)
