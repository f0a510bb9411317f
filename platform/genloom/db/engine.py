"""The one place genloom opens connections to its database.

Callers own sessions (SQLAlchemy 2.0 style) and say what the connection is for:

    with session_scope() as session:                  # purpose="write": one transaction
        do_the_work(session, ...)
    with session_scope(purpose="read") as session:    # reads only (a replica may serve it)
        ...
    with stream_connection() as conn:                  # psycopg connection for COPY / named cursors
        ...

Every transaction of every purpose starts the same way: the tenant and the role are set with
`set_config(..., true)`, i.e. SET LOCAL, so they end with the transaction (genloom.db.tenancy;
Citus needs it that way). The read-only SQL login of `genloom sql` is opened here too
(`reader_connection`). The HTTP API's sessions come from `api_sessions()`: the same engine
settings with a pool sized by the serve limits.

Which server a purpose goes to is decided in `engine_for()` alone: that is where routing reads
to a replica plugs in (genloom.db.routing).

Before its first session on a database, a process runs `start_database()`: migrate to head,
install the tenant hook, mark runs whose process died as failed.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any, Literal, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from genloom.db import partitions, routing, tenancy, url as _url

# Names other modules import from here; their homes are genloom.db.url, .crash and .recovery.
from genloom.db.crash import connection_error, crash_message  # noqa: F401
from genloom.db.recovery import retry_while_recovering, wait_out_crash_recovery  # noqa: F401
from genloom.db.url import (  # noqa: F401
    is_embedded,
    libpq_url,
    redact as _redact,  # noqa: F401
    sqlalchemy_url,
)
from genloom.errors import DatabaseError

# write: the default, a read-write transaction. read: only reads (may be routed to a replica).
# stream: a raw psycopg connection for COPY and server-side cursors. api: the HTTP API's pool.
Purpose = Literal["write", "read", "stream", "api"]
PURPOSES: tuple[str, ...] = ("write", "read", "stream", "api")

_engines: dict[str, Engine] = {}
_api_engines: dict[str, Engine] = {}
# The `api` pool's size (pool_size, max_overflow): the HTTP app sets it from its serve limits
# (genloom.api.app.create_app); the store knows nothing of HTTP. Read when the pool is made.
_api_pool: Callable[[], dict[str, int]] = dict
_api_lock = threading.Lock()
_started: set[str] = set()
T = TypeVar("T")


def _create_engine(url: str, *, application_name: str, **pool: Any) -> Engine:
    engine = sa.create_engine(
        url,
        pool_pre_ping=True,
        # An error's message must not carry the statement's values (questions, answers, PII)
        # into a server log: SQLAlchemy would append "[parameters: …]".
        hide_parameters=True,
        connect_args={"connect_timeout": 10, "application_name": application_name},
        **pool,
    )
    wait_out_crash_recovery(engine)
    tenancy.install()  # sessions on any genloom engine set tenant and role per transaction
    return engine


def get_engine(*, migrate: bool = True, purpose: Purpose = "write") -> Engine:
    """The engine for the configured database, created once per process.

    With migrate=True (the default) the database is started on first use (start_database:
    the schema is brought to head), so a new user never runs a separate migration step.
    `purpose="read"` may give a streaming replica's engine instead (genloom.db.routing decides,
    and falls back to the primary).
    """
    if purpose == "read":
        primary = get_engine(migrate=migrate)
        replica = routing.read_url(primary)
        return routing.replica_engine(replica) if replica else primary
    plain_url = libpq_url()
    url = sqlalchemy_url(plain_url)
    engine = _engines.get(url)
    if engine is None:
        engine = _create_engine(url, application_name="genloom")
        _engines[url] = engine
    if migrate and url not in _started:
        start_database(engine, plain_url)
        _started.add(url)
    return engine


def start_database(engine: Engine, plain_url: str = "") -> None:
    """Once per process and database, before the first session: every start-up step, in order.

    1. migrate to head (genloom.db.migrate; one cheap query when already there);
    2. mark this host's runs whose process died as failed (genloom.db.stale_runs);
    3. make sure the log's partitions for the months ahead exist (genloom.db.partitions).

    (The tenant hook is installed when an engine is created, migrated or not: _create_engine.)
    """
    from genloom.db.migrate import ensure_schema
    from genloom.db.stale_runs import reconcile_stale_runs

    try:
        ensure_schema(engine)
    except sa.exc.OperationalError as exc:
        raise connection_error(exc, plain_url) from None
    with session_scope(engine) as session:
        reconcile_stale_runs(session)
    partitions.maintain(engine)


def engine_for(purpose: Purpose = "write") -> Engine:
    """The engine a purpose uses.

    Read routing plugs in HERE and nowhere else: purpose="read" goes to a streaming replica
    when genloom.db.routing finds one fresh enough, else to the primary.
    """
    if purpose not in PURPOSES:
        raise ValueError(f"unknown connection purpose {purpose!r}: use one of {', '.join(PURPOSES)}")
    if purpose == "api":
        return api_engine()
    return get_engine(purpose="read" if purpose == "read" else "write")


def read_libpq_url() -> str:
    """libpq_url() for reads (`genloom sql`): a replica's URL when genloom.db.routing picks one, else the primary's."""
    primary = libpq_url()
    return routing.read_url(get_engine()) or primary


def api_engine() -> Engine:
    """The primary with a pool sized for concurrent HTTP requests.

    A logged call holds its connection from retrieval to commit (one transaction), so while a
    model generates for 32 requests, 32 connections are in use; the default pool (5 + 10
    overflow) would make the rest wait and time out.
    """
    base = get_engine()  # connects and migrates once, follows DATABASE_URL
    url = base.url.render_as_string(hide_password=False)
    with _api_lock:
        engine = _api_engines.get(url)
        if engine is None:
            engine = _create_engine(url, application_name="genloom-api", pool_timeout=600, **_api_pool())
            _api_engines[url] = engine
        return engine


def configure_api_pool(pool: Callable[[], dict[str, int]]) -> None:
    """How the HTTP app sizes the `api` pool: `pool()` returns create_engine's pool_size and max_overflow."""
    global _api_pool
    _api_pool = pool


