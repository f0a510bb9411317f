"""The store's read-only front door: the login, checks and execution behind `genloom sql`.

genloom.analytics.sql.run_sql is the job (it audits each statement); this module is the part
that talks to the driver, so it lives with the store.

Safety comes from Postgres, not from reading the user's SQL:

1. We connect *as* `genloom_reader` (created by migration 0007): a LOGIN role with
   SELECT grants only, no superuser/CREATEROLE/CREATEDB, member of no role. Connecting
   as a privileged user and `SET ROLE reader` would not do: the query could
   `RESET ROLE` its way back. Before running anything we check the role we are
   really logged in as, so a mis-pointed GENLOOM_READONLY_URL fails closed.
2. The statement runs inside a READ ONLY transaction (and the role defaults to
   `default_transaction_read_only = on`), so even a misconfigured grant cannot write.
3. The extended query protocol accepts exactly one statement, so `SET ...; SELECT ...`
   cannot switch off the statement timeout first; a watchdog cancels the query from
   the client as a last resort if the server-side timeout were ever lifted.

This module opens its own connection rather than taking a Session: the point is a
different login role than the one the rest of genloom uses.

How the reader authenticates:
- GENLOOM_READONLY_URL set: used as is (provision the role yourself; see docs/analytics.md).
- embedded server: trust authentication over its Unix socket, no password.
- DATABASE_URL: genloom sets a generated password on genloom_reader (the migrating user
  needs CREATEROLE) and keeps it in $GENLOOM_HOME/readonly/ with mode 0600.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import secrets
import threading
import time
from pathlib import Path
from typing import Any

from genloom.errors import BadInput, DatabaseError

READER_ROLE = "genloom_reader"
DEFAULT_LIMIT = 1000
DEFAULT_TIMEOUT_S = 30.0
READONLY_URL_ENV = "GENLOOM_READONLY_URL"


@dataclasses.dataclass
class SqlResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]
    truncated: bool  # more rows existed than `limit`; only the first `limit` are here
    limit: int
    status: str | None  # the command tag for statements without rows (e.g. "SHOW", "RESET")
    elapsed_ms: float

    def as_dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row)) for row in self.rows]


# --------------------------------------------------------------------------- connecting


def _conninfo_dict(url: str) -> dict[str, Any]:
    from psycopg.conninfo import conninfo_to_dict

    if url.startswith("postgresql+psycopg://"):
        url = "postgresql://" + url.split("://", 1)[1]
    try:
        return conninfo_to_dict(url)
    except Exception as exc:
        raise DatabaseError(f"cannot parse the database URL: {exc}") from None


def _password_file(params: dict[str, Any]) -> Path:
    from genloom.config import genloom_home

    # One password per server: the role is cluster-wide, so databases share it.
    key = f"{params.get('host', '')}:{params.get('port', 5432)}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return genloom_home() / "readonly" / f"{digest}.password"


def _set_reader_password(password: str) -> None:
    import sqlalchemy as sa

    from genloom.db.engine import get_engine

    try:
        with get_engine().begin() as conn:
            literal = conn.execute(sa.text("SELECT quote_literal(:p)"), {"p": scram_verifier(conn, password)}).scalar()
            conn.exec_driver_sql(f"ALTER ROLE {READER_ROLE} PASSWORD {literal}")  # no binds: ':' is data here
    except sa.exc.DBAPIError as exc:
        first = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        raise DatabaseError(
            f"cannot set a password on role {READER_ROLE} ({first}); "
            f"create a read-only login yourself and set {READONLY_URL_ENV} (see docs/analytics.md)"
        ) from None


def scram_verifier(conn, password: str) -> str:
    """The SCRAM-SHA-256 verifier of `password`, computed by libpq on the client (as psql's
    \\password does): ALTER ROLE then carries only the verifier, so the password never
    reaches the server's statement log (log_statement=ddl) or pg_stat_activity."""
    pgconn = conn.connection.driver_connection.pgconn
    return pgconn.encrypt_password(password.encode(), READER_ROLE.encode(), b"scram-sha-256").decode()


def _stored_password(params: dict[str, Any], *, renew: bool) -> str:
    path = _password_file(params)
    if path.exists() and not renew:
        return path.read_text().strip()
    password = secrets.token_urlsafe(24)
    _set_reader_password(password)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write then rename, created 0600, so a reader never sees a half-written file.
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(password)
    os.replace(tmp, path)
    return password


