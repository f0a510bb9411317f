"""Which database genloom talks to, and the one place engines and sessions are made.

Callers own sessions (SQLAlchemy 2.0 style):

    with session_scope() as session:      # one transaction per unit of work
        do_the_work(session, ...)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from genloom import config
from genloom.db import embedded
from genloom.errors import ConfigError, DatabaseError

_engines: dict[str, Engine] = {}
_migrated: set[str] = set()


def libpq_url() -> str:
    """A URL that psql and libpq accept, for the configured database (starting the embedded one)."""
    external = config.database_url()
    if external:
        _validate_url(external)
        scheme, rest = external.split("://", 1)
        return "postgresql://" + rest
    server_uri = embedded.start()
    _ensure_embedded_database(server_uri)
    return embedded.uri_for_database(server_uri, embedded.DATABASE_NAME)


def is_embedded() -> bool:
    return config.database_url() is None


def sqlalchemy_url(url: str) -> str:
    """postgresql://… or postgres://… → postgresql+psycopg://… (psycopg 3 driver)."""
    _validate_url(url)
    scheme, rest = url.split("://", 1)
    return "postgresql+psycopg://" + rest


def _validate_url(url: str) -> None:
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme not in {"postgresql", "postgres", "postgresql+psycopg"}:
        raise ConfigError(
            f"DATABASE_URL must look like postgresql://user:password@host:5432/dbname (got {_redact(url)!r}); "
            "unset it to use the embedded server"
        )
    try:
        urlsplit(url).port  # raises on a non-numeric port
    except ValueError as exc:
        raise ConfigError(f"DATABASE_URL is malformed ({exc}): {_redact(url)}") from None


def _redact(url: str) -> str:
    """Hide a password before a URL goes into an error message."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable>"
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@", 1)
    return url


def _ensure_embedded_database(server_uri: str) -> None:
    import psycopg

    with psycopg.connect(server_uri, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (embedded.DATABASE_NAME,)
        ).fetchone()
        if not exists:
            try:
                conn.execute(f'CREATE DATABASE "{embedded.DATABASE_NAME}"')
            except (psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
                pass  # another process won the race: same result


def connection_error(exc: BaseException, url: str) -> DatabaseError:
    """Turn a driver error into one line that says what to do."""
    orig = getattr(exc, "orig", exc)
    first = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    where = "the embedded server" if is_embedded() else _redact(url)
    hint = "" if is_embedded() else "; check DATABASE_URL or unset it to use the embedded server"
    return DatabaseError(f"cannot connect to {where}: {first}{hint}")


def get_engine(*, migrate: bool = True) -> Engine:
    """The engine for the configured database, created once per process.

    With migrate=True (the default) the schema is brought to head on first use, so a
    new user never runs a separate migration step.
    """
    plain_url = libpq_url()
    url = sqlalchemy_url(plain_url)
    engine = _engines.get(url)
    if engine is None:
        engine = sa.create_engine(
            url,
            pool_pre_ping=True,
            connect_args={"connect_timeout": 10, "application_name": "genloom"},
        )
        _engines[url] = engine
    if migrate and url not in _migrated:
        from genloom.db.migrate import ensure_schema

        try:
            ensure_schema(engine)
        except sa.exc.OperationalError as exc:
            raise connection_error(exc, plain_url) from None
        _migrated.add(url)
    return engine


def sessionmaker_for(engine: Engine | None = None) -> sessionmaker[Session]:
    return sessionmaker(bind=engine or get_engine(), expire_on_commit=False)


@contextlib.contextmanager
def session_scope(engine: Engine | None = None) -> Iterator[Session]:
    """One transaction: commit on success, roll back on any exception."""
    factory = sessionmaker_for(engine)
    try:
        with factory.begin() as session:
            yield session
    except sa.exc.OperationalError as exc:
        if "connect" in str(exc).lower():
            raise connection_error(exc, str(engine.url) if engine else "") from None
        raise


def reset_engines() -> None:
    """Forget cached engines (tests switch DATABASE_URL between databases)."""
    for engine in _engines.values():
        engine.dispose()
    _engines.clear()
    _migrated.clear()
