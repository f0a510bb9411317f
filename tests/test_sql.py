"""`genloom sql`: read-only by Postgres' own rules, one statement, timeout, row limit, clear errors."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from genloom.errors import BadInput, DatabaseError


@pytest.fixture(scope="module")
def sql_db(pg_server):
    """One database for the module: every test here only reads (and checks nothing changed);
    a database per test costs seconds on a busy machine."""
    import psycopg

    from conftest import _create_database, _drop_database

    name, url = _create_database(pg_server)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO sessions (user_id) SELECT 'u' || g FROM generate_series(1, 5) g")
    yield url
    _drop_database(pg_server, name)


@pytest.fixture
def seeded(sql_db, monkeypatch):
    from genloom.db.engine import get_engine, reset_engines

    monkeypatch.setenv("DATABASE_URL", sql_db)
    reset_engines()
    yield get_engine()
    reset_engines()


def count_sessions(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM sessions")).scalar()


def test_runs_as_the_reader_login_itself(seeded):
    from genloom.analytics.sql import run_sql

    result = run_sql("SELECT current_user, session_user, current_setting('transaction_read_only') AS ro")
    assert result.columns == ["current_user", "session_user", "ro"]
    # session_user is the login: no SET ROLE that a query could undo.
    assert result.rows == [("genloom_reader", "genloom_reader", "on")]


def test_reader_role_is_unprivileged(seeded):
    engine = seeded
    with engine.connect() as conn:
        role = conn.execute(sa.text(
            "SELECT rolsuper, rolcreaterole, rolcreatedb, rolbypassrls, rolcanlogin, "
            "EXISTS (SELECT 1 FROM pg_auth_members WHERE member = r.oid) AS member "
            "FROM pg_roles r WHERE rolname = 'genloom_reader'")).one()
        settings = conn.execute(sa.text(
            "SELECT setconfig FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole "
            "WHERE r.rolname = 'genloom_reader' AND s.setdatabase = 0")).scalar()
    assert tuple(role) == (False, False, False, False, True, False)
    assert "default_transaction_read_only=on" in settings and any(s.startswith("statement_timeout=") for s in settings)


def test_the_role_itself_cannot_write_even_outside_a_read_only_transaction(seeded):
    """The first fence on its own: grants. A plain psycopg session as the reader, read-write."""
    import psycopg

    from genloom.db.reader import reader_conninfo

    with psycopg.connect(reader_conninfo(), autocommit=True) as conn:
        conn.execute("SET default_transaction_read_only = off")
        for statement in ("INSERT INTO sessions (user_id) VALUES ('x')", "UPDATE sessions SET user_id = 'x'",
                          "DELETE FROM sessions", "TRUNCATE sessions", "CREATE TABLE t (a int)",
                          "DROP VIEW v_model_stats"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
    assert count_sessions(seeded) == 5


WRITES = [
        "INSERT INTO sessions (user_id) VALUES ('x')",
        "UPDATE sessions SET user_id = 'x'",
        "DELETE FROM sessions",
        "TRUNCATE sessions",
        "DROP TABLE sessions",
        "CREATE TABLE evil (a int)",
        "ALTER TABLE sessions ADD COLUMN evil int",
        "WITH d AS (DELETE FROM sessions RETURNING id) SELECT count(*) FROM d",
        "SELECT lo_from_bytea(0, 'x')",
]


def test_writes_and_ddl_are_refused_by_postgres(seeded):
    from genloom.analytics.sql import run_sql

    # One database for all statements (a fresh one per case costs seconds on a busy machine).
    for statement in WRITES:
        with pytest.raises(BadInput, match="refused by Postgres: cannot execute .* in a read-only transaction"):
            run_sql(statement)
    assert count_sessions(seeded) == 5


ESCAPES = [
        ("SET ROLE postgres", 'permission denied to set role "postgres"'),
        ("SET SESSION AUTHORIZATION postgres", "permission denied to set session authorization"),
        # set_config is not executable by the reader at all (migration 0013: no switching tenant mid-query).
        ("SELECT set_config('role', 'postgres', false)", "permission denied for function set_config"),
        # Two statements (an escape then a write) never reach the server as two.
        ("RESET ROLE; DELETE FROM sessions", "cannot insert multiple commands"),
        ("RESET SESSION AUTHORIZATION; DELETE FROM sessions", "cannot insert multiple commands"),
        ("SET default_transaction_read_only = off; DELETE FROM sessions", "cannot insert multiple commands"),
        ("COMMIT; DELETE FROM sessions", "cannot insert multiple commands"),
]


def test_role_escapes_fail(seeded):
    from genloom.analytics.sql import run_sql

    for statement, message in ESCAPES:
        with pytest.raises(BadInput, match=message):
            run_sql(statement)
    assert count_sessions(seeded) == 5


def test_reset_role_alone_changes_nothing(seeded):
    from genloom.analytics.sql import run_sql

    assert run_sql("RESET ROLE").status == "RESET"
    # Each call is a fresh login as the reader; there was no other role to return to.
    assert run_sql("SELECT current_user").rows == [("genloom_reader",)]


def test_row_limit_fetches_limit_plus_one_and_says_so(seeded):
    from genloom.analytics.sql import run_sql

    # In the select list the series streams row by row, so this returns as soon as the
    # 4th row arrives (the server is cancelled), instead of running 10^9 rows to the end.
    # Had it read on, the 20 s statement timeout would have raised instead of returning; and the
    # server is not still producing the series (an event, not a wall-clock bound on a busy machine).
    cut = run_sql("SELECT generate_series(1, 1000000000) AS g", limit=3, timeout_s=20)
    assert cut.rows == [(1,), (2,), (3,)] and cut.truncated
    with seeded.connect() as conn:
        still_running = conn.execute(sa.text(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND pid <> pg_backend_pid()"
            " AND query LIKE 'SELECT generate_series(1, 1000000000)%'")).scalar()
    assert still_running == 0
    exact = run_sql("SELECT g FROM generate_series(1, 3) g", limit=3)
    assert len(exact.rows) == 3 and not exact.truncated


def test_statement_timeout_cannot_be_lifted_by_the_query(seeded):
    from genloom.analytics.sql import run_sql

    with pytest.raises(BadInput, match="statement timeout"):
        run_sql("SELECT pg_sleep(5)", timeout_s=0.5)
    with pytest.raises(BadInput, match="permission denied for function set_config"):
        run_sql("SELECT set_config('statement_timeout', '0', false), pg_sleep(5)", timeout_s=0.5)


def test_empty_result_keeps_its_columns(seeded):
    from genloom.analytics.sql import run_sql

    result = run_sql("SELECT model_name, generations FROM v_model_stats")
    assert result.columns == ["model_name", "generations"] and result.rows == []


def test_syntax_error_has_message_and_position():
    from genloom.db.reader import _position_text

    assert _position_text("SELECT *\nFORM x", 10) == "line 2, column 1: FORM x"


def test_cli_syntax_error_unknown_column_and_bad_input(cli, seeded):
    result = cli("sql", "SELECT * FORM sessions")
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.strip() == 'error: syntax error at or near "FORM" at line 1, column 10: SELECT * FORM sessions'
    result = cli("sql", "SELECT nosuch FROM sessions")
    assert result.exit_code == 1
    assert result.stderr.strip() == 'error: column "nosuch" does not exist at line 1, column 8: SELECT nosuch FROM sessions'
    result = cli("sql", "SELECT * FROM nosuch_table")
    assert result.exit_code == 1 and 'relation "nosuch_table" does not exist' in result.stderr
    for args in (["sql"], ["sql", "  ;  "], ["sql", "SELECT 1", "--limit", "0"], ["sql", "SELECT 1", "--json", "--csv"]):
        result = cli(*args)
        assert result.exit_code == 1 and len(result.stderr.strip().splitlines()) == 1, (args, result.stderr)


def test_cli_outputs_table_json_csv_and_file(cli, seeded, tmp_path):
    query = "SELECT id, user_id FROM sessions ORDER BY id"
    table = cli("sql", query, "--limit", "2")
    assert table.exit_code == 0
    assert "user_id" in table.stdout and "u1" in table.stdout and "u3" not in table.stdout
    assert "rows cut at --limit 2" in table.stderr

    as_json = cli("sql", query, "--json")
    payload = as_json.json()
    assert payload["columns"] == ["id", "user_id"] and payload["row_count"] == 5 and payload["truncated"] is False
    assert [r["user_id"] for r in payload["rows"]] == ["u1", "u2", "u3", "u4", "u5"]

    as_csv = cli("sql", "SELECT user_id, NULL AS nothing, '{\"a\": 1}'::jsonb AS j FROM sessions ORDER BY id LIMIT 2", "--csv")
    assert as_csv.stdout == 'user_id,nothing,j\nu1,,"{""a"": 1}"\nu2,,"{""a"": 1}"\n'

    path = tmp_path / "q.sql"
    path.write_text("-- a comment\nSELECT count(*) AS n\nFROM sessions;\n")
    from_file = cli("sql", "--file", path, "--json")
    assert from_file.json()["rows"] == [{"n": 5}]


def test_cli_refusal_is_one_line_and_nothing_changes(cli, seeded):
    result = cli("sql", "DELETE FROM sessions")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "error: refused by Postgres: cannot execute DELETE in a read-only transaction "
        "(genloom sql runs as the read-only role genloom_reader)"
    ]
    assert count_sessions(seeded) == 5


def test_a_privileged_readonly_url_is_refused(seeded, monkeypatch, sql_db):
    from genloom.analytics.sql import run_sql

    # Pointing GENLOOM_READONLY_URL at the superuser must fail closed, not run.
    monkeypatch.setenv("GENLOOM_READONLY_URL", sql_db)
    with pytest.raises(DatabaseError, match="not read-only .*superuser"):
        run_sql("SELECT 1")


def test_external_database_url_gets_a_stored_password(seeded, genloom_home):
    """DATABASE_URL is set in tests, so the external path runs: a 0600 password file appears."""
    from genloom.analytics.sql import run_sql

    assert run_sql("SELECT 1 AS one").rows == [(1,)]
    files = list((genloom_home / "readonly").glob("*.password"))
    assert files and oct(files[0].stat().st_mode & 0o777) == "0o600"
