"""The HTTP API's per-request session: a FastAPI dependency over the store's `api` purpose.

The pool sized for concurrent requests lives with every other connection in genloom.db.engine
(`api_engine`); this module only names the dependency the routes use.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends
from sqlalchemy.orm import Session

from genloom.db.engine import api_sessions

__all__ = ["DB", "db"]


def db() -> Iterator[Session]:
    """One session per request; the endpoint opens the transaction (`with s.begin():`)."""
    yield from api_sessions()


DB = Annotated[Session, Depends(db)]
