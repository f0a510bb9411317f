"""Where a unit of work goes: writes to the primary, reads to a streaming replica that is fresh enough.

The session factory (`genloom.db.engine.get_engine(purpose=…)`, `session_scope(purpose=…)`)
asks `read_url()` which server serves a read. The rules:

- `purpose="write"` (the default) always means the primary: ingest, the generation log,
  feedback, runs, and every read that must see the caller's own writes (`genloom ask` reads
  its session's history from the primary).
- `purpose="read"` (search, the analytics views, `genloom sql`, the report, evaluation reads)
  goes to the first replica in `DATABASE_READ_URL` (comma-separated; for the embedded server
  also every replica `genloom db replica create` made) that answers and whose replay lag is at
  most `GENLOOM_MAX_REPLICA_LAG` (default 5s). Otherwise the primary serves it, and a note
  says why on genloom's log (stderr for the CLI): a lagging or unreachable replica never
  gives a stale or failed answer silently.

Lag is measured against the primary, not guessed from the replica alone: genloom reads the
primary's current WAL position and waits (at most the limit, and at most 1 s) for the
replica to replay it; the wait is the lag. A replica that does not get there is behind by at
least the time since the last transaction it replayed, which is what is compared with the
limit (an upper bound: it can only send a read to the primary, never a stale one to a caller). A replica's verdict is cached for
`CHECK_INTERVAL_S`, so a burst of reads costs one check; a failure during a read marks it
down until the next check (`mark_down`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import threading
import time

import sqlalchemy as sa

from genloom.config import database_url
from genloom.db.url import redact, sqlalchemy_url
from genloom.errors import ConfigError

READ_URL_ENV = "DATABASE_READ_URL"
MAX_LAG_ENV = "GENLOOM_MAX_REPLICA_LAG"
DEFAULT_MAX_LAG_S = 5.0
CHECK_INTERVAL_S = 1.0
CONNECT_TIMEOUT_S = 3
MAX_WAIT_S = 1.0  # how long a check waits for a replica to replay the primary's current position  # a dead replica host must not stall a read for long

log = logging.getLogger("genloom.db.routing")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def max_lag_s() -> float:
    """GENLOOM_MAX_REPLICA_LAG: 5s, 500ms, 2m, 1h or a number of seconds."""
    text = os.environ.get(MAX_LAG_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_LAG_S
    match = _DURATION.match(text)
    if not match:
        raise ConfigError(f"{MAX_LAG_ENV} must be a duration like 5s, 500ms, 2m or 1h (got {text!r})")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


def read_urls() -> list[str]:
    """The replicas to read from, in order of preference."""
    urls = [u.strip() for u in os.environ.get(READ_URL_ENV, "").replace("\n", ",").split(",") if u.strip()]
    if database_url() is None:  # the embedded server: also the replicas `genloom db replica create` made
        from genloom.db.replicas import embedded_replica_urls

        urls += [u for u in embedded_replica_urls() if u not in urls]
    return urls


@dataclasses.dataclass(frozen=True)
class Verdict:
    url: str
    usable: bool
    lag_s: float | None  # None: unreachable, or not a standby
    reason: str | None = None  # why not usable
    checked_at: float = 0.0


_verdicts: dict[str, Verdict] = {}
_engines: dict[str, sa.Engine] = {}
_lock = threading.Lock()


def replica_engine(url: str) -> sa.Engine:
    """One small engine per replica URL (no migration: the schema arrives by replication)."""
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            # No waiting out a recovering replica (the primary's engine does): the primary serves meanwhile.
            engine = sa.create_engine(
                sqlalchemy_url(url),
                pool_pre_ping=True,
                hide_parameters=True,  # no statement values (questions, PII) in error messages
                connect_args={"connect_timeout": CONNECT_TIMEOUT_S, "application_name": "genloom"},
            )
            _engines[url] = engine
        return engine


def measure(url: str, primary: sa.Engine) -> Verdict:
    """Ask the replica how far behind the primary it is (never raises)."""
    now = time.monotonic()
    limit = max_lag_s()
    query = sa.text(
        "SELECT pg_is_in_recovery(), pg_wal_lsn_diff(CAST(:lsn AS pg_lsn), pg_last_wal_replay_lsn()) <= 0, "
        "extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp())"
    )
    try:
        with primary.connect() as conn:
            primary_lsn = str(conn.execute(sa.text("SELECT pg_current_wal_lsn()")).scalar())
        with replica_engine(url).connect() as conn:
            # Has the replica replayed what the primary had written when we asked? A streaming
            # replica usually gets there within milliseconds: wait for it (at most the limit, and
            # MAX_WAIT_S) and the time it took is the lag.
            while True:
                in_recovery, caught_up, since_replay = conn.execute(query, {"lsn": primary_lsn}).one()
                waited = time.monotonic() - now
                if not in_recovery or caught_up or waited > min(limit, MAX_WAIT_S):
                    break
                time.sleep(0.01)
    except sa.exc.DBAPIError as exc:
        first = str(getattr(exc, "orig", exc)).strip().splitlines()
        return Verdict(url, False, None, f"unreachable ({first[0] if first else type(exc).__name__})", now)
    if not in_recovery:
        return Verdict(url, False, None, "not a standby (pg_is_in_recovery() is false)", now)
    # Not caught up: behind by at least the time since the last transaction it replayed
    # (unknown, so too far behind, when it has replayed none since it started).
    lag = waited if caught_up else max(waited, float(since_replay) if since_replay is not None else float("inf"))
    if lag > limit:
        return Verdict(url, False, lag, f"{lag:.1f} s behind the primary (limit {MAX_LAG_ENV}={limit:g}s)", now)
    return Verdict(url, True, lag, None, now)


def _verdict(url: str, primary: sa.Engine) -> Verdict:
    cached = _verdicts.get(url)
    if cached is not None and time.monotonic() - cached.checked_at < CHECK_INTERVAL_S:
        return cached
    verdict = measure(url, primary)
    previous, _verdicts[url] = _verdicts.get(url), verdict
    if not verdict.usable and (previous is None or previous.reason != verdict.reason):
        log.warning("reading from the primary: replica %s is %s", _safe(url), verdict.reason)
    return verdict


def read_url(primary: sa.Engine) -> str | None:
    """The replica URL a read should use now, or None for the primary."""
    for url in read_urls():
        if _verdict(url, primary).usable:
            return url
    return None


def mark_down(engine: sa.Engine, exc: BaseException) -> None:
    """A read on this replica engine failed mid-way: use the primary until the next check finds it healthy."""
    url = next((u for u, e in _engines.items() if e is engine), None)
    if url is None:
        return
    first = str(getattr(exc, "orig", exc)).strip().splitlines()
    reason = f"failed during a read ({first[0] if first else type(exc).__name__})"
    _verdicts[url] = Verdict(url, False, None, reason, time.monotonic())
    log.warning("reading from the primary: replica %s %s", _safe(url), reason)
    engine.dispose()  # its pooled connections are dead


def replica_report(primary: sa.Engine) -> list[dict]:
    """Each replica's state and lag, freshly measured (for `genloom db status`)."""
    report = []
    for url in read_urls():
        verdict = measure(url, primary)
        report.append(
            {
                "url": _safe(url),
                "state": "streaming" if verdict.usable else "not used",
                "lag_s": None if verdict.lag_s is None else round(verdict.lag_s, 3),
                "note": verdict.reason,
            }
        )
    return report


def forget() -> None:
    """Drop cached engines and verdicts (tests switch servers)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
        _verdicts.clear()


def _safe(url: str) -> str:
    return redact(url)
