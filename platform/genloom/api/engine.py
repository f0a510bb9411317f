"""The HTTP API's own database engine: one pool per database, sized by the serve limits."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends
from sqlalchemy.orm import Session

_engines: dict[str, Any] = {}
_engines_lock = threading.Lock()


def api_engine():
    """An engine for the configured database with a pool sized for concurrent requests.

    A logged call holds its connection from retrieval to commit (one transaction), so
    while a model generates for 32 requests, 32 connections are in use; the default
    pool (5 + 10 overflow) would make the rest wait and time out.
    """
    import sqlalchemy as sa

    from genloom.db.engine import get_engine, wait_out_crash_recovery

    base = get_engine()  # connects and migrates once, follows DATABASE_URL
    url = base.url.render_as_string(hide_password=False)
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            from genloom.api import limits

            engine = sa.create_engine(  # sized by the serve limits: see genloom.api.limits
                base.url,
                pool_pre_ping=True,
                pool_size=limits.pool_size(limits.Limits.from_env()),
                max_overflow=limits.POOL_OVERFLOW,
                pool_timeout=600,
                connect_args={"connect_timeout": 10, "application_name": "genloom-api"},
            )
            wait_out_crash_recovery(engine)
            _engines[url] = engine
        return engine


def db() -> Iterator[Session]:
    """One session per request; the endpoint opens the transaction (`with s.begin():`)."""
    from genloom.db.engine import sessionmaker_for

    session = sessionmaker_for(api_engine())()
    try:
        yield session
    finally:
        session.close()


DB = Annotated[Session, Depends(db)]
