"""SIGKILL genloom at a random point of each long job: nothing partial, no run left running, and
the re-run equals a clean run (see faults_support for the procedure, the seed, and the events
that define the points)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import sqlalchemy as sa
from faults_support import (
    Snapshot,
    StreamCounter,
    db_growth,
    growth_targets,
    in_process,
    ingest_invariants,
    kill_at_event,
    measure_growth,
    query,
    reconcile_and_check_no_running,
    rng_for,
    run,
    sql_count,
    start,
    wait_for,
)

pytestmark = pytest.mark.faults

TINY_VAE = ["--set", "channels=8", "--set", "latent_dim=4", "--batch-size", "32"]


@pytest.fixture
def env(db_url):
    return {**os.environ, "DATABASE_URL": db_url, "OMP_NUM_THREADS": "1"}


@pytest.fixture
def snapshot(db_url):
    snaps = []

    def take():
        snaps.append(Snapshot(db_url))
        return snaps[-1]

    yield take
    for s in snaps:
        s.drop()


def test_ingest_killed_at_random(db_url, env, engine, snapshot, cli, tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(32):
        (folder / f"d{i:02}.txt").write_text(f"Note {i} about subject {i % 5}. It has a second sentence. " * 4)
    snap = snapshot()
    proc = start("ingest", folder, "--collection", "c", "--batch", "4", env=env)
    wait_for(engine, "SELECT count(*) FROM runs WHERE kind = 'ingest'", proc)
    # After the k-th batch of 4 documents commits (k = 0: before the first), or inside the next one's write.
    docs = sql_count("SELECT count(*) FROM documents")
    what = kill_at_event(proc, db_url, rng_for("ingest"), docs, range(0, 32, 4), event="documents committed")
    assert ingest_invariants(db_url) == (0, 0, 0, 0, 0), what
    reconcile_and_check_no_running(engine)
    run("ingest", folder, "--collection", "c", "--batch", "4", env=env)
    in_process(cli, snap.url, "ingest", folder, "--collection", "c", "--batch", "4")
    sql = ("SELECT d.external_id, d.sha256, c.ordinal, c.text FROM documents d JOIN chunks c ON c.document_id = d.id "
           "WHERE d.superseded_at IS NULL ORDER BY 1, 3")
    after, clean = query(db_url, sql), query(snap.url, sql)
    assert len(after) >= 32 and after == clean, what
    assert ingest_invariants(db_url) == (0, 0, 0, 0, 0)


def test_large_file_ingest_killed_at_random_resumes(db_url, env, engine, snapshot, cli, tmp_path, tiny_model):
    # Over loaders.STREAM_BYTES (4 MB): streamed, a slice of 512 chunks per transaction.
    path = tmp_path / "big.txt"
    words = "data model vector index query token chunk search rank score table row".split()
    path.write_text(" ".join(words[(i * 7) % len(words)] + str(i % 1000) for i in range(490_000)))  # 4.3 MB
    args = ("ingest", path, "--collection", "big", "--model", tiny_model)
    snap = snapshot()
    proc = start(*args, env=env)
    wait_for(engine, "SELECT count(*) FROM chunks", proc)  # the first slice is in
    # After the k-th 512-chunk slice commits (of about 11), or inside the next slice's write.
    chunks = sql_count("SELECT count(*) FROM chunks")
    what = kill_at_event(proc, db_url, rng_for("large"), chunks, [512 * k for k in range(1, 9)], event="chunks committed")
    assert ingest_invariants(db_url) == (0, 0, 0, 0, 0), what
    what["incomplete_chunks"] = query(db_url, "SELECT count(*) FROM chunks c JOIN documents d "
                                              "ON d.id = c.document_id WHERE d.incomplete")[0][0]
    reconcile_and_check_no_running(engine)
    again = json.loads(run(*args, "--json", env=env).stdout)
    assert again["resumed"] == (1 if what["incomplete_chunks"] else 0), (what, {k: again[k] for k in ("resumed", "written", "unchanged", "problems", "chunks")})
    in_process(cli, snap.url, *args)
    sql = ("SELECT d.external_id, d.sha256, d.version, c.ordinal, c.text FROM documents d "
           "JOIN chunks c ON c.document_id = d.id WHERE d.superseded_at IS NULL ORDER BY 1, 4")
    after, clean = query(db_url, sql), query(snap.url, sql)
    assert len(after) > 512 and after == clean, what
    assert ingest_invariants(db_url) == (0, 0, 0, 0, 0)
    assert query(db_url, "SELECT count(*) FROM documents")[0][0] == 1, what  # resumed: no second row


def _versions(url):
    return query(url, "SELECT d.name, v.version, v.sealed, v.item_count, v.manifest_sha256, "
                      "(SELECT count(*) FROM dataset_members m WHERE m.version_id = v.id) "
                      "FROM dataset_versions v JOIN datasets d ON d.id = v.dataset_id ORDER BY 1, 2")


def _no_partial_versions(url):
    # A version is sealed with all its members, or it does not exist.
    return [row for row in _versions(url) if not row[2] or row[3] != row[5]]


def test_dataset_import_killed_at_random(db_url, env, engine, snapshot, cli, tmp_path):
    corpus = tmp_path / "lines.txt"
    corpus.write_text("".join(f"line number {i} of the corpus, with some words\n" for i in range(20000)))
    snap = snapshot()
    args = ("datasets", "import", "text", corpus, "--name", "lines", "--unit", "line")
    # The clean run first: how much its one transaction writes is the span the kill point is drawn from.
    span = measure_growth(snap.url, lambda: in_process(cli, snap.url, *args))
    grown = db_growth(db_url)
    proc = start(*args, env=env)
    wait_for(engine, "SELECT count(*) FROM runs WHERE kind = 'import'", proc)
    what = kill_at_event(proc, db_url, rng_for("import"), grown, growth_targets(span), event="bytes written")
    assert _no_partial_versions(db_url) == [], what
    reconcile_and_check_no_running(engine)
    run(*args, env=env)
    assert [v[:5] for v in _versions(db_url)] == [v[:5] for v in _versions(snap.url)], what  # same sealed manifest


def test_training_killed_during_checkpoint_writes(db_url, env, engine, cli):
    assert cli("datasets", "import", "digits", "--name", "digits").exit_code == 0
    # A checkpoint every step (written on a background thread): the kill lands in or near a write.
    args = ("train", "vae", "--dataset", "digits", "--steps", "60", "--checkpoint-every", "1",
            "--set", "log_every=1", "--name", "k", *TINY_VAE)
    proc = start(*args, env=env)
    wait_for(engine, "SELECT count(*) FROM run_checkpoints", proc)
    # When the checkpoint of step k is in (or inside the write after it): a kill in or near a write.
    step = sql_count("SELECT max(step) FROM run_checkpoints")
    what = kill_at_event(proc, db_url, rng_for("train"), step, range(1, 56), event="checkpoint step")
    checks = query(db_url, """
        SELECT
          (SELECT count(*) FROM run_checkpoints WHERE encode(sha256(payload), 'hex') <> sha256
                                                   OR size_bytes <> length(payload)),
          (SELECT count(*) FROM models m JOIN runs r ON r.id = m.run_id WHERE r.status <> 'succeeded'),
          (SELECT count(*) FROM (SELECT 1 FROM metrics GROUP BY run_id, step, name HAVING count(*) > 1) dup)
    """)[0]
    assert checks == (0, 0, 0), what  # no torn checkpoint, no model of an unfinished run, no duplicate metric
    reconcile_and_check_no_running(engine)
    # The kill may land after the job committed its model (while the process exits): then there is
    # nothing to re-run. Otherwise resume from the newest checkpoint, or start afresh without one.
    done, resumable = query(db_url, """
        SELECT count(*) FILTER (WHERE status = 'succeeded'),
               count(*) FILTER (WHERE status <> 'succeeded' AND EXISTS (SELECT 1 FROM run_checkpoints c WHERE c.run_id = runs.id))
        FROM runs WHERE kind = 'train'""")[0]
    if not done:
        run(*args, *(["--resume"] if resumable else []), "--json", env=env)
    # The run finishes where a clean run finishes: 60 steps, one model, one row per (step, metric).
    with engine.connect() as conn:
        models = conn.execute(sa.text("SELECT name, version, metadata->>'steps' FROM models")).all()
        dup = conn.execute(sa.text(
            "SELECT count(*) FROM (SELECT 1 FROM metrics GROUP BY run_id, step, name HAVING count(*) > 1) d")).scalar()
        steps = conn.execute(sa.text(
            "SELECT array_agg(step ORDER BY step) FROM metrics m JOIN runs r ON r.id = m.run_id "
            "WHERE r.status = 'succeeded' AND m.name = 'loss'")).scalar()
    assert models == [("k", 1, "60")] and dup == 0, what
    assert steps == list(range(1, 61)), what


def test_sampling_into_a_dataset_killed_at_random(db_url, env, engine, cli, snapshot):
    assert cli("datasets", "import", "digits", "--name", "digits").exit_code == 0
    assert cli("train", "vae", "--dataset", "digits", "--steps", "2", "--name", "s", *TINY_VAE).exit_code == 0
    snap = snapshot()
    args = ("sample", "s", "--n", "3000", "--store", "--into", "synth", "--seed", "3")
    span = measure_growth(snap.url, lambda: in_process(cli, snap.url, *args))  # the clean run
    grown = db_growth(db_url)
    proc = start(*args, env=env)
    wait_for(engine, "SELECT count(*) FROM runs WHERE kind = 'sample'", proc)
    what = kill_at_event(proc, db_url, rng_for("sample"), grown, growth_targets(span), event="bytes written")
    assert _no_partial_versions(db_url) == [], what
    reconcile_and_check_no_running(engine)
    # Re-run whatever the kill hit: the version and the succeeded run are one transaction, and a
    # seeded sampling whose samples are all in the latest version adds no second, identical version.
    run(*args, env=env)
    assert [v[:5] for v in _versions(db_url)] == [v[:5] for v in _versions(snap.url)], what


def test_dedup_killed_at_random(db_url, env, engine, cli, snapshot, tmp_path):
    corpus = tmp_path / "dups.txt"
    corpus.write_text("".join(f"the {i % 700} sentence about topic {i % 31} and more words\n" for i in range(3000)))
    assert cli("datasets", "import", "text", corpus, "--name", "dups", "--unit", "line").exit_code == 0
    snap = snapshot()
    args = ("dedup", "dups", "--method", "minhash")
    span = measure_growth(snap.url, lambda: in_process(cli, snap.url, *args))  # the clean run
    grown = db_growth(db_url)
    proc = start(*args, env=env)
    wait_for(engine, "SELECT count(*) FROM runs WHERE kind = 'dedup'", proc)
    what = kill_at_event(proc, db_url, rng_for("dedup"), grown, growth_targets(span), event="bytes written")
    assert _no_partial_versions(db_url) == [], what
    orphans = query(db_url, "SELECT count(*) FROM dedup_decisions d JOIN runs r ON r.id = d.run_id "
                            "WHERE r.status <> 'succeeded'")[0][0]
    assert orphans == 0, what  # decisions exist only for a finished dedup
    reconcile_and_check_no_running(engine)
    if not query(db_url, "SELECT count(*) FROM runs WHERE kind = 'dedup' AND status = 'succeeded'")[0][0]:
        run(*args, env=env)  # killed before its commit: run it again
    assert [v[:5] for v in _versions(db_url)] == [v[:5] for v in _versions(snap.url)], what


def test_streaming_ask_killed_at_random(db_url, env, engine, snapshot, cli):
    from conftest import REPO_ROOT

    assert cli("ingest", REPO_ROOT / "platform" / "genloom" / "data" / "sample_docs", "--collection", "kb").exit_code == 0
    snap = snapshot()
    args = ("ask", "How does genloom rank keywords with BM25?", "-c", "kb")
    streamed = len(in_process(cli, snap.url, *args).stdout)  # the clean run's streamed answer
    proc = start(*args, env=env, stdout=subprocess.PIPE)
    # At the k-th character of the streamed answer (k = 0: before the first), or inside the write after it.
    what = kill_at_event(proc, db_url, rng_for("ask"), StreamCounter(proc), range(0, max(streamed, 1), 8),
                         event="characters streamed")
    # One call is one transaction: its session, prompt, generation and sources land together or not at all.
    counts = query(db_url, """
        SELECT (SELECT count(*) FROM prompts), (SELECT count(*) FROM generations),
               (SELECT count(*) FROM prompts p WHERE NOT EXISTS (SELECT 1 FROM generations g WHERE g.prompt_id = p.id)),
               (SELECT count(*) FROM generations g WHERE NOT EXISTS
                  (SELECT 1 FROM generation_sources s WHERE s.generation_id = g.id))
    """)[0]
    assert counts[0] == counts[1] and counts[1] in (0, 1) and counts[2:] == (0, 0), (what, counts)
    reconcile_and_check_no_running(engine)
    run(*args, "--no-stream", env=env)
    in_process(cli, snap.url, *args, "--no-stream")
    answer = "SELECT output, status FROM generations ORDER BY id DESC LIMIT 1"
    assert query(db_url, answer) == query(snap.url, answer), what
