"""The reranker everywhere a search runs (batch `search --queries`, GET /v1/search, the web UI's search
page), and who may train
or switch a collection's models over HTTP (a reader key may do neither).

The reranker is a tiny cross-encoder trained for two steps from the random test encoder: its order
is arbitrary but fixed, so each check compares a path with the single-query `search --rerank`
(tested against planted qrels in test_retrieval_learning.py) and with the unreranked order, which
it differs from: a path that skips the reranker fails.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time

import httpx
import pytest
import sqlalchemy as sa
from test_retrieval_learning import QUERIES, _beir
from ui_support import login

K = 8  # every planted document: reranking reorders them, never changes the set


@pytest.fixture(scope="module")
def secured(pg_server):
    """Base URL of a uvicorn with API keys required (the app `genloom serve` runs: API and web UI)."""
    import uvicorn

    from genloom.api.auth import SecuritySettings
    from genloom.server import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(SecuritySettings(auth=True)), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def api(secured, db_url):
    with httpx.Client(base_url=secured, timeout=300) as c:
        yield c


@pytest.fixture
def planted(cli, tmp_path, db_url, tiny_model):
    """Collection `p` (the planted corpus, tiny encoder), its train pairs, and reranker rr@1; the BEIR folder."""
    beir = _beir(tmp_path / "planted")
    assert cli("ingest", beir, "-c", "p", "--format", "beir", "--model", tiny_model).exit_code == 0
    imported = cli("datasets", "import", "qrels", beir / "qrels" / "train.tsv", "-c", "p", "--negatives", "2")
    assert imported.exit_code == 0, imported.stderr
    trained = cli(
        "train", "reranker", "-d", "p-train-pairs", "--steps", "2", "--batch-size", "4", "--init", tiny_model,
        "--name", "rr",
    )  # fmt: skip
    assert trained.exit_code == 0, trained.stderr
    return beir


def key(cli, role: str) -> dict[str, str]:
    made = cli("keys", "create", "--role", role, "--json")
    assert made.exit_code == 0, made.stderr
    return {"Authorization": f"Bearer {made.json()['key']}"}


def single(cli, query: str, *extra: str) -> list[str]:
    """Document ids of `genloom search QUERY` (vector mode, all K), in order."""
    out = cli("search", query, "-c", "p", "--mode", "vector", "-k", K, *extra, "--json")
    assert out.exit_code == 0, out.stderr
    hits = out.json()
    return [h["doc_id"] for h in (hits["hits"] if isinstance(hits, dict) else hits)]


def orders(cli) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(plain, reranked by rr@1) document orders of every planted query; they differ somewhere."""
    plain = {q: single(cli, text, "--no-rerank") for q, text in QUERIES.items()}
    reranked = {q: single(cli, text, "--rerank", "rr@1") for q, text in QUERIES.items()}
    assert all(sorted(plain[q]) == sorted(reranked[q]) for q in QUERIES)
    assert plain != reranked, "the tiny reranker happens to keep every order: the checks below would prove nothing"
    return plain, reranked


def batch(cli, beir, tmp_path, *extra: str) -> dict[str, dict]:
    out = tmp_path / f"batch-{len(list(tmp_path.iterdir()))}.jsonl"
    queries = beir / "queries.jsonl"
    done = cli("search", "--queries", queries, "-c", "p", "--mode", "vector", "-k", K, "--out", out, *extra)
    assert done.exit_code == 0, done.stderr
    return {line["query_id"]: line for line in map(json.loads, out.read_text().splitlines())}


def test_batch_search_applies_an_explicit_reranker_and_the_collections_default(cli, planted, tmp_path):
    plain, reranked = orders(cli)

    explicit = batch(cli, planted, tmp_path, "--rerank", "rr@1")
    assert {q: [r["doc_id"] for r in line["results"]] for q, line in explicit.items()} == reranked
    for line in explicit.values():
        assert line["reranker"] == "rr@1" and line["rerank_ms"] > 0
        scores = [r["rerank_score"] for r in line["results"]]
        assert scores == sorted(scores, reverse=True)

    unset = batch(cli, planted, tmp_path)
    assert {q: [r["doc_id"] for r in line["results"]] for q, line in unset.items()} == plain
    assert all("reranker" not in line for line in unset.values())

    assert cli("collections", "set", "p", "--reranker", "rr@1", "--rerank-depth", K).exit_code == 0
    default = batch(cli, planted, tmp_path)
    assert {q: [r["doc_id"] for r in line["results"]] for q, line in default.items()} == reranked
    assert all(line["reranker"] == "rr@1" for line in default.values())
    skipped = batch(cli, planted, tmp_path, "--no-rerank")
    assert {q: [r["doc_id"] for r in line["results"]] for q, line in skipped.items()} == plain

    both = cli("search", "--queries", planted / "queries.jsonl", "-c", "p", "--rerank", "rr@1", "--no-rerank")
    assert both.exit_code == 1 and "not both" in both.stderr


