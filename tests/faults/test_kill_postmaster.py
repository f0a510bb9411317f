"""SIGKILL the embedded server's postmaster at a random point of an ingest.

The ingest runs as a child with a GENLOOM_HOME of its own and no DATABASE_URL, so the server it
talks to is the one genloom starts there (not the test session's). After the kill: the next
genloom command starts the server again by itself (PostgreSQL's crash recovery) and reconciles
the dead ingest's run, nothing is half-written, and a re-run of the ingest equals the same
ingest on a fresh database with no fault (see faults_support for the seed).
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
from faults_support import SEED, in_process, ingest_invariants, query, rng_for, run, start, wait_for

pytestmark = pytest.mark.faults

INGEST = ("--collection", "c", "--batch", "4")
CHUNKS = (
    "SELECT d.external_id, d.sha256, c.ordinal, c.text FROM documents d JOIN chunks c ON c.document_id = d.id "
    "WHERE d.superseded_at IS NULL ORDER BY 1, 3"
)


def _postmaster(home):
    from genloom.db.embedded import Postmaster

    return Postmaster.read(home / "pg")


def test_postmaster_killed_during_ingest(db_url, cli, tmp_path):
    import sqlalchemy as sa

    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(GENLOOM_HOME=str(home), OMP_NUM_THREADS="1")
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(96):
        (folder / f"d{i:02}.txt").write_text(f"Note {i} about subject {i % 5}. It has a second sentence. " * 4)
    try:
        run("db", "start", env=env)  # initdb and migrations happen here, not inside the fault window
        killed = _postmaster(home)
        url = killed.uri("genloom")
        engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1), poolclass=sa.pool.NullPool)
        proc = start("ingest", folder, *INGEST, env=env)
        try:
            wait_for(engine, "SELECT count(*) FROM runs WHERE kind = 'ingest'", proc)
        finally:
            engine.dispose()
        delay = rng_for("postmaster").uniform(0.0, 3.0)
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)
        what = {"delay_s": round(delay, 3), "ingest_finished_first": proc.poll() is not None, "seed": SEED}
        os.kill(killed.pid, signal.SIGKILL)
        proc.wait(timeout=120)  # its connection is gone: it fails (or had finished)
        what["ingest_rc"] = proc.returncode
        # Until its parent (init) reaps it, the killed postmaster is a zombie that still counts as alive.
        gone_by = time.monotonic() + 15
        while killed.alive() and time.monotonic() < gone_by:
            time.sleep(0.1)
        assert not killed.alive(), what

        # The next command starts the server again by itself and marks the dead ingest's run failed.
        running = json.loads(run("runs", "list", "--status", "running", "--json", env=env).stdout)
        assert running == [], what
        restarted = _postmaster(home)
        assert restarted is not None and restarted.pid != killed.pid and restarted.alive(), what
        assert query(url, "SELECT count(*) FROM runs WHERE status = 'running'")[0][0] == 0, what
        assert ingest_invariants(url) == (0, 0, 0, 0, 0), what

        run("ingest", folder, *INGEST, env=env)
        in_process(cli, db_url, "ingest", folder, *INGEST)  # the clean run, on the session's server
        after, clean = query(url, CHUNKS), query(db_url, CHUNKS)
        assert len(after) >= 96 and after == clean, what
        assert ingest_invariants(url) == (0, 0, 0, 0, 0), what
        assert query(url, "SELECT count(*) FROM runs WHERE kind = 'ingest' AND status = 'succeeded'")[0][0] >= 1
    finally:
        if home.exists():
            run("db", "stop", env=env)
