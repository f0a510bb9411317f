"""Kill a real genloom process at a random point, then check what it left behind.

Each fault test: snapshot the database (a file-level copy, `CREATE DATABASE … TEMPLATE`), start
the job as a `python cli.py …` child, SIGKILL it at a random point of its work, then check the
job's invariants in SQL (nothing partial), that no run stays `running` once stale runs are
reconciled, and that re-running the job gives what the same job gives on the snapshot with no
fault (the clean run).

The points are events of the job's own progress, not wall-clock offsets (issue 30: an offset
lands at a different point, or after the end, on a loaded machine): `kill_at_event` kills the
moment a progress count (committed documents, checkpoints, streamed bytes, or the bytes the job
has written to the database) first reaches a target, and for half the targets at the next moment
after it when the job holds a transaction that has written (a kill mid-write). The seed picks the
target and the phase: one seed per test run, printed, replayable with GENLOOM_FAULT_SEED=N.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence

import sqlalchemy as sa
from conftest import REPO_ROOT

SEED = int(os.environ.get("GENLOOM_FAULT_SEED") or random.SystemRandom().randrange(1 << 30))
print(f"fault seed: GENLOOM_FAULT_SEED={SEED}")


def rng_for(name: str) -> random.Random:
    return random.Random(f"{SEED}:{name}")


def start(*args: str, env: dict, stdout=subprocess.DEVNULL) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(REPO_ROOT / "cli.py"), *map(str, args)], env=env, cwd=REPO_ROOT,
                            stdout=stdout, stderr=subprocess.PIPE, text=True)


def run(*args: str, env: dict, timeout: int = 300) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, str(REPO_ROOT / "cli.py"), *map(str, args)], env=env, cwd=REPO_ROOT,
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr[-2000:]
    return r


def wait_for(engine, sql: str, proc: subprocess.Popen, timeout: float = 120) -> bool:
    """Until SQL returns a true value (the job's work has begun); False if the process ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        with engine.connect() as conn:
            if conn.execute(sa.text(sql)).scalar():
                return True
        time.sleep(0.05)
    raise AssertionError(f"the job never started: {sql}")


# A backend of this database, other than the asking one, whose transaction has written (has an xid).
WRITING = ("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
           "AND backend_type = 'client backend' AND backend_xid IS NOT NULL")
DB_BYTES = "SELECT pg_database_size(current_database())"


def sql_count(sql: str) -> Callable[[sa.Connection], int]:
    """A progress count: the value of SQL (committed rows the job made, …)."""
    return lambda conn: int(conn.execute(sa.text(sql)).scalar() or 0)


def db_growth(url: str) -> Callable[[sa.Connection], int]:
    """A progress count: bytes the database has grown by since now (relation files extend as rows
    are written, committed or not). Call it before the job starts."""
    baseline = query(url, DB_BYTES)[0][0]
    return lambda conn: max(0, int(conn.execute(sa.text(DB_BYTES)).scalar()) - baseline)


def measure_growth(url: str, job: Callable[[], object]) -> int:
    """Bytes the database at URL grows by while JOB (a clean run) runs: the span a kill target is drawn from."""
    before = query(url, DB_BYTES)[0][0]
    job()
    return max(0, query(url, DB_BYTES)[0][0] - before)


def growth_targets(total: int, points: int = 64) -> list[int]:
    """Targets spread over [0, TOTAL) bytes of growth (one page when the clean run grew less)."""
    total = max(total, 8192)
    return sorted({total * i // points for i in range(points)})


class StreamCounter:
    """Counts the characters PROC writes to its stdout (a pipe), read on a thread: progress by output."""

    def __init__(self, proc: subprocess.Popen):
        self.count = 0
        self.thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self.thread.start()

    def _read(self, proc: subprocess.Popen) -> None:
        while chunk := proc.stdout.read(1):
            self.count += len(chunk)

    def __call__(self, conn) -> int:
        return self.count


def kill_at_event(proc: subprocess.Popen, url: str, rng: random.Random, progress: Callable[[sa.Connection], int],
                  targets: Sequence[int], *, kill: Callable[[], None] | None = None, event: str = "progress",
                  timeout: float = 300) -> dict:
    """Kill when PROGRESS (read on a connection to URL) first reaches a target the seed picks from
    TARGETS; for half the seeds, at the first moment after that when the job holds a transaction
    that has written. KILL defaults to SIGKILL of PROC. Returns what happened, for messages."""
    target = rng.choice(list(targets))
    mid_write = rng.random() < 0.5
    what = {"event": event, "target": target, "phase": "mid-write" if mid_write else "at target", "seed": SEED}
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool, isolation_level="AUTOCOMMIT")
    deadline = time.monotonic() + timeout
    try:
        with engine.connect() as conn:
            reached = False
            while proc.poll() is None:
                assert time.monotonic() < deadline, f"no kill point in {timeout} s: {what}"
                if not reached:
                    seen = progress(conn)
                    reached = seen >= target
                    if reached:
                        what["seen"] = seen
                if reached and (not mid_write or conn.execute(sa.text(WRITING)).scalar()):
                    break
                time.sleep(0.005)
    finally:
        engine.dispose()
    what["finished_first"] = proc.poll() is not None
    if not what["finished_first"]:
        if kill is None:
            proc.send_signal(signal.SIGKILL)
        else:
            kill()
    proc.wait(timeout=120)
    # shown with -s: the point this seed chose and what the job had done (sys.__stdout__: the `cli`
    # fixture's capsys would swallow a plain print in a test that runs genloom in-process afterwards)
    print(f"kill: {what}", file=sys.__stdout__, flush=True)
    return what


def kill_postmaster(postmaster) -> Callable[[], None]:
    """KILL for kill_at_event: SIGKILL the embedded server's postmaster and wait until it is gone."""

    def kill() -> None:
        os.kill(postmaster.pid, signal.SIGKILL)
        # Until its parent (init) reaps it, the killed postmaster is a zombie that still counts as alive.
        gone_by = time.monotonic() + 15
        while postmaster.alive() and time.monotonic() < gone_by:
            time.sleep(0.1)
        assert not postmaster.alive(), "the killed postmaster is still alive"

    return kill


def reconcile_and_check_no_running(engine) -> None:
    """A later genloom command reconciles this host's dead runs; none may stay `running`."""
    from sqlalchemy.orm import Session

    from genloom.db.stale_runs import reconcile_stale_runs

    with Session(engine) as s, s.begin():
        reconcile_stale_runs(s)
    with engine.connect() as conn:
        running = conn.execute(sa.text("SELECT id, kind FROM runs WHERE status = 'running'")).all()
    assert running == [], running


class Snapshot:
    """A copy of the test's database taken before the fault: the clean run happens there."""

    def __init__(self, db_url: str):
        import psycopg

        from genloom.db.engine import reset_engines

        self.source_url = sa.engine.make_url(db_url)
        self.name = "snap_" + uuid.uuid4().hex[:10]
        reset_engines()  # no connection may stay open on the template
        admin = self.source_url.set(database="postgres", drivername="postgresql")
        with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {self.name} TEMPLATE {self.source_url.database} STRATEGY FILE_COPY")
        self.url = self.source_url.set(database=self.name).render_as_string(hide_password=False)
        self._admin = admin.render_as_string(hide_password=False)

    def drop(self) -> None:
        import psycopg

        with psycopg.connect(self._admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")


def query(url: str, sql: str, **params):
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(sql), params).all()
    finally:
        engine.dispose()


def ingest_invariants(url: str) -> tuple:
    """Each document whole (chunks, embeddings, postings) and BM25 statistics equal to what the
    chunks say (N, total length, df): (0, 0, 0, 0, 0) when nothing is partial. An incomplete
    document (a large file's slices so far, not current) has chunks with vectors but no postings
    until it is whole."""
    return tuple(query(url, """
        SELECT
          (SELECT count(*) FROM documents d WHERE NOT EXISTS (SELECT 1 FROM chunks c WHERE c.document_id = d.id)),
          (SELECT count(*) FROM chunks c WHERE NOT EXISTS (SELECT 1 FROM embeddings e WHERE e.chunk_id = c.id)),
          (SELECT count(*) FROM chunks c JOIN documents d ON d.id = c.document_id
            WHERE (NOT d.incomplete) = NOT EXISTS (SELECT 1 FROM retrieval_postings p WHERE p.chunk_id = c.id)),
          (SELECT count(*) FROM retrieval_collection_stats s
            WHERE s.n_chunks <> (SELECT count(*) FROM chunks c JOIN documents d ON d.id = c.document_id
                                 WHERE d.collection_id = s.collection_id AND d.superseded_at IS NULL)
               OR s.total_length <> (SELECT coalesce(sum(r.length), 0) FROM retrieval_chunks r
                                     WHERE r.collection_id = s.collection_id AND r.current)),
          (SELECT count(*) FROM retrieval_term_stats t
            WHERE t.df <> (SELECT count(*) FROM retrieval_postings p
                           WHERE p.collection_id = t.collection_id AND p.term = t.term AND p.current))
    """)[0])


def in_process(cli, url: str, *args: str):
    """Run `genloom ARGS` in this process against URL (the clean run: no interpreter start-up,
    and models such as MiniLM stay loaded between tests)."""
    import pytest

    from genloom.db.engine import reset_engines

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DATABASE_URL", url)
        reset_engines()
        try:
            result = cli(*args)
        finally:
            reset_engines()
    assert result.exit_code == 0, result.stderr
    return result
