"""Which database genloom talks to, and the one place engines and sessions are made.

Callers own sessions (SQLAlchemy 2.0 style):

    with session_scope() as session:      # one transaction per unit of work
        do_the_work(session, ...)
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Literal, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from genloom import config
from genloom.db import embedded, partitions, routing
from genloom.db.urls import redact as _redact, sqlalchemy_url, validate_url as _validate_url
from genloom.errors import DatabaseError

T = TypeVar("T")

_engines: dict[str, Engine] = {}
_migrated: set[str] = set()
# Embedded servers whose `genloom` database this process has made sure of: (socket URI, postmaster
# pid). get_engine() runs on every session_scope(); checking again would open a connection each time.
_databases_ensured: set[tuple[str, int | None]] = set()


def libpq_url() -> str:
    """A URL that psql and libpq accept, for the configured database (starting the embedded one)."""
    external = config.database_url()
    if external:
        _validate_url(external)
        scheme, rest = external.split("://", 1)
        return "postgresql://" + rest
    from genloom.db import cluster

    coordinator = cluster.coordinator_url()
    if coordinator:  # `genloom db cluster init` made a Citus cluster here: genloom uses its coordinator
        cluster.start()
        return coordinator
    server_uri = embedded.start()
    postmaster = embedded.Postmaster.read(embedded.data_dir())
    server = (server_uri, postmaster.pid if postmaster else None)  # a restarted server is checked again
    if server not in _databases_ensured:
        _ensure_embedded_database(server_uri)
        _databases_ensured.add(server)
    return embedded.uri_for_database(server_uri, embedded.DATABASE_NAME)


def read_libpq_url() -> str:
    """libpq_url() for reads: a replica's URL when genloom.db.routing picks one, else the primary's."""
    primary = libpq_url()
    return routing.read_url(get_engine()) or primary


def is_embedded() -> bool:
    return config.database_url() is None


# Messages of a server that is restarting after a crash, or starting: worth waiting for.
_RECOVERING = ("in recovery mode", "is starting up", "not yet accepting connections", "is shutting down")
# Messages of a connection cut by a crashing server.
_CRASHED = (
    "Connection refused",  # the postmaster is gone (its socket file may remain)
    "No such file or directory",  # ... or its socket file too
    "server closed the connection unexpectedly",
    "terminating connection because of crash",
    "in recovery mode",
    "consuming input failed",
)
RECOVERY_WAIT_S = 30
_process_started = time.time()


def _ensure_embedded_database(server_uri: str) -> None:
    import psycopg

    with retry_while_recovering(lambda: psycopg.connect(server_uri, autocommit=True)) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (embedded.DATABASE_NAME,)).fetchone()
        if not exists:
            try:
                conn.execute(f'CREATE DATABASE "{embedded.DATABASE_NAME}"')
            except (psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
                pass  # another process won the race: same result


def crash_message(exc: BaseException) -> str | None:
    """For the embedded server: the log's account of a crash behind this error, else None."""
    text = str(getattr(exc, "orig", exc))
    if not is_embedded() or not any(marker in text for marker in _CRASHED):
        return None
    # The client can see the connection drop before the postmaster has logged why: look twice.
    deadline = time.monotonic() + 3.0
    while True:
        cause = embedded.crash_cause(since=_process_started)
        if cause or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    if cause is None and embedded.server_state() == "stopped":
        # The postmaster itself died (killed, out of memory): it logs nothing about its own end.
        return (
            f"the embedded database server in {embedded.data_dir()} stopped while genloom was using it; "
            f"the next genloom command starts it again (log: {embedded.log_path()})"
        )
    return cause


def connection_error(exc: BaseException, url: str) -> DatabaseError:
    """Turn a driver error into one line that says what to do."""
    crashed = crash_message(exc)
    if crashed:
        return DatabaseError(crashed)
    orig = getattr(exc, "orig", exc)
    first = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    where = "the embedded server" if is_embedded() else _redact(url)
    hint = "" if is_embedded() else "; check DATABASE_URL or unset it to use the embedded server"
    return DatabaseError(f"cannot connect to {where}: {first}{hint}")