def sessionmaker_for(engine: Engine | None = None, *, purpose: Purpose = "write") -> sessionmaker[Session]:
    return sessionmaker(bind=engine or engine_for(purpose), expire_on_commit=False)


@contextlib.contextmanager
def session_scope(engine: Engine | None = None, *, purpose: Purpose = "write") -> Iterator[Session]:
    """One transaction: commit on success, roll back on any exception.

    `purpose="read"` runs it on a replica when one is fresh enough (see `run_read` for reads
    that must also survive the replica failing half-way).
    """
    factory = sessionmaker_for(engine, purpose=purpose)
    try:
        with factory.begin() as session:
            yield session
    except sa.exc.OperationalError as exc:
        if "connect" in str(exc).lower():
            raise connection_error(exc, str(engine.url) if engine else "") from None
        raise


def run_read(work: Callable[[Session], T], *, primary_purpose: Purpose = "write") -> T:
    """Run a read-only unit of work on a replica; if the replica fails half-way, once more on the primary.

    A replica killed mid-search costs the caller a retry, not an error (the note is logged).
    `primary_purpose="api"`: the HTTP API's reads use its request-sized pool when the primary serves.
    """
    engine = get_engine(purpose="read")
    if engine is get_engine():
        engine = engine_for(primary_purpose)
    primary = engine_for(primary_purpose)
    if engine is primary:
        with session_scope(primary) as session:
            return work(session)
    try:
        with session_scope(engine) as session:
            return work(session)
    except (sa.exc.OperationalError, sa.exc.InterfaceError, DatabaseError) as exc:
        routing.mark_down(engine, exc)
    with session_scope(primary) as session:
        return work(session)


def api_sessions() -> Iterator[Session]:
    """One session per HTTP request (a FastAPI dependency); the endpoint opens the transaction."""
    session = sessionmaker_for(purpose="api")()
    try:
        yield session
    finally:
        session.close()


@contextlib.contextmanager
def stream_connection(engine: Engine | None = None) -> Iterator[Any]:
    """A psycopg connection of the pool for COPY and server-side cursors, working for the caller's tenant.

    A stream may span transactions (packed shards commit, then are read), so the tenant is set
    for the connection's session here, the one place genloom sets it beyond a transaction.
    """
    raw = (engine or engine_for("stream")).raw_connection()
    try:
        conn = raw.driver_connection
        tenancy.apply_to_session(conn)
        yield conn
    finally:
        raw.close()  # the pool's reset (ROLLBACK) leaves the setting; the next ORM transaction sets its own


def reader_connection(conninfo: str, *, statement_timeout_ms: int, **connect_args: Any) -> Any:
    """A psycopg connection as the read-only SQL login (`genloom sql`), held by the same tenant policies.

    It logs in as its own role (no SET ROLE: a query could RESET it), so the tenant travels in the
    login's options; set_config is revoked from that role, and genloom sql runs no SET.
    """
    import psycopg

    options = (
        f"-c statement_timeout={statement_timeout_ms} -c default_transaction_read_only=on "
        f"-c genloom.tenant={tenancy.current_tenant()}"
    )
    return retry_while_recovering(lambda: psycopg.connect(conninfo, options=options, **connect_args))


def begin_reader_transaction(conn: Any) -> None:
    """Start the reader's (read-only) transaction; on a Citus coordinator, with the tenant set for the workers too.

    The login option `genloom.tenant` (reader_connection) holds on the coordinator only: Citus
    opens worker connections of its own, where a policy would see no tenant (and fall back to
    'default'). A `SET LOCAL` statement is forwarded to every worker the transaction touches
    (citus.propagate_set_commands = 'local'). It runs before the caller's one statement, in the
    same transaction, which a single statement cannot leave (set_config is revoked from the reader).
    """
    (citus,) = conn.execute("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')").fetchone()
    if citus:
        tenant = tenancy.current_tenant().replace("'", "''")  # validated names hold no quote; belt and braces
        conn.execute(f"SET LOCAL genloom.tenant = '{tenant}'")


def reset_engines() -> None:
    """Forget cached engines (tests switch DATABASE_URL between databases)."""
    for engine in [*_engines.values(), *_api_engines.values()]:
        engine.dispose()
    _engines.clear()
    _api_engines.clear()
    _started.clear()
    _url.forget()
    routing.forget()
