"""Kill a real genloom process at a random point, then check what it left behind.

Each fault test: snapshot the database (a file-level copy, `CREATE DATABASE … TEMPLATE`), start
the job as a `python cli.py …` child, SIGKILL it at a random moment after its work began, then
check the job's invariants in SQL (nothing partial), that no run stays `running` once stale runs
are reconciled, and that re-running the job gives what the same job gives on the snapshot with
no fault (the clean run).

The random points come from one seed per test run, printed, and replayable with
GENLOOM_FAULT_SEED=N.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid

import sqlalchemy as sa
from conftest import REPO_ROOT

SEED = int(os.environ.get("GENLOOM_FAULT_SEED") or random.SystemRandom().randrange(1 << 30))
print(f"fault seed: GENLOOM_FAULT_SEED={SEED}")


def rng_for(name: str) -> random.Random:
    return random.Random(f"{SEED}:{name}")


def start(*args: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(REPO_ROOT / "cli.py"), *map(str, args)], env=env, cwd=REPO_ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


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


def kill_at_random(proc: subprocess.Popen, rng: random.Random, window: tuple[float, float]) -> dict:
    """SIGKILL PROC after a random delay in WINDOW seconds; what happened, for the test's message."""
    delay = rng.uniform(*window)
    deadline = time.monotonic() + delay
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    finished_first = proc.poll() is not None
    if not finished_first:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    return {"delay_s": round(delay, 3), "finished_before_kill": finished_first, "seed": SEED}


def kill_postmaster_at_random(postmaster, proc: subprocess.Popen, rng: random.Random,
                              window: tuple[float, float]) -> dict:
    """SIGKILL the embedded server's POSTMASTER after a random delay in WINDOW seconds while the
    job PROC runs; wait for the job to end and the postmaster to be gone. What happened, for messages."""
    delay = rng.uniform(*window)
    deadline = time.monotonic() + delay
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    what = {"delay_s": round(delay, 3), "finished_first": proc.poll() is not None, "seed": SEED}
    os.kill(postmaster.pid, signal.SIGKILL)
    proc.wait(timeout=120)  # its connection is gone: it fails (or had finished)
    # Until its parent (init) reaps it, the killed postmaster is a zombie that still counts as alive.
    gone_by = time.monotonic() + 15
    while postmaster.alive() and time.monotonic() < gone_by:
        time.sleep(0.1)
    assert not postmaster.alive(), what
    return what


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