def test_http_search_applies_an_explicit_reranker_and_the_collections_default(cli, planted, api):
    plain, reranked = orders(cli)
    reader = key(cli, "reader")

    def get(query_id: str, **params) -> dict:
        r = api.get(
            "/v1/search",
            params={"q": QUERIES[query_id], "collection": "p", "mode": "vector", "k": K, **params},
            headers=reader,
        )
        assert r.status_code == 200, r.text
        return r.json()

    for q in QUERIES:
        out = get(q)
        assert [h["doc_id"] for h in out["hits"]] == plain[q] and "reranker" not in out
        out = get(q, rerank="rr@1", rerank_depth=K)
        assert [h["doc_id"] for h in out["hits"]] == reranked[q]
        assert out["reranker"] == "rr@1" and out["rerank_depth"] == K and out["timings_ms"]["rerank"] > 0
        assert all(h["rerank_score"] is not None for h in out["hits"])

    assert cli("collections", "set", "p", "--reranker", "rr@1").exit_code == 0
    for q in QUERIES:
        out = get(q)
        assert [h["doc_id"] for h in out["hits"]] == reranked[q] and out["reranker"] == "rr@1"
        assert [h["doc_id"] for h in get(q, no_rerank="true")["hits"]] == plain[q]

    for params, status, needle in (
        ({"rerank": "/etc"}, 422, "not served here"),
        ({"rerank": "nope@1"}, 404, "nope"),
        ({"rerank": "rr@1", "no_rerank": "true"}, 422, "not both"),
        ({"rerank": "rr@1", "rerank_depth": 0}, 422, "rerank_depth"),
    ):
        r = api.get("/v1/search", params={"q": "x", "collection": "p", **params}, headers=reader)
        assert r.status_code == status and needle in r.json()["error"]["message"], (params, r.text)


def test_the_ui_search_page_shows_the_hybrid_list_reranked(cli, planted, secured):
    """The page's reranked column is `search --rerank` of the hybrid list; no reranker, no column."""
    reader = login(secured, key(cli, "reader")["Authorization"].removeprefix("Bearer "))

    def cli_ids(text: str, *extra: str) -> list[int]:
        out = cli("search", text, "-c", "p", "-k", K, *extra, "--json")
        assert out.exit_code == 0, out.stderr
        hits = out.json()
        return [h["chunk_id"] for h in (hits["hits"] if isinstance(hits, dict) else hits)]

    def columns(**params) -> dict[str, list[int]]:
        r = reader.get("/ui/collections/p/search", params={"k": K, **params})
        assert r.status_code == 200, r.text
        found = re.findall(r'<ol class="hits" data-mode="([a-z]+)">(.*?)</ol>', r.text, re.S)
        return {mode: [int(i) for i in re.findall(r'href="/ui/chunks/(\d+)"', body)] for mode, body in found}

    moved = 0
    for text in QUERIES.values():
        page = columns(q=text, rerank="rr@1")
        assert page["reranked"] == cli_ids(text, "--rerank", "rr@1")
        assert page["hybrid"] == cli_ids(text, "--no-rerank")
        moved += page["reranked"] != page["hybrid"]
        assert "reranked" not in columns(q=text)  # no reranker named and no default
    assert moved, "the tiny reranker keeps every hybrid order: the check above would prove nothing"

    assert cli("collections", "set", "p", "--reranker", "rr@1", "--rerank-depth", K).exit_code == 0
    text = QUERIES["q0"]
    assert columns(q=text)["reranked"] == cli_ids(text, "--rerank", "rr@1")
    assert "reranked" not in columns(q=text, no_rerank="true")
    missing = reader.get("/ui/collections/p/search", params={"q": text, "rerank": "nope@1"})
    assert missing.status_code == 404 and "nope" in missing.text


