"""Long jobs stop at a safe point on SIGTERM/SIGINT, record `interrupted` with what they committed, and say so."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa

from conftest import REPO_ROOT


def _run_row(engine, run_id):
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT status, error, summary FROM runs WHERE id = :r"), {"r": run_id}).one()


def test_sigterm_interrupts_a_tracked_run_and_records_what_it_committed(engine):
    from genloom.errors import JobInterrupted
    from genloom.runs import tracked_run

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(JobInterrupted) as caught:
        with tracked_run("ingest") as run:
            run_id = run.id
            run.committed = lambda: {"documents": 3, "chunks": 7}
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)  # the handler raises at the next bytecode: never slept through
    message = f"ingest run {run_id} interrupted by SIGTERM; committed: documents 3, chunks 7"
    assert str(caught.value) == message
    status, error, summary = _run_row(engine, run_id)
    assert (status, error, summary) == ("interrupted", message, {"committed": {"documents": 3, "chunks": 7}})
    assert signal.getsignal(signal.SIGTERM) is before  # the handler lives only as long as the job


def test_ctrl_c_on_an_all_or_nothing_job_says_nothing_was_committed(engine):
    from genloom.errors import JobInterrupted
    from genloom.runs import tracked_run

    with pytest.raises(JobInterrupted, match=r"import run \d+ interrupted by SIGINT \(Ctrl-C\); committed: nothing \(this job commits all or nothing\)"):
        with tracked_run("import") as run:
            run_id = run.id
            raise KeyboardInterrupt
    assert _run_row(engine, run_id).status == "interrupted"


def test_cli_prints_the_interruption_on_stderr_and_exits_130(cli, monkeypatch):
    from genloom.datasets import importers

    def stopped(*args, **kwargs):
        from genloom.runs import tracked_run

        with tracked_run("import") as run:
            run.committed = lambda: {"items": 0}
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)

    monkeypatch.setattr(importers, "import_text", stopped)
    result = cli("datasets", "import", "text", "whatever.txt", "--name", "x")
    assert result.exit_code == 130
    assert result.stderr.startswith("interrupted: import run ") and result.stderr.endswith(
        "interrupted by SIGTERM; committed: items 0\n")


def test_sigterm_stops_a_real_ingest_between_batches(db_url, engine, tmp_path):
    """A real `genloom ingest` process: SIGTERM after its first batches commit. What the run says it
    committed is exactly what the tables hold, every document whole; re-running finishes the rest."""
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(400):
        (folder / f"d{i:03}.txt").write_text(f"Document {i} is about topic {i % 13}. " * 3)
    env = {**os.environ, "DATABASE_URL": db_url, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(REPO_ROOT / "cli.py"), "ingest", str(folder), "--collection", "c", "--batch", "8"]
    proc = subprocess.Popen(cmd, env=env, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            with engine.connect() as conn:
                if conn.execute(sa.text("SELECT count(*) FROM documents")).scalar() >= 16:
                    break
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    with engine.connect() as conn:
        status, error, summary = conn.execute(sa.text("SELECT status, error, summary FROM runs WHERE kind = 'ingest'")).one()
        docs = conn.execute(sa.text("SELECT count(*) FROM documents")).scalar()
        chunks = conn.execute(sa.text("SELECT count(*) FROM chunks")).scalar()
        chunkless = conn.execute(sa.text(
            "SELECT count(*) FROM documents d WHERE NOT EXISTS (SELECT 1 FROM chunks c WHERE c.document_id = d.id)")).scalar()
        unembedded = conn.execute(sa.text(
            "SELECT count(*) FROM chunks c WHERE NOT EXISTS (SELECT 1 FROM embeddings e WHERE e.chunk_id = c.id)")).scalar()
    assert status == "interrupted" and 16 <= docs < 400
    assert summary == {"committed": {"documents": docs, "chunks": chunks}}
    assert chunkless == 0 and unembedded == 0
    assert stderr.strip().splitlines()[-1] == f"interrupted: {error}"
    assert error.endswith(f"interrupted by SIGTERM; committed: documents {docs}, chunks {chunks}; "
                          "run the same ingest again: written documents are skipped, a large one goes on where it stopped")
    rerun = subprocess.run(cmd + ["--json"], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM documents")).scalar() == 400
