"""Which tenant a transaction works for, and the hook that tells Postgres.

Isolation is Postgres' job, not the queries': every tenant-scoped table has a row-level
security policy `tenant = genloom_tenant()` (migration 0013), and `genloom_tenant()` reads the
transaction-local setting `genloom.tenant`. At the start of every ORM transaction the hook
below sets that setting and switches to the NOLOGIN role `genloom_app` for the transaction
(SET LOCAL ROLE): superusers, which the embedded server logs genloom in as, bypass every
policy, so without the switch the policies would hold only the read-only SQL role. The hook is
installed by genloom.db.engine when it makes an engine (`install()`), not by importing this module;
connections are opened only there (session_scope, stream_connection, reader_connection).

The tenant comes from, in order: `use_tenant(...)` (the API sets it from the caller's key),
$GENLOOM_TENANT (the CLI's `--tenant` sets it), else 'default'. A tenant-less install only
ever sees 'default', which is where all rows created before tenants existed live.

Connections outside a Session (migrations, `engine.connect()` in maintenance code) are not
touched: they run as the login role, with its rights.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import re
import weakref
from collections.abc import Iterator

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Session

from genloom.errors import BadInput

DEFAULT_TENANT = "default"
SHARED_TENANT = "genloom"  # reserved: shipped rows (the default template) every tenant reads
TENANT_ENV = "GENLOOM_TENANT"
APP_ROLE = "genloom_app"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")

_tenant: contextvars.ContextVar[str | None] = contextvars.ContextVar("genloom_tenant", default=None)
# Per engine: (migration 0013 applied, genloom_app usable by the login role, Citus coordinator).
# Forgotten after a migration (genloom.db.migrate), so an engine first used before upgrading is
# not stuck on "no".
_state: weakref.WeakKeyDictionary[sa.Engine, tuple[bool, bool, bool]] = weakref.WeakKeyDictionary()


def validate_tenant(name: str) -> str:
    name = (name or "").strip()
    if name == SHARED_TENANT:
        raise BadInput(f"tenant {name!r} is reserved for what genloom ships; choose another name")
    if not _NAME.match(name):
        raise BadInput(
            f"tenant {name!r} is not a valid name: use 1-63 lower-case letters, digits, '_', '-' or '.', "
            "starting with a letter or digit"
        )
    return name


def current_tenant() -> str:
    """The tenant this code works for (see the module docstring for the order)."""
    explicit = _tenant.get()
    if explicit is not None:
        return explicit
    env = os.environ.get(TENANT_ENV, "").strip()
    return validate_tenant(env) if env else DEFAULT_TENANT


@contextlib.contextmanager
def use_tenant(name: str) -> Iterator[str]:
    """Run the block (and sessions it opens in this context) as tenant `name`."""
    token = _tenant.set(validate_tenant(name))
    try:
        yield name
    finally:
        _tenant.reset(token)


def set_tenant(name: str) -> None:
    """Set the tenant for the rest of this context (an HTTP request's dependency uses it)."""
    _tenant.set(validate_tenant(name))


def _state_of(connection: sa.Connection) -> tuple[bool, bool, bool]:
    engine = connection.engine
    known = _state.get(engine)
    if known is None:
        row = connection.exec_driver_sql(
            "SELECT to_regprocedure('genloom_tenant()') IS NOT NULL, "
            f"EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{APP_ROLE}') "
            f"AND pg_has_role(current_user, '{APP_ROLE}', 'MEMBER'), "
            "EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')"
        ).one()
        known = (bool(row[0]), bool(row[0] and row[1]), bool(row[2]))
        _state[engine] = known
    return known


def apply(connection: sa.Connection) -> None:
    """Set this transaction's tenant, and its role when the login may switch (both end with the transaction).

    Without genloom_app (a managed server whose migrating user could not create it) the tenant is
    still set, and the policies hold as long as the login role is not a superuser.
    """
    has_tenancy, switch_role, citus = _state_of(connection)
    if not has_tenancy:
        return
    if citus:
        # Citus forwards SET LOCAL *statements* to the workers a transaction touches
        # (citus.propagate_set_commands = 'local'), not set_config() calls: without them a
        # worker sees no tenant and the policies show it nothing (genloom.db.cluster).
        tenant = current_tenant().replace("'", "''")  # validated names hold no quote; belt and braces
        connection.exec_driver_sql(f"SET LOCAL genloom.tenant = '{tenant}'")
        if switch_role:
            connection.exec_driver_sql(f"SET LOCAL ROLE {APP_ROLE}")
        return
    if switch_role:
        connection.exec_driver_sql(
            "SELECT set_config('genloom.tenant', %(t)s, true), set_config('role', %(r)s, true)",
            {"t": current_tenant(), "r": APP_ROLE},
        )
    else:
        connection.exec_driver_sql("SELECT set_config('genloom.tenant', %(t)s, true)", {"t": current_tenant()})


def distributed_by_tenant(session: Session) -> bool:
    """Is this session's database a Citus coordinator, where every table is distributed by tenant?

    Then a statement filters each table it reads on `tenant = :tenant` (current_tenant()) so that
    Citus routes it to the tenant's shard: the policy filters the same rows, but Citus routes on
    constants and parameters only (genloom.db.distribute).
    """
    return _state_of(session.connection())[2]


_SETTING = re.compile(r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)?$")


def set_local(session: Session, settings: dict[str, str]) -> None:
    """Transaction-local settings (hnsw.ef_search, …) that reach Citus workers too.

    One node: `set_config(name, value, true)`. Citus forwards SET LOCAL *statements* to the
    workers a transaction touches, not set_config() calls, so there each is a SET LOCAL.
    """
    if not settings:
        return
    if not distributed_by_tenant(session):
        calls = ", ".join(f"set_config(:n{i}, :v{i}, true)" for i in range(len(settings)))
        binds = {k: v for i, (n, val) in enumerate(settings.items()) for k, v in ((f"n{i}", n), (f"v{i}", val))}
        session.execute(sa.text(f"SELECT {calls}"), binds)
        return
    for name, value in settings.items():
        if not _SETTING.match(name):
            raise ValueError(f"not a setting name: {name!r}")
        quoted = str(value).replace("'", "''")
        session.execute(sa.text(f"SET LOCAL {name} = '{quoted}'"))


def apply_to_session(dbapi_connection) -> None:
    """The tenant of a raw psycopg connection's session (genloom.db.engine.stream_connection only)."""
    dbapi_connection.execute(
        "SELECT set_config('genloom.tenant', %s, false) WHERE to_regprocedure('genloom_tenant()') IS NOT NULL",
        (current_tenant(),),
    )


def forget_engine(engine: sa.Engine) -> None:
    """Re-check on the next transaction (after a migration)."""
    _state.pop(engine, None)


def _after_begin(session: Session, transaction, connection: sa.Connection) -> None:
    apply(connection)


def install() -> None:
    """Make every ORM transaction set its tenant and role (genloom.db.engine does, once per engine).

    Explicit rather than a side effect of importing genloom.db; installing twice is a no-op.
    """
    if not event.contains(Session, "after_begin", _after_begin):
        event.listen(Session, "after_begin", _after_begin)


class _RowBatches:
    """What copy_in yields on a Citus cluster: psycopg Copy's write_row/set_types, written as
    multi-row INSERTs of BATCH_ROWS rows (each one a router INSERT into the tenant's shard)."""

    BATCH_ROWS = 500

    def __init__(self, cursor, table: str, columns: list[str]) -> None:
        self.cursor, self.table, self.columns = cursor, table, columns
        self.rows: list[tuple] = []

    def set_types(self, types) -> None:  # the text protocol adapts each value (pgvector's adapter included)
        pass

    def write_row(self, row) -> None:
        self.rows.append(tuple(row))
        if len(self.rows) >= self.BATCH_ROWS:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        one = "(" + ", ".join(["%s"] * len(self.columns)) + ")"
        self.cursor.execute(
            f"INSERT INTO {self.table} ({', '.join(self.columns)}) VALUES " + ", ".join([one] * len(self.rows)),
            [value for row in self.rows for value in row],
        )
        self.rows = []


@contextlib.contextmanager
def copy_in(cursor, table: str, columns: list[str]):
    """Binary COPY into `table` through a temporary staging table, yielding psycopg's Copy.

    Postgres refuses COPY FROM into a table under row-level security; COPY into a temporary
    table (no policies) followed by one INSERT … SELECT keeps COPY's speed for the transfer
    while the INSERT goes through the tenant policy (and fills `tenant` from its default).

    On a Citus cluster that INSERT … SELECT is itself a COPY into the worker's shard, which is
    under the same policy and refused ("COPY FROM not supported with row-level security"): there
    the rows go as multi-row INSERTs (`_RowBatches`), which the policy checks like any insert.
    """
    (citus,) = cursor.execute("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')").fetchone()
    if citus:
        batches = _RowBatches(cursor, table, columns)
        yield batches
        batches.flush()
        return
    stage = f"genloom_stage_{table}"
    cols = ", ".join(columns)
    cursor.execute(f"CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {table} INCLUDING DEFAULTS) ON COMMIT DROP")
    cursor.execute(f"TRUNCATE {stage}")
    with cursor.copy(f"COPY {stage} ({cols}) FROM STDIN (FORMAT BINARY)") as copy:
        yield copy
    cursor.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {stage}")