def reader_conninfo(*, renew_password: bool = False) -> str:
    """A libpq conninfo that logs in as the read-only role (starting/migrating the store)."""
    from psycopg.conninfo import make_conninfo

    from genloom.db.engine import get_engine, is_embedded, read_libpq_url

    explicit = os.environ.get(READONLY_URL_ENV, "").strip()
    if explicit:
        return make_conninfo(**_conninfo_dict(explicit))
    get_engine()  # the schema (views, role, grants) must exist before the reader logs in
    params = _conninfo_dict(read_libpq_url())  # a fresh-enough replica when there is one
    params["user"] = READER_ROLE
    params.pop("password", None)
    if not is_embedded():
        params["password"] = _stored_password(params, renew=renew_password)
    return make_conninfo(**params)


def _connect(timeout_s: float):
    import psycopg

    from genloom.db.engine import reader_connection

    # The store opens the reader's connection: it is held by the same row-level policies (tenant).
    timeout_ms = int(timeout_s * 1000)
    extra: dict[str, Any] = {"application_name": "genloom sql", "connect_timeout": 10}
    try:
        return reader_connection(reader_conninfo(), statement_timeout_ms=timeout_ms, **extra)
    except psycopg.OperationalError as exc:
        message = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        if "password authentication failed" in message and not os.environ.get(READONLY_URL_ENV):
            # Another genloom home may have reset the shared role's password: renew ours once.
            try:
                return reader_connection(reader_conninfo(renew_password=True), statement_timeout_ms=timeout_ms, **extra)
            except psycopg.OperationalError as exc2:
                message = str(exc2).strip().splitlines()[-1]
        if "does not exist" in message and READER_ROLE in message:
            raise DatabaseError(
                f"role {READER_ROLE} does not exist: run `genloom db migrate` as a user with CREATEROLE, "
                f"or create a read-only login and set {READONLY_URL_ENV} (see docs/analytics.md)"
            ) from None
        raise DatabaseError(f"cannot connect as the read-only role: {message}") from None


def _check_reader(conn) -> str:
    """Refuse to run user SQL on a login that could write or become another role."""
    row = conn.execute(
        """
        SELECT r.rolname, r.rolsuper, r.rolcreaterole, r.rolcreatedb, r.rolbypassrls, r.rolreplication,
               EXISTS (SELECT 1 FROM pg_auth_members am WHERE am.member = r.oid) AS is_member,
               EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                       WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND c.relkind IN ('r', 'p')
                         AND (has_table_privilege(r.oid, c.oid, 'INSERT') OR has_table_privilege(r.oid, c.oid, 'UPDATE')
                              OR has_table_privilege(r.oid, c.oid, 'DELETE') OR has_table_privilege(r.oid, c.oid, 'TRUNCATE')))
                   AS can_write
        FROM pg_roles r WHERE r.rolname = session_user
        """
    ).fetchone()
    conn.rollback()
    name, *flags = row
    reasons = [
        label
        for label, bad in zip(
            [
                "superuser",
                "CREATEROLE",
                "CREATEDB",
                "BYPASSRLS",
                "REPLICATION",
                "member of another role",
                "write grants",
            ],
            flags,
        )
        if bad
    ]
    if reasons:
        raise DatabaseError(
            f"refusing to run: the read-only login {name!r} is not read-only ({', '.join(reasons)}); "
            f"point {READONLY_URL_ENV} at a SELECT-only role"
        )
    return name


# --------------------------------------------------------------------------- errors


def _position_text(query: str, position: int) -> str:
    """'line L, column C: …snippet' for Postgres' 1-based character position."""
    before = query[: position - 1]
    line = before.count("\n") + 1
    column = len(before) - (before.rfind("\n") + 1) + 1
    source_line = query.splitlines()[line - 1] if query.splitlines() else ""
    start = max(0, column - 1 - 20)
    snippet = source_line[start : column - 1 + 30].strip()
    return f"line {line}, column {column}: {'…' if start else ''}{snippet}"


