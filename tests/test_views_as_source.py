"""The analytics views are source files: the database, the files, the pinned migration copy and the docs agree."""

from __future__ import annotations

import re

import sqlalchemy as sa

from conftest import REPO_ROOT


def _newest_pinned_copy():
    folders = sorted((REPO_ROOT / "migrations" / "views").glob("[0-9]*"))
    assert folders, "no pinned copy of the views under migrations/views/"
    return folders[-1]


def test_every_view_in_the_database_has_a_file_and_every_file_a_view(engine):
    from genloom.analytics.views import ORDER, files

    with engine.connect() as conn:
        in_db = set(conn.execute(sa.text(
            "SELECT viewname FROM pg_views WHERE schemaname = 'public' AND viewname LIKE 'v\\_%'")).scalars())
    assert in_db == files()
    assert sorted(ORDER) == sorted(files())  # the documented order lists every file once


def test_the_database_runs_exactly_the_sql_of_the_files(engine):
    """Each file, created as a scratch view, deparses to what the migrated database holds."""
    from genloom.analytics.views import read_views

    with engine.connect() as conn, conn.begin() as tx:
        for view in read_views():
            conn.execute(sa.text(f"CREATE TEMP VIEW scratch_{view.name} AS\n{view.sql}"))
            mine, theirs = conn.execute(sa.text(
                f"SELECT pg_get_viewdef('scratch_{view.name}'::regclass), pg_get_viewdef('{view.name}'::regclass)"
            )).one()
            assert mine == theirs, view.name
        tx.rollback()


def test_the_newest_migration_copy_equals_the_source_files():
    """Editing a view without a migration that pins the new SQL fails here."""
    from genloom.analytics.views import FOLDER, files

    pinned = _newest_pinned_copy()
    assert {p.stem for p in pinned.glob("v_*.sql")} == files()
    for name in files():
        assert (pinned / f"{name}.sql").read_bytes() == (FOLDER / f"{name}.sql").read_bytes(), name


def test_docs_and_cli_list_the_views_from_the_file_headers(cli):
    from genloom.analytics.views import ORDER, markdown_table, read_views

    docs = (REPO_ROOT / "docs" / "analytics.md").read_text(encoding="utf-8")
    table = re.search(r"<!-- views:begin[^>]*-->\n(.*?)\n<!-- views:end -->", docs, re.S).group(1)
    assert table == markdown_table()
    listed = cli("analytics", "views", "--json")
    assert listed.exit_code == 0
    assert listed.json() == [{"view": v.name, "description": v.description} for v in read_views()]
    assert [row["view"] for row in listed.json()] == ORDER
    assert listed.json()[0]["description"].startswith("per model (name, revision, registry id)")


def test_dedup_methods_are_one_list_for_code_and_schema(engine):
    from genloom.db.models import DEDUP_DECISION_METHODS
    from genloom.dedup import METHODS

    with engine.connect() as conn:
        defs = dict(conn.execute(sa.text(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conname IN ('ck_dedup_decisions_method', 'ck_chunk_duplicates_method')")).all())
    assert len(defs) == 2
    for definition in defs.values():
        assert sorted(re.findall(r"'(\w+)'::text", definition)) == sorted(DEDUP_DECISION_METHODS)
    assert set(METHODS) <= set(DEDUP_DECISION_METHODS)
