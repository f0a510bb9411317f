"""The generation log, metrics and the audit log are partitioned by month (migration 0023).

Specifications:
- converting a store that holds data keeps every row, foreign key, policy, trigger and view;
- retention detaches and drops whole months (pg_inherits loses them) and deletes only inside
  the month holding the cut-off; the audit log goes only when asked, by whole months;
- a time-filtered query reads only the partitions of its months (EXPLAIN);
- the months ahead are made by genloom itself, gaps included.
"""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

UTC = dt.timezone.utc
NOW = dt.datetime.now(UTC)
PARTITIONED = ["generations", "generation_sources", "feedback", "metrics"]


def months_ago(n: int, day: int = 10) -> dt.datetime:
    index = NOW.year * 12 + NOW.month - 1 - n
    return dt.datetime(index // 12, index % 12 + 1, day, 12, tzinfo=UTC)


# A store at 0015 with a log over the last 6 months, two tenants, feedback, sources, metrics, audit.
SEED = [
    "INSERT INTO embedding_models (name, dim) VALUES ('m3', 3)",
    "INSERT INTO collections (name, embedding_model_id) SELECT 'c', id FROM embedding_models",
    "INSERT INTO documents (collection_id, external_id, sha256, title) "
    "SELECT id, 'doc', repeat('a', 64), 'T' FROM collections",
    "INSERT INTO chunks (document_id, ordinal, text, token_count) SELECT id, 0, 'a chunk', 2 FROM documents",
    "INSERT INTO sessions DEFAULT VALUES",
    "INSERT INTO prompts (session_id, text, created_at) SELECT id, 'q', :oldest FROM sessions",
    # 60 generations: 10 per month, months 0..5 ago; every third one of tenant 'other'.
    "INSERT INTO generations (prompt_id, model_name, output, status, total_ms, created_at, tenant) "
    "SELECT (SELECT id FROM prompts), CASE WHEN n % 2 = 0 THEN 'a' ELSE 'b' END, 'x', "
    "CASE WHEN n % 7 = 0 THEN 'error' ELSE 'ok' END, n, "
    "date_trunc('month', now()) - make_interval(months => n / 10) + make_interval(days => 1 + n % 10), "
    "CASE WHEN n % 3 = 0 THEN 'other' ELSE 'default' END FROM generate_series(0, 59) n",
    "INSERT INTO generation_sources (generation_id, rank, chunk_id, score, tenant) "
    "SELECT g.id, r, (SELECT min(id) FROM chunks), 1.0 / r, g.tenant FROM generations g, generate_series(1, 2) r",
    "INSERT INTO feedback (generation_id, score, created_at, tenant) "
    "SELECT id, 1 + id % 5, created_at + interval '1 hour', tenant FROM generations WHERE id % 2 = 0",
    "INSERT INTO runs (kind, status, params) VALUES ('train', 'succeeded', '{\"name\": \"m\"}')",
    "INSERT INTO metrics (run_id, step, name, value, created_at) "
    "SELECT id, s, 'loss', 1.0 / s, now() - make_interval(days => 40 * s) FROM runs, generate_series(1, 4) s",
    "INSERT INTO audit_log (action, at) SELECT 'test.action', now() - make_interval(months => n) "
    "FROM generate_series(0, 5) n",
]


def _seed(engine) -> None:
    with engine.begin() as conn:
        for statement in SEED:
            conn.execute(sa.text(statement), {"oldest": months_ago(7)})


def _views(conn) -> list[str]:
    return conn.execute(sa.text("SELECT viewname FROM pg_views WHERE schemaname = 'public' ORDER BY 1")).scalars().all()


def _store(conn) -> dict:
    """Everything the conversion must keep: rows, foreign keys, policies, triggers, grants, views."""
    counts = {t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar() for t in PARTITIONED}
    rows = {
        t: sorted(map(tuple, conn.execute(sa.text(f"SELECT id, tenant FROM {t}")).all()))
        for t in ("generations", "feedback", "metrics", "audit_log")
    }
    fks = conn.execute(
        sa.text(
            "SELECT conname, conrelid::regclass::text, confrelid::regclass::text FROM pg_constraint "
            "WHERE contype = 'f' AND conparentid = 0 ORDER BY 1"
        )
    ).all()
    policies = conn.execute(sa.text("SELECT tablename, policyname, qual FROM pg_policies ORDER BY 1, 2")).all()
    triggers = conn.execute(
        sa.text(
            "SELECT tgrelid::regclass::text, tgname, tgenabled FROM pg_trigger "
            "WHERE NOT tgisinternal AND tgparentid = 0 ORDER BY 1, 2"
        )
    ).all()
    grants = conn.execute(
        sa.text(
            "SELECT c.relname, pg_get_userbyid(a.grantee), a.privilege_type FROM pg_class c, aclexplode(c.relacl) a "
            "WHERE c.relnamespace = 'public'::regnamespace AND NOT c.relispartition AND c.relkind IN ('r', 'p', 'v') "
            "ORDER BY 1, 2, 3"
        )
    ).all()
    views = {}
    for view in _views(conn):
        definition = conn.execute(sa.text("SELECT pg_get_viewdef(CAST(:v AS regclass))"), {"v": view}).scalar()
        content = sorted(map(repr, conn.execute(sa.text(f"SELECT * FROM {view}")).all()))
        views[view] = (definition, content)
    return {
        "counts": counts, "rows": rows, "fks": fks, "policies": policies, "triggers": triggers, "grants": grants,
        "views": views,
    }  # fmt: skip


@pytest.fixture
def old_store(engine):
    """A store at revision 0018 with data, then converted by 0023 (later migrations may change
    views on purpose, e.g. 0026); yields (engine, state before), then migrates on to head."""
    from genloom.db import migrate

    migrate.downgrade(engine, "0018")
    _seed(engine)
    with engine.connect() as conn:
        before = _store(conn)
    migrate.upgrade(engine, "0023")
    yield engine, before
    migrate.upgrade(engine, "head")


def test_converting_a_store_with_data_keeps_rows_keys_policies_triggers_and_views(old_store):
    engine, before = old_store
    with engine.connect() as conn:
        kinds = conn.execute(
            sa.text("SELECT relname, relkind FROM pg_class WHERE relname = ANY(:t) ORDER BY 1"), {"t": PARTITIONED}
        ).all()
        after = _store(conn)
        months = conn.execute(
            sa.text("SELECT count(*) FROM pg_inherits WHERE inhparent = 'generations'::regclass")
        ).scalar()
    assert {kind for _, kind in kinds} == {"p"}
    assert after["counts"] == before["counts"] and before["counts"]["generations"] == 60
    assert after["rows"] == before["rows"]
    assert after["fks"] == before["fks"]
    assert after["policies"] == before["policies"]
    assert after["triggers"] == before["triggers"]
    assert after["grants"] == before["grants"]
    assert after["views"].keys() == before["views"].keys() and len(after["views"]) >= 15
    for view, (definition, content) in before["views"].items():
        assert after["views"][view] == (definition, content), f"view {view} changed"
    # 6 months of data + 3 ahead + the `_p_before` partition.
    assert months == 6 + 3 + 1


def test_converted_store_keeps_its_rules(old_store, cli):
    engine, _ = old_store
    with engine.begin() as conn:
        new_id = conn.execute(
            sa.text("INSERT INTO generations (prompt_id, model_name) SELECT min(id), 'm' FROM prompts RETURNING id")
        ).scalar()
        assert new_id > conn.execute(sa.text("SELECT max(id) FROM generations WHERE id <> :i"), {"i": new_id}).scalar()
    with engine.begin() as conn, pytest.raises(sa.exc.DBAPIError, match="append-only"):
        conn.execute(sa.text("UPDATE audit_log SET action = 'rewritten'"))
    with engine.begin() as conn, pytest.raises(sa.exc.IntegrityError, match="fk_feedback_generation_id"):
        conn.execute(
            sa.text("INSERT INTO feedback (generation_id, generation_created_at, score) VALUES (-1, now(), 1)")
        )
    # Row-level security still holds per tenant (the ORM session runs as genloom_app).
    from genloom.db.engine import session_scope
    from genloom.db.tenancy import use_tenant

    with use_tenant("other"), session_scope() as session:
        seen = session.execute(sa.text("SELECT DISTINCT tenant FROM generations")).scalars().all()
    assert seen == ["other"]
    # Feedback through the library lands in its generation's month.
    from genloom.generation.feedback import add_feedback

    with engine.connect() as conn:
        oldest_id, oldest_at = conn.execute(
            sa.text("SELECT id, created_at FROM generations WHERE tenant = 'default' ORDER BY created_at LIMIT 1")
        ).one()
    with session_scope() as session:
        row = add_feedback(session, oldest_id, score=4)
        assert row.generation_created_at == oldest_at


def test_downgrade_returns_plain_tables_with_the_same_rows(old_store):
    from genloom.db import migrate

    engine, before = old_store
    migrate.downgrade(engine, "0018")
    with engine.connect() as conn:
        kinds = conn.execute(
            sa.text("SELECT DISTINCT relkind FROM pg_class WHERE relname = ANY(:t)"), {"t": PARTITIONED}
        )
        assert kinds.scalars().all() == ["r"]
        assert _store(conn) == before


def _partitions(conn, table: str) -> list[str]:
    return sorted(
        conn.execute(
            sa.text(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = CAST(:t AS regclass)"
            ),
            {"t": table},
        )
        .scalars()
        .all()
    )


def test_retention_drops_whole_months_and_deletes_only_in_the_boundary_month(old_store, cli):
    engine, before = old_store
    cutoff = months_ago(3, day=5)  # months 4 and 5 ago go whole; 3 ago is the boundary month
    with engine.connect() as conn:
        parts_before = _partitions(conn, "generations")
        expected_left = conn.execute(
            sa.text("SELECT count(*) FROM generations WHERE created_at >= :c"), {"c": cutoff}
        ).scalar()
    # Another tenant has rows in those months: without --all-tenants only this tenant's rows go.
    mine = cli("retention", "--older-than", cutoff.isoformat(), "--yes", "--json")
    assert mine.exit_code == 0, mine.stderr
    assert mine.json()["partitions"] is None
    with engine.connect() as conn:
        assert _partitions(conn, "generations") == parts_before
        assert (
            conn.execute(
                sa.text("SELECT count(*) FROM generations WHERE created_at < :c AND tenant = 'default'"), {"c": cutoff}
            ).scalar()
            == 0
        )
        boundary_deleted = conn.execute(
            sa.text("SELECT count(*) FROM generations WHERE created_at < :c AND created_at >= :m"),
            {"c": cutoff, "m": months_ago(3, day=1).replace(hour=0)},
        ).scalar()

    result = cli("retention", "--older-than", cutoff.isoformat(), "--all-tenants", "--yes", "--json")
    assert result.exit_code == 0, result.stderr
    gone = [f"{t}_p{months_ago(n):%Y_%m}" for t in ("generation_sources", "feedback", "generations") for n in (4, 5)]
    gone += [f"{t}_p_before" for t in ("generation_sources", "feedback", "generations")]
    assert sorted(result.json()["partitions"]["dropped_partitions"]) == sorted(gone)
    assert result.json()["partitions"]["deleted_in_boundary"]["generations"] == boundary_deleted > 0
    with engine.connect() as conn:
        assert _partitions(conn, "generations") == sorted(set(parts_before) - set(gone))
        assert conn.execute(sa.text("SELECT count(*) FROM generations")).scalar() == expected_left
        assert conn.execute(sa.text("SELECT min(created_at) FROM generations")).scalar() >= cutoff
        orphans = conn.execute(
            sa.text(
                "SELECT (SELECT count(*) FROM feedback f WHERE NOT EXISTS (SELECT 1 FROM generations g WHERE g.id = f.generation_id))"
                " + (SELECT count(*) FROM generation_sources s WHERE generation_created_at < :c)"
            ),
            {"c": cutoff},
        ).scalar()
        assert orphans == 0
        # The audit log is never dropped, and metrics keep every month when not asked.
        assert conn.execute(sa.text("SELECT count(*) FROM audit_log WHERE action = 'test.action'")).scalar() == 6
        assert conn.execute(sa.text("SELECT count(*) FROM metrics")).scalar() == before["counts"]["metrics"]

    # The audit log is one table whose hash chain still verifies after the log's months went.
    with engine.connect() as conn:
        assert not _partitions(conn, "audit_log")
    assert cli("audit", "verify").exit_code == 0


def test_time_filtered_analytics_read_only_their_months(old_store):
    engine, _ = old_store
    since = months_ago(1, day=1).replace(hour=0)
    with engine.connect() as conn:
        query = f"SELECT model_name, count(*) FROM generations WHERE created_at >= '{since.isoformat()}' GROUP BY 1"
        plan = "\n".join(conn.execute(sa.text(f"EXPLAIN {query}")).scalars())
    scanned = {name for name in _partitions_named(plan, "generations")}
    assert scanned == {f"generations_p{months_ago(n):%Y_%m}" for n in (-3, -2, -1, 0, 1)}, plan


def _partitions_named(plan: str, table: str) -> list[str]:
    import re

    return re.findall(rf"\b({table}_p\w+)", plan)


def test_genloom_makes_the_months_ahead_itself_and_fills_gaps(engine):
    from genloom.db import partitions

    later = NOW + dt.timedelta(days=200)  # ~7 months on: nobody ran genloom since
    with engine.begin() as conn:
        assert partitions.needs_partitions(conn, now=later)
        made = partitions.ensure_partitions(conn, now=later)
        assert not partitions.needs_partitions(conn, now=later)
        assert partitions.ensure_partitions(conn, now=later) == []  # re-running is a no-op
        months = [p.start for p in partitions.partitions_of(conn, "generations") if p.start]
    horizon = partitions.add_months(partitions.month_start(later), partitions.AHEAD_MONTHS)
    assert months[-1] == horizon
    assert all(partitions.add_months(a, 1) == b for a, b in zip(months, months[1:]))  # no gap
    assert len(made) == len(partitions.PARTITIONED) * (len(months) - 4)
