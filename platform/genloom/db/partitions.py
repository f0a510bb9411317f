"""Monthly partitions of the tables that grow with every call and step, and their retention.

Migration 0023 made these tables `PARTITION BY RANGE` on a timestamp, one partition per
calendar month (UTC), plus one `<table>_p_before` partition for anything older than the
first month (rows imported with old timestamps):

    generations         created_at              the generation log
    generation_sources  generation_created_at   its citations, kept in the month of their generation
    feedback            generation_created_at   (so a month of the log is dropped as one unit)
    metrics             created_at              training/eval metrics, per step

The audit log is not partitioned: its per-tenant hash chain (migration 0016) is verified from
its first entry, so whole months of it cannot be dropped without breaking `genloom audit verify`.

`generation_sources` and `feedback` carry their generation's `created_at` because a foreign
key to a partitioned table must name its partition key: (generation_id,
generation_created_at) → generations (id, created_at).

Partitions for the months ahead are made by `ensure_partitions`, which genloom runs itself:
after every migration, once per process on first use of a database (a cheap check), on
`genloom serve` start and daily while it runs. No cron job is needed.

Retention drops whole months: `purge_log` detaches and drops every partition that lies
wholly before the cut-off (children first, so the foreign keys hold) and deletes only the
rows of the one boundary partition that straddles it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import re
import threading
import time

import sqlalchemy as sa

# table → its partition key. Order matters for drops: referencing tables before generations.
PARTITIONED: dict[str, str] = {
    "generation_sources": "generation_created_at",
    "feedback": "generation_created_at",
    "generations": "created_at",
    "metrics": "created_at",
}
LOG_TABLES = ("generation_sources", "feedback", "generations")  # one unit: a month of the log
log = logging.getLogger(__name__)
MAINTENANCE_INTERVAL_S = 24 * 3600
AHEAD_MONTHS = 3  # months made ahead of now: inserts never find a missing partition
_MONTHLY = re.compile(r"_p(\d{4})_(\d{2})$")
# Serialises partition creation between processes (a constant every genloom process shares).
PARTITION_LOCK_KEY = 0x676C7074  # "glpt"


def month_start(when: dt.datetime) -> dt.datetime:
    when = when.astimezone(dt.timezone.utc)
    return dt.datetime(when.year, when.month, 1, tzinfo=dt.timezone.utc)


def add_months(month: dt.datetime, n: int) -> dt.datetime:
    index = month.year * 12 + (month.month - 1) + n
    return dt.datetime(index // 12, index % 12 + 1, 1, tzinfo=dt.timezone.utc)


def partition_name(table: str, month: dt.datetime) -> str:
    return f"{table}_p{month:%Y_%m}"


def before_name(table: str) -> str:
    return f"{table}_p_before"


@dataclasses.dataclass(frozen=True)
class Partition:
    table: str
    name: str
    start: dt.datetime | None  # None: the `_p_before` partition (from MINVALUE)
    end: dt.datetime


def partitions_of(conn: sa.Connection, table: str) -> list[Partition]:
    """The partitions of `table`, oldest first, read from pg_inherits."""
    names = (
        conn.execute(
            sa.text(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = to_regclass(:t)"
            ),
            {"t": table},
        )
        .scalars()
        .all()
    )
    starts = {}
    for name in names:
        match = _MONTHLY.search(name)
        if match:
            starts[name] = dt.datetime(int(match.group(1)), int(match.group(2)), 1, tzinfo=dt.timezone.utc)
    monthly = [
        Partition(table, name, start, add_months(start, 1))
        for name, start in sorted(starts.items(), key=lambda i: i[1])
    ]
    if before_name(table) in names and monthly:
        return [Partition(table, before_name(table), None, min(starts.values())), *monthly]
    return monthly


def is_partitioned(conn: sa.Connection, table: str = "generations") -> bool:
    kind = conn.execute(sa.text("SELECT relkind FROM pg_class WHERE oid = to_regclass(:t)"), {"t": table}).scalar()
    return kind == "p"


def create_month(conn: sa.Connection, table: str, month: dt.datetime) -> str:
    name = partition_name(table, month)
    conn.execute(
        sa.text(
            f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF {table} "
            f"FOR VALUES FROM ('{month.isoformat()}') TO ('{add_months(month, 1).isoformat()}')"
        )
    )
    return name


def create_before(conn: sa.Connection, table: str, first_month: dt.datetime) -> str:
    name = before_name(table)
    conn.execute(
        sa.text(
            f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF {table} "
            f"FOR VALUES FROM (MINVALUE) TO ('{first_month.isoformat()}')"
        )
    )
    return name


def needs_partitions(conn: sa.Connection, *, now: dt.datetime | None = None) -> bool:
    """Is any partitioned table missing next month's partition? (One cheap catalog query.)"""
    next_month = add_months(month_start(now or dt.datetime.now(dt.timezone.utc)), 1)
    names = [partition_name(t, next_month) for t in PARTITIONED]
    present = conn.execute(
        sa.text("SELECT count(*) FROM unnest(CAST(:n AS text[])) n WHERE to_regclass(n) IS NOT NULL"), {"n": names}
    ).scalar()
    return present != len(names)


