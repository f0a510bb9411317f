"""Retention for the generation log, which grows without bound.

Generations older than a cut-off go in batches, each its own transaction, so a big
purge neither holds one huge lock nor loses its progress if interrupted (re-running
continues). Their sources and feedback go with them (ON DELETE CASCADE); then prompts
left without generations and sessions left without prompts, if older than the cut-off.
Runs, datasets, models and documents are never touched.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from genloom.db.queries.retention import RETENTION_TABLES, delete_expired_batch, expired_counts
from genloom.errors import BadInput

_AGE = re.compile(r"^\s*(\d+)\s*([dwmy])\s*$", re.IGNORECASE)
_DAYS = {"d": 1, "w": 7, "m": 30, "y": 365}


def parse_cutoff(text: str, *, now: dt.datetime | None = None) -> dt.datetime:
    """'90d' / '12w' / '6m' / '1y' (an age) or '2026-01-31' (a date) → an aware UTC datetime."""
    now = now or dt.datetime.now(dt.timezone.utc)
    match = _AGE.match(text)
    if match:
        days = int(match.group(1)) * _DAYS[match.group(2).lower()]
        if days <= 0:
            raise BadInput(f"--older-than must be a positive age (got {text!r})")
        return now - dt.timedelta(days=days)
    try:
        value = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise BadInput(
            f"--older-than must be an age like 90d, 12w, 6m, 1y or a date like 2026-01-31 (got {text!r})"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def count_expired(session: Session, cutoff: dt.datetime) -> dict[str, int]:
    """What a purge at `cutoff` would delete."""
    return expired_counts(session, cutoff)


def apply_retention(
    engine: Engine,
    cutoff: dt.datetime,
    *,
    batch_size: int = 10_000,
    on_batch: Callable[[int], None] | None = None,
) -> dict[str, int]:
    """Delete everything older than `cutoff` in batches of `batch_size` generations."""
    if batch_size < 1:
        raise BadInput(f"--batch-size must be at least 1 (got {batch_size})")
    deleted = {"generations": 0, "prompts": 0, "sessions": 0}
    from genloom import audit
    from genloom.db.engine import session_scope

    for key in RETENTION_TABLES:
        while True:
            with session_scope(engine) as s:  # one transaction per batch, as this tenant (its rows only)
                n = delete_expired_batch(s, key, cutoff, batch_size)
                if n:
                    audit.record(s, "retention.delete", key, detail={"rows": n, "cutoff": cutoff.isoformat()})
            deleted[key] += n
            if key == "generations" and on_batch is not None and n:
                on_batch(n)
            if n < batch_size:
                break
    return deleted


def can_drop_partitions(engine: Engine, cutoff: dt.datetime, *, all_tenants: bool) -> bool:
    """Whole months may go when the log is partitioned (migration 0023) and either every tenant's
    rows are meant (`all_tenants`) or no other tenant has any row before the cut-off."""
    from genloom.db import partitions
    from genloom.db.tenancy import current_tenant

    with engine.connect() as conn:
        if not partitions.is_partitioned(conn):
            return False
        return all_tenants or not partitions.other_tenants_before(conn, cutoff, current_tenant())


def drop_expired_partitions(
    engine: Engine,
    cutoff: dt.datetime | None,
    *,
    metrics_cutoff: dt.datetime | None = None,
    dry_run: bool = False,
) -> dict:
    """Detach and drop the whole months before each cut-off, in one transaction, and say what went.

    The log (`cutoff`: generations with their sources and feedback) also loses the rows before
    the cut-off in its boundary month, by DELETE; metrics lose whole months only,
    and only when their own cut-off is given. The audit log is kept whole (its hash chain).
    """
    from genloom import audit
    from genloom.db import partitions

    result: dict = {"dropped_partitions": [], "rows_in_dropped_partitions": {}, "deleted_in_boundary": {}}
    with engine.begin() as conn:
        reports = []
        if cutoff is not None:
            reports.append(partitions.purge_log(conn, cutoff, dry_run=dry_run))
        if metrics_cutoff is not None:
            reports.append(partitions.purge_table(conn, "metrics", metrics_cutoff, dry_run=dry_run))
        for report in reports:
            result["dropped_partitions"] += report.dropped
            result["rows_in_dropped_partitions"].update(report.dropped_rows)
            result["deleted_in_boundary"].update(report.deleted_rows)
        if not dry_run and (result["dropped_partitions"] or any(result["deleted_in_boundary"].values())):
            audit.record(conn, "retention.drop_partitions", "partitions", detail=result)
    return result