def _translate(exc: Exception, query: str, timeout_s: float) -> Exception:
    import psycopg

    if not isinstance(exc, psycopg.Error):
        return exc
    if "COPY cannot be used" in str(exc):
        return BadInput("COPY is not supported by genloom sql: SELECT the rows and add --csv")
    diag = exc.diag
    message = diag.message_primary or (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if isinstance(exc, psycopg.errors.QueryCanceled):
        return BadInput(f"query cancelled after the {timeout_s:g} s statement timeout (raise it with --timeout)")
    if "multiple commands" in message:
        return BadInput(f"{message}: genloom sql runs one statement at a time")
    if isinstance(exc, (psycopg.errors.ReadOnlySqlTransaction, psycopg.errors.InsufficientPrivilege)):
        return BadInput(f"refused by Postgres: {message} (genloom sql runs as the read-only role {READER_ROLE})")
    text = message
    if diag.statement_position:
        text += f" at {_position_text(query, int(diag.statement_position))}"
    if diag.message_hint:
        text += f" (hint: {diag.message_hint.splitlines()[0]})"
    if isinstance(exc, psycopg.OperationalError):
        return DatabaseError(text)
    return BadInput(text)


# --------------------------------------------------------------------------- running


def _describe(conn, query: str) -> list[str]:
    """Column names of the statement's result ([] for commands), without running it.

    Parse + describe on the unnamed statement: Postgres reports syntax errors and unknown
    columns here with their position, and an empty result still has column names.
    """
    import psycopg
    from psycopg import pq

    pgconn = conn.pgconn
    res = pgconn.prepare(b"", query.encode())
    if res.status != pq.ExecStatus.COMMAND_OK:
        raise psycopg.errors.error_from_result(res, encoding=conn.info.encoding)
    res = pgconn.describe_prepared(b"")
    if res.status != pq.ExecStatus.COMMAND_OK:
        raise psycopg.errors.error_from_result(res, encoding=conn.info.encoding)
    encoding = conn.info.encoding
    return [res.fname(i).decode(encoding) for i in range(res.nfields)]


MAX_TIMEOUT_S = 24 * 3600.0


def check_timeout(timeout_s: float) -> None:
    """A finite, positive timeout of at most a day (statement_timeout is an int of milliseconds)."""
    if not math.isfinite(timeout_s) or not 0 < timeout_s <= MAX_TIMEOUT_S:
        raise BadInput(f"--timeout must be a number of seconds between 0 and {MAX_TIMEOUT_S:g} (got {timeout_s!r})")


def run_readonly(query: str, *, limit: int, timeout_s: float) -> SqlResult:
    """Run one statement on the reader's own login; keep at most `limit` rows.

    Fetches limit + 1 rows and stops the server there, so `truncated` is exact and a
    huge result costs no more than the rows kept. genloom.analytics.sql.run_sql audits it.
    """
    query = query.strip()
    while query.endswith(";"):
        query = query[:-1].rstrip()
    if not query:
        raise BadInput("empty query: pass a SELECT statement, or --file query.sql")
    if limit < 1:
        raise BadInput(f"--limit must be at least 1 (got {limit})")
    check_timeout(timeout_s)

    conn = _connect(timeout_s)
    watchdog = threading.Timer(timeout_s + 2.0, _cancel_quietly, args=(conn,))
    started = time.perf_counter()
    try:
        from genloom.db.engine import begin_reader_transaction

        _check_reader(conn)
        conn.read_only = True  # every transaction below starts BEGIN READ ONLY
        try:
            columns = _describe(conn, query)
            begin_reader_transaction(conn)  # a Citus cluster: the tenant reaches the workers
            watchdog.start()
            rows: list[tuple[Any, ...]] = []
            status = None
            with conn.cursor() as cur:
                if columns:
                    # Chunked streaming: stop after limit + 1 rows; psycopg cancels the rest.
                    for row in cur.stream(query, size=min(limit + 1, 500)):
                        rows.append(row)
                        if len(rows) > limit:
                            break
                else:
                    cur.execute(query, prepare=True)  # extended protocol: still one statement
                    status = cur.statusmessage
                    if cur.description:
                        columns = [c.name for c in cur.description]
                        rows = cur.fetchmany(limit + 1)
        except Exception as exc:
            raise _translate(exc, query, timeout_s) from None
        finally:
            watchdog.cancel()
    finally:
        try:
            conn.rollback()
        except Exception:
            pass
        conn.close()
    truncated = len(rows) > limit
    return SqlResult(
        columns=columns,
        rows=rows[:limit],
        truncated=truncated,
        limit=limit,
        status=status,
        elapsed_ms=(time.perf_counter() - started) * 1000,
    )


def _cancel_quietly(conn) -> None:
    try:
        conn.cancel_safe(timeout=5)
    except Exception:
        pass