def ensure_partitions(
    conn: sa.Connection,
    *,
    now: dt.datetime | None = None,
    ahead: int = AHEAD_MONTHS,
    tables: tuple[str, ...] = tuple(PARTITIONED),
    first_month: dt.datetime | None = None,
) -> list[str]:
    """Create every missing monthly partition up to `ahead` months after now; return the new names.

    Gaps are filled too (a store nobody used for half a year gets every month since its last
    partition), so a row stamped with any time up to the horizon always has a home. A table
    with no partitions yet (migration 0023) starts at `first_month` (default: this month),
    below which its `_p_before` partition takes everything.
    """
    if not is_partitioned(conn):
        return []  # before migration 0023
    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": PARTITION_LOCK_KEY})
    this_month = month_start(now or dt.datetime.now(dt.timezone.utc))
    horizon = add_months(this_month, ahead)
    created = []
    for table in tables:
        existing = partitions_of(conn, table)
        month = existing[-1].end if existing else min(first_month or this_month, this_month)
        if not existing:
            created.append(create_before(conn, table, month))
        while month <= horizon:
            created.append(create_month(conn, table, month))
            month = add_months(month, 1)
    return created


@dataclasses.dataclass
class PurgeReport:
    dropped: list[str] = dataclasses.field(default_factory=list)  # partition names
    dropped_rows: dict[str, int] = dataclasses.field(default_factory=dict)  # table → rows in dropped partitions
    deleted_rows: dict[str, int] = dataclasses.field(default_factory=dict)  # table → rows deleted in the boundary


def _drop(conn: sa.Connection, part: Partition, report: PurgeReport, *, dry_run: bool) -> None:
    rows = conn.execute(sa.text(f"SELECT count(*) FROM {part.name}")).scalar() or 0
    report.dropped.append(part.name)
    report.dropped_rows[part.table] = report.dropped_rows.get(part.table, 0) + rows
    if not dry_run:
        conn.execute(sa.text(f"ALTER TABLE {part.table} DETACH PARTITION {part.name}"))
        conn.execute(sa.text(f"DROP TABLE {part.name}"))


def _expired(conn: sa.Connection, table: str, cutoff: dt.datetime) -> tuple[list[Partition], Partition | None]:
    """(partitions wholly before the cut-off, the partition that straddles it or None)."""
    parts = partitions_of(conn, table)
    whole = [p for p in parts if p.end <= cutoff]
    boundary = next((p for p in parts if p.end > cutoff and (p.start is None or p.start < cutoff)), None)
    return whole, boundary


def purge_log(conn: sa.Connection, cutoff: dt.datetime, *, dry_run: bool = False) -> PurgeReport:
    """Remove the generation log (generations, their sources and feedback) older than `cutoff`, all tenants.

    Whole months go by DETACH + DROP (no row is read or written, no dead tuples left for
    VACUUM); only the month holding the cut-off is cleaned by DELETE, whose ON DELETE CASCADE
    takes the sources and feedback with each generation. Runs in the caller's transaction.
    """
    report = PurgeReport()
    expired = {table: _expired(conn, table, cutoff) for table in LOG_TABLES}
    for table in LOG_TABLES:  # children first: the foreign keys to generations stay satisfied
        for part in expired[table][0]:
            _drop(conn, part, report, dry_run=dry_run)
    boundary = expired["generations"][1]
    if boundary is not None:
        count_or_delete = "SELECT count(*) FROM" if dry_run else "WITH d AS (DELETE FROM"
        where = "WHERE created_at < :cutoff"
        sql = (
            f"{count_or_delete} {boundary.name} {where}"
            if dry_run
            else f"{count_or_delete} {boundary.name} {where} RETURNING 1) SELECT count(*) FROM d"
        )
        report.deleted_rows["generations"] = conn.execute(sa.text(sql), {"cutoff": cutoff}).scalar() or 0
    return report


def purge_table(conn: sa.Connection, table: str, cutoff: dt.datetime, *, dry_run: bool = False) -> PurgeReport:
    """Drop the whole monthly partitions of `table` (metrics, audit_log) that end before `cutoff`.

    Whole months only: the audit log is append-only (its triggers refuse DELETE), so it is
    kept up to the start of the month holding the cut-off, never cut inside a month.
    """
    report = PurgeReport()
    for part in _expired(conn, table, cutoff)[0]:
        _drop(conn, part, report, dry_run=dry_run)
    return report


def other_tenants_before(conn: sa.Connection, cutoff: dt.datetime, tenant: str) -> bool:
    """Does any other tenant have generations older than `cutoff`? (Dropping months would take them too.)"""
    return bool(
        conn.execute(
            sa.text("SELECT EXISTS (SELECT 1 FROM generations WHERE created_at < :c AND tenant <> :t)"),
            {"c": cutoff, "t": tenant},
        ).scalar()
    )


def maintain(engine: sa.Engine) -> list[str]:
    """Make the months ahead if any is missing (a catalog lookup when none is); return what was made."""
    with engine.connect() as conn:
        if not is_partitioned(conn) or not needs_partitions(conn):
            return []
    with engine.begin() as conn:
        return ensure_partitions(conn)


def maintain_daily(engine: sa.Engine) -> threading.Thread:
    """A daemon thread that runs `maintain` once a day (`genloom serve` starts it)."""

    def loop() -> None:
        while True:
            time.sleep(MAINTENANCE_INTERVAL_S)
            try:
                made = maintain(engine)
            except sa.exc.DBAPIError as exc:  # a server restart: try again tomorrow, say so now
                log.warning("partition maintenance failed (retried in a day): %s", str(exc).splitlines()[0])
                continue
            if made:
                log.info("created partitions %s", ", ".join(made))

    thread = threading.Thread(target=loop, name="genloom-partitions", daemon=True)
    thread.start()
    return thread
