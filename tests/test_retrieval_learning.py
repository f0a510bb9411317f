"""Retrieval that learns: qrels → pairs → a fine-tuned embedder and a reranker, gated by a paired comparison.

The corpus is planted: every query is a paraphrase sharing no word with its document, so BM25
cannot find it and the frozen (tiny, random) encoder ranks it by chance; a short training run on
the judged pairs must put each document first. Nothing here passes if training is skipped.
"""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

DOCS = {
    "d0": "Tea leaves are steeped in boiling water for three minutes.",
    "d1": "The compiler rejects programs with data races at build time.",
    "d2": "Owls hunt small rodents silently during the night.",
    "d3": "Glaciers carve deep valleys as they slowly move downhill.",
    "d4": "The violin has four strings tuned in perfect fifths.",
    "d5": "Sourdough bread rises thanks to wild yeast and bacteria.",
    "d6": "Mercury is the planet closest to the sun.",
    "d7": "Bicycles convert pedalling into forward motion through a chain.",
}
QUERIES = {
    "q0": "brewing a cuppa",
    "q1": "memory safety checker",
    "q2": "nocturnal raptor prey",
    "q3": "ice sculpting landscapes",
    "q4": "fiddle tuning",
    "q5": "naturally leavened loaf",
    "q6": "innermost world of our solar system",
    "q7": "two wheeled transport drivetrain",
}


def _beir(folder):
    folder.mkdir()
    (folder / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": d, "title": "", "text": t}) + "\n" for d, t in DOCS.items())
    )
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in QUERIES.items()))
    (folder / "qrels").mkdir()
    (folder / "qrels" / "train.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(len(DOCS)))
    )
    return folder


@pytest.fixture(scope="module")
def seeded_tiny(tmp_path_factory):
    """The tiny random encoder, seeded: the training runs below are deterministic on one thread."""
    import torch

    from genloom.embeddings import build_random_embedder

    torch.manual_seed(0)
    return build_random_embedder(tmp_path_factory.mktemp("seeded-tiny"))


TRAIN = ("--steps", "60", "--lr", "3e-3", "--batch-size", "8", "--init")


