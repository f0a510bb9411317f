"""Runs whose process died: found and marked failed, so none stays `running` forever.

A run records the host and pid of its process (runs.start_run). This module lives in the db
package because the engine runs it once per process on first use of a database; the CLI's
`genloom runs reconcile` calls it on demand.
"""

from __future__ import annotations

import datetime as dt
import socket

import sqlalchemy as sa
from sqlalchemy.orm import Session

from genloom.db.models import Run


def process_alive(pid: int, started_at: dt.datetime) -> bool:
    """Is the process that started a run at `started_at` still alive on this host?

    A pid alone is not enough: after the process dies the number can be reused. A process
    created after the run started cannot be the one that started it.
    """
    import psutil

    try:
        created = psutil.Process(pid).create_time()
    except psutil.Error:
        return False
    return created <= started_at.timestamp() + 1.0


def reconcile_stale_runs(session: Session) -> list[int]:
    """Mark this host's `running` runs whose process is gone as failed; return their ids.

    Runs of other hosts are left alone (their processes cannot be seen from here), and so are
    runs recorded without a pid (before migration 0010).
    """
    host = socket.gethostname()
    rows = session.execute(
        sa.select(Run.id, Run.pid, Run.started_at).where(
            Run.status == "running", Run.host == host, Run.pid.is_not(None)
        )
    ).all()
    stale = [row for row in rows if not process_alive(row.pid, row.started_at)]
    for row in stale:
        session.execute(
            sa.update(Run)
            .where(Run.id == row.id, Run.status == "running")
            .values(
                status="failed",
                error=f"process {row.pid} on {host} disappeared",
                finished_at=dt.datetime.now(dt.timezone.utc),
            )
        )
    return [row.id for row in stale]
