"""A driver error caused by a crash, explained in one line (from the embedded server's log).

Waiting for a recovering server is genloom.db.recovery's job; this module says what happened
when waiting did not help.
"""

from __future__ import annotations

import time

from genloom.db import embedded
from genloom.db.url import is_embedded, redact
from genloom.errors import DatabaseError

# Messages of a connection cut by a crashing server.
_CRASHED = (
    "Connection refused",  # the postmaster is gone (its socket file may remain)
    "No such file or directory",  # ... or its socket file too
    "server closed the connection unexpectedly",
    "terminating connection because of crash",
    "in recovery mode",
    "consuming input failed",
)
_process_started = time.time()


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
    where = "the embedded server" if is_embedded() else redact(url)
    hint = "" if is_embedded() else "; check DATABASE_URL or unset it to use the embedded server"
    return DatabaseError(f"cannot connect to {where}: {first}{hint}")