def test_a_reader_key_cannot_train_or_switch_models_over_http(cli, planted, api, engine, tiny_model, monkeypatch):
    monkeypatch.setenv("GENLOOM_MODEL_DIRS", str(tiny_model.parent))  # the folder `init` may name over HTTP
    reader, writer, admin = (key(cli, role) for role in ("reader", "writer", "admin"))
    train = {"dataset": "p-train-pairs", "name": "http-rr", "steps": 2, "batch_size": 4, "init": str(tiny_model)}
    switch = {"reranker": "rr@1", "rerank_depth": 5}

    def state() -> tuple:
        with engine.connect() as conn:
            return (
                conn.execute(sa.text("SELECT count(*) FROM models")).scalar(),
                conn.execute(sa.text("SELECT count(*) FROM runs WHERE kind = 'train'")).scalar(),
                tuple(conn.execute(sa.text("SELECT reranker_model_id, rerank_depth FROM collections")).one()),
            )

    before = state()
    r = api.post("/v1/train/reranker", json=train, headers=reader)
    assert r.status_code == 403 and "(needs writer)" in r.json()["error"]["message"], r.text
    assert api.post("/v1/train/embedder", json=train, headers=reader).status_code == 403
    for who in (reader, writer):
        r = api.post("/v1/collections/p/defaults", json=switch, headers=who)
        assert r.status_code == 403 and "(needs admin)" in r.json()["error"]["message"], r.text
    assert state() == before  # nothing trained, registered or switched
    with engine.connect() as conn:
        refused = conn.execute(
            sa.text("SELECT role, object FROM audit_log WHERE action = 'auth.failure' ORDER BY id")
        ).all()
    assert [tuple(row) for row in refused] == [
        ("reader", "POST /v1/train/{kind}"),
        ("reader", "POST /v1/train/{kind}"),
        ("reader", "POST /v1/collections/{name}/defaults"),
        ("writer", "POST /v1/collections/{name}/defaults"),
    ]

    trained = api.post("/v1/train/reranker", json=train, headers=writer)
    assert trained.status_code == 201, trained.text
    assert trained.json()["model"] == "http-rr@1" and trained.json()["architecture"] == "cross-encoder"
    outside = api.post("/v1/train/reranker", json={**train, "init": "/etc"}, headers=writer)
    assert outside.status_code == 422 and "not served here" in outside.json()["error"]["message"]

    switched = api.post("/v1/collections/p/defaults", json={"reranker": "http-rr@1", "rerank_depth": 5}, headers=admin)
    assert switched.status_code == 200, switched.text
    assert switched.json()["reranker"] == "http-rr@1" and switched.json()["rerank_depth"] == 5
    with engine.connect() as conn:
        audited = conn.execute(
            sa.text("SELECT role, detail FROM audit_log WHERE action = 'collection.set_defaults' AND object = 'p'")
        ).one()
    assert audited.role == "admin" and audited.detail["set"]["reranker"] == "http-rr@1"
    hits = api.get("/v1/search", params={"q": QUERIES["q0"], "collection": "p"}, headers=reader).json()
    assert hits["reranker"] == "http-rr@1"  # the reader's searches use what the admin switched to
    bad = api.post("/v1/collections/p/defaults", json={"reranker": "rr@1", "bogus": 1}, headers=admin)
    assert bad.status_code == 422
    for body, needle in (
        ({}, "give embedding_model, reranker, rerank_depth, no_reranker, reader or no_reader"),
        ({"reranker": "rr@1", "no_reranker": True}, "either reranker MODEL or no_reranker"),
        ({"eval_run": 999, "rerank_depth": 3}, "eval_run 999 is not a succeeded evaluate run"),
    ):
        r = api.post("/v1/collections/p/defaults", json=body, headers=admin)
        assert r.status_code == 422 and needle in r.json()["error"]["message"], r.text  # the body's words, not flags
    r = api.post("/v1/collections/p/defaults", json={"reader": "nope@1"}, headers=admin)  # the reader field is read
    assert r.status_code == 404 and "nope" in r.json()["error"]["message"], r.text
    r = api.post("/v1/train/embedder", json={**train, "name": "x@2"}, headers=writer)
    assert r.status_code == 422 and r.json()["error"]["message"].startswith("name takes a model NAME"), r.text
