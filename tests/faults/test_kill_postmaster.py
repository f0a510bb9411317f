"""SIGKILL the embedded server's postmaster at a random point of an ingest, and of every other long job.

The ingest runs as a child with a GENLOOM_HOME of its own and no DATABASE_URL, so the server it
talks to is the one genloom starts there (not the test session's). After the kill: the next
genloom command starts the server again by itself (PostgreSQL's crash recovery) and reconciles
the dead ingest's run, nothing is half-written, and a re-run of the ingest equals the same
ingest on a fresh database with no fault (see faults_support for the seed).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from faults_support import (
    StreamCounter,
    db_growth,
    growth_targets,
    in_process,
    ingest_invariants,
    kill_at_event,
    kill_postmaster,
    measure_growth,
    query,
    rng_for,
    run,
    sql_count,
    start,
    wait_for,
)

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
        # After the k-th batch of 4 documents commits (of 24), or inside the next one's write.
        docs = sql_count("SELECT count(*) FROM documents")
        what = kill_at_event(proc, url, rng_for("postmaster"), docs, range(0, 96, 4), kill=kill_postmaster(killed),
                             event="documents committed")
        what["ingest_rc"] = proc.returncode

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


# --------------------------------------------------------------------------- every other long job
# The same kill at a random point of each job the genloom-process kills cover (test_kill_jobs);
# migrations have their own (test_kill_migration). Per job: what to run first, the job, the SQL
# that says its work has begun, the progress event the kill point is on (see faults_support),
# what must hold after the restart (SQL returning no rows), and the SQL whose answer must equal
# the clean run's.

VERSIONS = ("SELECT d.name, v.version, v.sealed, v.item_count, v.manifest_sha256 FROM dataset_versions v "
            "JOIN datasets d ON d.id = v.dataset_id ORDER BY 1, 2")
NO_PARTIAL_VERSION = ("SELECT v.id FROM dataset_versions v WHERE NOT v.sealed "
                      "OR v.item_count <> (SELECT count(*) FROM dataset_members m WHERE m.version_id = v.id)")
TINY_VAE = ("--set", "channels=8", "--set", "latent_dim=4", "--batch-size", "32")
SAMPLE_DOCS = Path(__file__).resolve().parents[2] / "platform" / "genloom" / "data" / "sample_docs"


EVENTS = {"growth": "bytes written", "stdout": "characters streamed"}


@dataclasses.dataclass
class Job:
    before: list[tuple]
    args: tuple
    started: str
    progress: str  # "growth" (bytes written), "stdout" (characters streamed), or SQL counting steps
    broken: str  # rows here are half-written work
    result: str
    rerun_unless: str | None = None  # SQL: a true answer means the killed job committed; no re-run


def _jobs(tmp_path: Path) -> dict[str, Job]:
    lines = tmp_path / "lines.txt"
    lines.write_text("".join(f"line number {i} of the corpus, with some words\n" for i in range(20000)))
    dups = tmp_path / "dups.txt"
    dups.write_text("".join(f"the {i % 700} sentence about topic {i % 31} and more words\n" for i in range(3000)))
    digits = ("datasets", "import", "digits", "--name", "digits")
    return {
        "import": Job([], ("datasets", "import", "text", lines, "--name", "lines", "--unit", "line"),
                      "SELECT count(*) FROM runs WHERE kind = 'import'", "growth", NO_PARTIAL_VERSION, VERSIONS),
        "train": Job(
            [digits],
            ("train", "vae", "--dataset", "digits", "--steps", "40", "--checkpoint-every", "1",
             "--set", "log_every=1", "--name", "k", *TINY_VAE),
            "SELECT count(*) FROM run_checkpoints", "SELECT max(step) FROM run_checkpoints",
            "SELECT run_id FROM run_checkpoints WHERE encode(sha256(payload), 'hex') <> sha256 "
            "UNION ALL SELECT m.id FROM models m JOIN runs r ON r.id = m.run_id WHERE r.status <> 'succeeded' "
            "UNION ALL SELECT run_id FROM metrics GROUP BY run_id, step, name HAVING count(*) > 1",
            "SELECT m.name, m.version, m.metadata->>'steps', (SELECT array_agg(step ORDER BY step) FROM metrics x "
            "WHERE x.run_id = m.run_id AND x.name = 'loss') FROM models m",
            rerun_unless="SELECT count(*) FROM runs WHERE kind = 'train' AND status = 'succeeded'"),
        "sample": Job(
            [digits, ("train", "vae", "--dataset", "digits", "--steps", "2", "--name", "s", *TINY_VAE)],
            ("sample", "s", "--n", "3000", "--store", "--into", "synth", "--seed", "3"),
            "SELECT count(*) FROM runs WHERE kind = 'sample'", "growth", NO_PARTIAL_VERSION, VERSIONS),
        "dedup": Job(
            [("datasets", "import", "text", dups, "--name", "dups", "--unit", "line")],
            ("dedup", "dups", "--method", "minhash"),
            "SELECT count(*) FROM runs WHERE kind = 'dedup'", "growth",
            NO_PARTIAL_VERSION + " UNION ALL SELECT d.run_id FROM dedup_decisions d JOIN runs r ON r.id = d.run_id "
            "WHERE r.status <> 'succeeded'",
            VERSIONS, rerun_unless="SELECT count(*) FROM runs WHERE kind = 'dedup' AND status = 'succeeded'"),
        "ask": Job(
            [("ingest", SAMPLE_DOCS, "--collection", "kb")],
            ("ask", "How does genloom rank keywords with BM25?", "-c", "kb"),
            "SELECT count(*) FROM runs WHERE kind = 'ingest' AND status = 'succeeded'", "stdout",
            "SELECT p.id FROM prompts p WHERE NOT EXISTS (SELECT 1 FROM generations g WHERE g.prompt_id = p.id) "
            "UNION ALL SELECT g.id FROM generations g "
            "WHERE NOT EXISTS (SELECT 1 FROM generation_sources s WHERE s.generation_id = g.id)",
            "SELECT output, status FROM generations ORDER BY id DESC LIMIT 1"),
    }


@pytest.mark.parametrize("name", ["import", "train", "sample", "dedup", "ask"])
def test_postmaster_killed_during_a_job(name, db_url, cli, tmp_path):
    job = _jobs(tmp_path)[name]
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(GENLOOM_HOME=str(home), OMP_NUM_THREADS="1")
    try:
        # The clean run first, on the session's server: how far it gets is the span the kill point is drawn from.
        for command in job.before:
            in_process(cli, db_url, *command)
        clean: list = []
        span = measure_growth(db_url, lambda: clean.append(in_process(cli, db_url, *job.args)))
        run("db", "start", env=env)
        for command in job.before:
            run(*command, env=env)
        killed = _postmaster(home)
        url = killed.uri("genloom")
        grown = db_growth(url)
        proc = start(*job.args, env=env, stdout=subprocess.PIPE if job.progress == "stdout" else subprocess.DEVNULL)
        if job.progress == "stdout":
            progress, targets = StreamCounter(proc), range(0, max(len(clean[0].stdout), 1), 8)
        elif job.progress == "growth":
            progress, targets = grown, growth_targets(span)
        else:  # training: the step of the newest checkpoint (40 steps, one checkpoint each)
            progress, targets = sql_count(job.progress), range(1, 36)
        deadline = time.monotonic() + 120
        while not query(url, job.started)[0][0] and proc.poll() is None:
            assert time.monotonic() < deadline, f"{name} never began"
            time.sleep(0.05)
        what = {"job": name, **kill_at_event(proc, url, rng_for(f"postmaster-{name}"), progress, targets,
                                             kill=kill_postmaster(killed), event=EVENTS.get(job.progress, "checkpoint step"))}

        # The next command restarts the server, reconciles the dead job's run; nothing is half-written.
        assert json.loads(run("runs", "list", "--status", "running", "--json", env=env).stdout) == [], what
        url = _postmaster(home).uri("genloom")
        assert query(url, job.broken) == [], what
        if not (job.rerun_unless and query(url, job.rerun_unless)[0][0]):
            resumable = name == "train" and query(url, "SELECT count(*) FROM run_checkpoints")[0][0]
            run(*job.args, *(["--resume"] if resumable else []), env=env)
        assert query(url, job.result) == query(db_url, job.result), what
    finally:
        if home.exists():
            run("db", "stop", env=env)