def test_train_embedder_and_reranker_then_gate_and_switch(cli, tmp_path, session, seeded_tiny):
    tiny_model = seeded_tiny
    beir = _beir(tmp_path / "planted")
    qrels, queries = beir / "qrels" / "train.tsv", beir / "queries.jsonl"
    assert cli("ingest", beir, "-c", "p", "--format", "beir", "--model", tiny_model).exit_code == 0

    imported = cli(
        "datasets",
        "import",
        "qrels",
        qrels,
        "-c",
        "p",
        "--negatives",
        "2",
        "--negatives-from",
        "hybrid",
        "--val",
        "0",
        "--json",
    )
    assert imported.exit_code == 0, imported.stderr
    assert imported.json()["dataset"] == "p-train-pairs@1" and imported.json()["items"] == 8
    record = json.loads(session.scalar(sa.text("SELECT text FROM items WHERE text LIKE '%brewing a cuppa%'")))
    assert record["positive"] == DOCS["d0"] and record["positive_id"] == "d0"
    assert len(record["negative_ids"]) == 2 and "d0" not in record["negative_ids"]

    trained = cli("train", "embedder", "-d", "p-train-pairs", *TRAIN, tiny_model, "--name", "emb", "--json")
    assert trained.exit_code == 0, trained.stderr
    assert trained.json()["model"] == "emb@1" and trained.json()["architecture"] == "sentence-encoder"
    lineage = session.execute(
        sa.text(
            "SELECT r.kind, r.status, r.input_version_id = m.input_version_id FROM models m "
            "JOIN runs r ON r.id = m.run_id WHERE m.name = 'emb'"
        )
    ).one()
    assert tuple(lineage) == ("train", "succeeded", True)
    embedded = cli("embed", "-c", "p", "--model", "emb@1", "--json")
    assert embedded.exit_code == 0, embedded.stderr and embedded.json()["embedded"] == 8

    gate = ("eval", "retrieval", "-c", "p", "--queries", queries, "--qrels", qrels, "--require-better", "--json")
    better = cli(*gate, "--compare", "mode=vector", "mode=vector,embedding=emb@1")
    assert better.exit_code == 0, better.stderr
    report = better.json()
    assert report["A"]["ndcg@10"] < 0.7 and report["B"]["mrr@10"] == 1.0  # frozen by chance; trained: all first
    assert report["delta"]["ndcg@10"]["ci_low"] > 0 and report["delta"]["ndcg@10"]["losses"] == 0
    runs = session.execute(
        sa.text("SELECT kind, status FROM runs WHERE id IN (:a, :b)"),
        {"a": report["A"]["run_id"], "b": report["B"]["run_id"]},
    ).all()
    assert sorted(runs) == [("evaluate", "succeeded")] * 2
    worse = cli(*gate, "--compare", "mode=vector,embedding=emb@1", "mode=vector")
    assert worse.exit_code == 1 and worse.stderr.startswith("error: B is not better than A: nDCG@10 -")

    rerank_args = ("--steps", "150", "--lr", "3e-3", "--batch-size", "8", "--set", "negatives=7", "--init", tiny_model)
    reranker = cli("train", "reranker", "-d", "p-train-pairs", *rerank_args, "--name", "rr", "--json")
    assert reranker.exit_code == 0, reranker.stderr
    reranked = cli(*gate, "--compare", "mode=vector", "mode=vector,rerank=rr@1,depth=8")
    assert reranked.exit_code == 0, reranked.stderr
    assert reranked.json()["B"]["mrr@10"] >= 0.75 and reranked.json()["B"]["rerank_ms_per_query"] > 0
    # the order it should: queries whose document the frozen ranking does not put first, the reranker does
    fixed = 0
    for i in range(len(QUERIES)):
        plain = cli("search", QUERIES[f"q{i}"], "-c", "p", "--mode", "vector", "--json").json()
        hits = cli("search", QUERIES[f"q{i}"], "-c", "p", "--mode", "vector", "--rerank", "rr@1", "--json").json()
        assert hits["reranker"] == "rr@1" and hits["timings_ms"]["rerank"] > 0
        assert {h["doc_id"] for h in hits["hits"]} == {h["doc_id"] for h in plain}  # reordered, not refetched
        fixed += plain[0]["doc_id"] != f"d{i}" and hits["hits"][0]["doc_id"] == f"d{i}"
    assert fixed >= 2

    eval_run = report["B"]["run_id"]
    switched = cli(
        "collections", "set", "p", "--embedding-model", "emb@1", "--reranker", "rr@1", "--eval-run", eval_run
    )
    assert switched.exit_code == 0, switched.stderr
    audit = session.execute(
        sa.text("SELECT detail FROM audit_log WHERE action = 'collection.set_defaults' AND object = 'p'")
    ).scalar_one()
    assert audit["eval_run"] == eval_run and audit["set"]["reranker"] == "rr@1"
    default = cli("search", QUERIES["q5"], "-c", "p", "--mode", "vector", "--json").json()
    assert default["reranker"] == "rr@1" and default["rerank_depth"] == 50
    asked = cli("ask", QUERIES["q5"], "-c", "p", "--model", "extractive", "--json")
    assert asked.exit_code == 0, asked.stderr
    assert asked.json()["timings_ms"]["rerank"] > 0
    logged = session.execute(sa.text("SELECT rerank_ms, params->>'reranker' FROM generations")).one()
    assert logged[0] > 0 and logged[1] == "rr@1"

    bad = cli("collections", "set", "p", "--reranker", "emb@1")
    assert bad.exit_code == 1 and "is a sentence-encoder, not a reranker" in bad.stderr


def test_compare_configuration_errors(cli):
    bad = cli(
        "eval", "retrieval", "--compare", "default", "rerank=x,depth=many", "-c", "x", "--queries", "q", "--qrels", "r"
    )
    assert bad.exit_code == 1 and "depth expects a number" in bad.stderr
    missing = cli("eval", "retrieval", "--compare", "default", "default")
    assert missing.exit_code == 1 and "--compare needs --collection, --queries and --qrels" in missing.stderr