Purpose = Literal["write", "read"]


def get_engine(*, migrate: bool = True, purpose: Purpose = "write") -> Engine:
    """The engine for the configured database, created once per process.

    With migrate=True (the default) the schema is brought to head on first use, so a
    new user never runs a separate migration step. `purpose="read"` may give a streaming
    replica's engine instead (genloom.db.routing decides, and falls back to the primary).
    """
    if purpose == "read":
        primary = get_engine(migrate=migrate)
        replica = routing.read_url(primary)
        return routing.replica_engine(replica) if replica else primary
    plain_url = libpq_url()
    url = sqlalchemy_url(plain_url)
    engine = _engines.get(url)
    if engine is None:
        engine = sa.create_engine(
            url,
            pool_pre_ping=True,
            # An error's message must not carry the statement's values (questions, answers, PII)
            # into a server log: SQLAlchemy would append "[parameters: …]".
            hide_parameters=True,
            connect_args={"connect_timeout": 10, "application_name": "genloom"},
        )
        wait_out_crash_recovery(engine)
        _engines[url] = engine
    if migrate and url not in _migrated:
        from genloom.db.migrate import ensure_schema

        try:
            ensure_schema(engine)
        except sa.exc.OperationalError as exc:
            raise connection_error(exc, plain_url) from None
        _migrated.add(url)
        _reconcile_stale_runs(engine)
        partitions.maintain(engine)  # once per process: the months ahead of the log exist
    return engine


def _reconcile_stale_runs(engine: Engine) -> None:
    """Once per process and database: runs whose process died are marked failed, not left running."""
    from genloom.db.stale_runs import reconcile_stale_runs

    with session_scope(engine) as session:
        reconcile_stale_runs(session)


def retry_while_recovering(connect: Callable[[], T]) -> T:
    """Call `connect`; while the server recovers from a crash (or starts), retry for a bounded time."""
    import psycopg

    deadline = time.monotonic() + RECOVERY_WAIT_S
    while True:
        try:
            return connect()
        except psycopg.OperationalError as exc:
            if not any(marker in str(exc) for marker in _RECOVERING) or time.monotonic() > deadline:
                raise
            time.sleep(0.25)


def _connect_waiting_for_recovery(dialect, conn_rec, cargs, cparams):
    return retry_while_recovering(lambda: dialect.connect(*cargs, **cparams))


def wait_out_crash_recovery(engine: Engine) -> None:
    """New connections of `engine` wait (bounded) while the server recovers from a crash."""
    sa.event.listen(engine, "do_connect", _connect_waiting_for_recovery)


def sessionmaker_for(engine: Engine | None = None) -> sessionmaker[Session]:
    return sessionmaker(bind=engine or get_engine(), expire_on_commit=False)


@contextlib.contextmanager
def session_scope(engine: Engine | None = None, *, purpose: Purpose = "write") -> Iterator[Session]:
    """One transaction: commit on success, roll back on any exception.

    `purpose="read"` runs it on a replica when one is fresh enough (see `run_read` for reads
    that must also survive the replica failing half-way).
    """
    factory = sessionmaker_for(engine or get_engine(purpose=purpose))
    try:
        with factory.begin() as session:
            yield session
    except sa.exc.OperationalError as exc:
        if "connect" in str(exc).lower():
            raise connection_error(exc, str(engine.url) if engine else "") from None
        raise


def run_read(work: Callable[[Session], T]) -> T:
    """Run a read-only unit of work on a replica; if the replica fails half-way, once more on the primary.

    A replica killed mid-search costs the caller a retry, not an error (the note is logged).
    """
    engine = get_engine(purpose="read")
    primary = get_engine()
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


def reset_engines() -> None:
    """Forget cached engines (tests switch DATABASE_URL between databases)."""
    for engine in _engines.values():
        engine.dispose()
    _engines.clear()
    routing.forget()
    _migrated.clear()
    _databases_ensured.clear()
