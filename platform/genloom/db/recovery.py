"""A server recovering from a crash (or starting): new connections wait for it, for a bounded time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine

T = TypeVar("T")

# Messages of a server that is restarting after a crash, or starting: worth waiting for.
_RECOVERING = ("in recovery mode", "is starting up", "not yet accepting connections", "is shutting down")
RECOVERY_WAIT_S = 30


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