def test_paired_bootstrap_counts_wins_and_brackets_the_mean():
    from genloom.evaluation.compare import paired_bootstrap

    result = paired_bootstrap([0.0, 0.5, 1.0, 0.2], [1.0, 0.5, 1.0, 0.9])
    assert (result["wins"], result["losses"], result["ties"]) == (2, 0, 2)
    assert result["ci_low"] <= result["mean"] == 0.425 <= result["ci_high"]


def test_feedback_pairs_take_cited_sources_of_good_answers_and_sources_of_bad_ones(cli, tmp_path, session, tiny_model):
    beir = _beir(tmp_path / "planted")
    assert cli("ingest", beir, "-c", "p", "--format", "beir", "--model", tiny_model).exit_code == 0
    good = cli("ask", "Owls hunt small rodents", "-c", "p", "--model", "extractive", "-k", "3", "--json").json()
    bad = cli("ask", "Owls hunt small rodents", "-c", "p", "--model", "extractive", "-k", "3", "--json").json()
    assert cli("feedback", good["generation_id"], "--score", "5").exit_code == 0
    assert cli("feedback", bad["generation_id"], "--score", "1").exit_code == 0

    result = cli("datasets", "import", "feedback", "--pairs", "-c", "p", "--name", "fb", "--json")
    assert result.exit_code == 0, result.stderr
    records = [json.loads(t) for t in session.scalars(sa.text("SELECT text FROM items WHERE text LIKE '{%'"))]
    assert records and all(r["query"] == "Owls hunt small rodents" for r in records)
    positives = {r["positive_id"] for r in records}
    assert positives and positives <= set(DOCS)
    for r in records:  # a bad answer's sources are negatives, never the positive itself
        assert r["positive_id"] not in r["negative_ids"]
    lineage = session.execute(
        sa.text("SELECT r.kind, r.params->>'source' FROM runs r WHERE r.output_version_id IS NOT NULL")
    ).one()
    assert tuple(lineage) == ("import", "feedback")

    none = cli("datasets", "import", "feedback", "--pairs", "--name", "fb2")
    assert none.exit_code == 1 and "--pairs needs --collection" in none.stderr


def test_a_short_training_cut_does_not_shorten_what_the_saved_embedder_reads(tmp_path, tiny_model):
    """Training at --set max_length=16 saves time; the saved model still reads the base's 256 tokens,
    or every chunk it embeds would be cut where the frozen model's is not (the 128-token confound)."""
    from genloom import embeddings
    from genloom.finetune.bi_encoder import train_bi_encoder
    from genloom.finetune.config import FinetuneConfig

    records = [{"query": "tea", "positive": "Tea is steeped in water."}, {"query": "owls", "positive": "Owls hunt."}]
    out = tmp_path / "emb"
    train_bi_encoder(tiny_model, records, out, FinetuneConfig(steps=1, batch_size=2, max_length=16))
    assert embeddings.max_tokens(str(tiny_model)) == 256
    assert embeddings.max_tokens(str(out)) == 256


def test_the_reranker_takes_genlooms_thread_setting_when_it_trains_and_when_it_scores(tmp_path, tiny_model):
    """Like the embedder and the trainers, the cross-encoder sets torch's threads from GENLOOM_THREADS
    (else the idle CPUs): torch's default of every core crawls on a shared machine."""
    import os
    import subprocess
    import sys

    from conftest import REPO_ROOT

    script = f"""
import torch
from pathlib import Path
from genloom.finetune.config import FinetuneConfig
from genloom.finetune.cross_encoder import train_cross_encoder
from genloom.retrieval.rerank import score_pairs
torch.set_num_threads(2)
train_cross_encoder(Path({str(tiny_model)!r}), [{{"query": "tea", "positive": "Tea is steeped."}}],
                    Path({str(tmp_path / "rr")!r}), FinetuneConfig(steps=1, batch_size=1, max_length=16))
trained = torch.get_num_threads()
torch.set_num_threads(2)
import genloom.devices as d; d._configured.clear()
score_pairs(Path({str(tmp_path / "rr")!r}), "tea", ["Tea is steeped."])
print(trained, torch.get_num_threads())
"""
    env = {**os.environ, "GENLOOM_THREADS": "1", "PYTHONPATH": f"{REPO_ROOT / 'platform'}"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["1", "1"]
