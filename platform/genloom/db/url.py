"""Which database genloom talks to: the URL of DATABASE_URL, or of the embedded server.

The embedded server is started (and its `genloom` database created) the first time a URL is
asked for; an external server is only validated here, connecting is the engine's job.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from genloom import config
from genloom.db import embedded
from genloom.errors import ConfigError

# Embedded servers whose `genloom` database this process has made sure of: (socket URI, postmaster
# pid). get_engine() runs on every session_scope(); checking again would open a connection each time.
_databases_ensured: set[tuple[str, int | None]] = set()


def libpq_url() -> str:
    """A URL that psql and libpq accept, for the configured database (starting the embedded one)."""
    external = config.database_url()
    if external:
        validate_url(external)
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


def is_embedded() -> bool:
    return config.database_url() is None


def sqlalchemy_url(url: str) -> str:
    """postgresql://… or postgres://… → postgresql+psycopg://… (psycopg 3 driver)."""
    validate_url(url)
    scheme, rest = url.split("://", 1)
    return "postgresql+psycopg://" + rest


def validate_url(url: str) -> None:
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme not in {"postgresql", "postgres", "postgresql+psycopg"}:
        raise ConfigError(
            f"DATABASE_URL must look like postgresql://user:password@host:5432/dbname (got {redact(url)!r}); "
            "unset it to use the embedded server"
        )
    try:
        _ = urlsplit(url).port  # raises on a non-numeric port
    except ValueError as exc:
        raise ConfigError(f"DATABASE_URL is malformed ({exc}): {redact(url)}") from None


_SECRET_PARAM = re.compile(r"(?i)([?&;\s](?:password|sslpassword)=)[^&;\s]*")


def redact(url: str) -> str:
    """Hide passwords before a URL goes into an error message or a status report.

    Both libpq forms: `user:secret@host` and `?password=secret` (or `sslpassword=`).
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable>"
    if parts.password:
        url = url.replace(f":{parts.password}@", ":***@", 1)
    return _SECRET_PARAM.sub(r"\1***", url)


def _ensure_embedded_database(server_uri: str) -> None:
    import psycopg

    from genloom.db.recovery import retry_while_recovering

    with retry_while_recovering(lambda: psycopg.connect(server_uri, autocommit=True)) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (embedded.DATABASE_NAME,)).fetchone()
        if not exists:
            try:
                conn.execute(f'CREATE DATABASE "{embedded.DATABASE_NAME}"')
            except (psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
                pass  # another process won the race: same result


def forget() -> None:
    """Check the embedded database again on next use (tests switch servers)."""
    _databases_ensured.clear()
