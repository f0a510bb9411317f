"""The HTTP API in a real uvicorn on 127.0.0.1, called with httpx the way the OpenAI client calls it."""

from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import sqlalchemy as sa

from generation_support import counts, ingest_corpus, tiny_lm


@pytest.fixture(scope="module")
def base_url(pg_server):
    """One server for the module: each request reads DATABASE_URL, which every test points at its own database."""
    import uvicorn

    from genloom.api.app import create_app
    from genloom.api.auth import SecuritySettings

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(SecuritySettings(auth=False)), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def client(base_url, db_url):
    with httpx.Client(base_url=base_url, timeout=120) as c:
        yield c


@pytest.fixture
def kb(engine):
    ingest_corpus("kb")
    return engine


def _error_body(response, status, *needles):
    assert response.status_code == status, response.text
    body = response.json()
    message = body["error"]["message"]
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message
    return body


def test_healthz_and_openapi(client):
    assert client.get("/healthz").json()["status"] == "ok"
    spec = client.get("/openapi.json").json()
    assert {"/v1/ask", "/v1/chat/completions", "/v1/feedback", "/v1/search", "/v1/generations/{generation_id}"} <= set(spec["paths"])


def test_ask_then_feedback_then_read_back(client, kb):
    r = client.post("/v1/ask", json={"question": "When was the Eiffel Tower completed?", "collection": "kb", "k": 3})
    assert r.status_code == 200, r.text
    out = r.json()
    assert list(out) == ["generation_id", "session_id", "prompt_id", "answer", "citations", "model", "timings_ms", "tokens"]
    assert "1889" in out["answer"] and out["citations"][0]["doc_id"] == "eiffel"
    fb = client.post("/v1/feedback", json={"generation_id": out["generation_id"], "thumbs": 1, "label": "correct"})
    assert fb.status_code == 201, fb.text
    detail = client.get(f"/v1/generations/{out['generation_id']}").json()
    assert detail["answer"] == out["answer"] and len(detail["sources"]) == 3
    assert [(f["thumbs"], f["label"]) for f in detail["feedback"]] == [(1, "correct")]
    hits = client.get("/v1/search", params={"q": "chlorophyll light", "collection": "kb", "k": 2}).json()["hits"]
    assert hits[0]["doc_id"] == "photosynthesis" and len(hits) == 2


def test_openai_chat_completion_with_retrieval(client, kb):
    body = {
        "model": "extractive",
        "messages": [{"role": "user", "content": "What does chlorophyll absorb?"}],
        "collection": "kb",
        "k": 2,
    }
    r = client.post("/v1/chat/completions", json=body, headers={"Authorization": "Bearer sk-ignored"})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["object"] == "chat.completion" and out["id"] == f"chatcmpl-{out['generation_id']}"
    choice = out["choices"][0]
    assert choice["message"]["role"] == "assistant" and "blue and red light" in choice["message"]["content"]
    assert choice["finish_reason"] == "stop"
    assert out["usage"]["total_tokens"] == out["usage"]["prompt_tokens"] + out["usage"]["completion_tokens"] > 0
    assert out["citations"][0]["doc_id"] == "photosynthesis"
    assert counts(kb)["generation_sources"] == 2


def _sse_events(response) -> list:
    events = []
    for line in response.iter_lines():
        if not line:
            continue
        assert line.startswith("data: "), line
        data = line[len("data: "):]
        events.append(data if data == "[DONE]" else json.loads(data))
    return events


def test_openai_chat_completion_streams_sse(client, kb):
    body = {"model": "extractive", "messages": [{"role": "user", "content": "What is BM25?"}], "collection": "kb",
            "stream": True, "stream_options": {"include_usage": True}}
    with client.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = _sse_events(r)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    gen_id = chunks[0]["generation_id"]
    assert all(c["id"] == f"chatcmpl-{gen_id}" for c in chunks)
    *answer, finishing, usage = chunks
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in answer)
    assert len([c for c in answer if c["choices"][0]["delta"].get("content")]) >= 3  # streamed in pieces
    assert finishing["choices"][0]["finish_reason"] == "stop" and "usage" not in finishing
    assert finishing["citations"][0]["doc_id"] == "bm25"
    # stream_options.include_usage: OpenAI's extra last chunk, no choices, the usage.
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] > 0
    assert usage["usage"]["total_tokens"] == usage["usage"]["prompt_tokens"] + usage["usage"]["completion_tokens"]
    # Committed before [DONE]: feedback can follow at once.
    assert client.post("/v1/feedback", json={"generation_id": gen_id, "score": 4}).status_code == 201
    assert client.get(f"/v1/generations/{gen_id}").json()["answer"] == text


def test_openai_chat_with_a_local_model_keeps_the_transcript(client, engine, tmp_path_factory, monkeypatch):
    lm = tiny_lm(tmp_path_factory.mktemp("lm"))
    monkeypatch.setenv("GENLOOM_MODEL_DIRS", str(lm.parent))  # as `serve --model-dir` does
    body = {
        "model": str(lm),
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "first answer"},
            {"role": "user", "content": [{"type": "text", "text": "second question"}]},
        ],
        "max_tokens": 5,
        "temperature": 0.8,
        "seed": 3,
    }
    out = client.post("/v1/chat/completions", json=body).json()
    assert out["usage"]["completion_tokens"] <= 5 and out["model"] == str(lm)
    detail = client.get(f"/v1/generations/{out['generation_id']}").json()
    assert detail["rendered_prompt"] == (
        "<|system|>\nBe brief.</s>\n<|user|>\nfirst question</s>\n<|assistant|>\nfirst answer</s>\n"
        "<|user|>\nsecond question</s>\n<|assistant|>\n"
    )
    assert detail["params"]["temperature"] == 0.8 and detail["params"]["seed"] == 3
    assert detail["sources"] == [] and detail["prompt"] == "second question"


def test_concurrent_requests_are_each_logged(client, kb):
    questions = [f"What is BM25? ({i})" for i in range(8)]

    def ask(q):
        return client.post("/v1/ask", json={"question": q, "collection": "kb"}).json()

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(ask, questions))
    assert all("generation_id" in r for r in results), [r for r in results if "generation_id" not in r]
    assert len({r["generation_id"] for r in results}) == 8 and len({r["session_id"] for r in results}) == 8
    assert counts(kb)["generations"] == 8
    with kb.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM generations WHERE status = 'ok'")).scalar() == 8


def test_invalid_bodies_are_422_and_write_nothing(client, kb):
    before = counts(kb)
    _error_body(client.post("/v1/chat/completions", json={"model": "x"}), 422, "messages: Field required")
    _error_body(client.post("/v1/chat/completions", json={"messages": [{"role": "assistant", "content": "hi"}]}),
                422, "last message must have role 'user'")
    _error_body(client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "n": 3}),
                400, "n must be 1 (got 3)")
    _error_body(client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]}),
                422, "extractive backend answers from retrieved sources")
    _error_body(client.post("/v1/ask", json={"question": "", "collection": "kb"}), 422, "question")
    _error_body(client.post("/v1/ask", json={"question": "  ", "collection": "kb"}), 422, "empty question")
    _error_body(client.post("/v1/ask", json={"question": "q", "collection": "kb", "temperature": 9}), 422, "temperature")
    _error_body(client.post("/v1/ask", json={"question": "q", "collection": "kb", "bogus": 1}), 422, "bogus")
    _error_body(client.post("/v1/feedback", json={"generation_id": 1, "score": 9}), 422, "score")
    _error_body(client.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}), 422)
    assert counts(kb) == before


def test_unknown_ids_are_404(client, kb):
    before = counts(kb)
    _error_body(client.get("/v1/generations/999"), 404, "no generation 999")
    _error_body(client.post("/v1/feedback", json={"generation_id": 999, "up": True, "score": 3}), 422)
    _error_body(client.post("/v1/feedback", json={"generation_id": 999, "score": 3}), 404, "no generation 999")
    _error_body(client.post("/v1/ask", json={"question": "q", "collection": "nope"}), 404, "collection 'nope' not found")
    _error_body(client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "q"}], "collection": "kb",
                                                          "session_id": 999, "stream": True}), 404, "no session 999")
    _error_body(client.post("/v1/ask", json={"question": "q", "collection": "kb", "model": "nope@2"}), 404, "nope@2")
    _error_body(client.get("/v1/search", params={"q": "x", "collection": "nope"}), 404)
    assert counts(kb) == before


def test_a_failed_generation_is_500_and_logged(client, kb, monkeypatch):
    from genloom.generation.extractive import ExtractiveBackend

    def boom(self, *a, **kw):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(ExtractiveBackend, "generate", boom)
    body = _error_body(client.post("/v1/ask", json={"question": "What is BM25?", "collection": "kb"}), 500, "out of memory")
    gen = client.get(f"/v1/generations/{body['error']['generation_id']}").json()
    assert gen["status"] == "error" and "RuntimeError: out of memory" in gen["error"]


def test_an_unreachable_endpoint_is_a_502_and_logged(client, kb):
    from genloom.db.engine import session_scope
    from genloom.generation.endpoint import EndpointSpec, add_endpoint

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once the socket closes
    with session_scope() as s:
        add_endpoint(s, "dead", EndpointSpec(base_url=f"http://127.0.0.1:{port}/v1", model="m", context_window=4096))
    r = client.post("/v1/chat/completions", json={"model": "dead", "collection": "kb",
                                                  "messages": [{"role": "user", "content": "What is BM25?"}]})
    body = _error_body(r, 502, f"cannot reach endpoint dead@1 at http://127.0.0.1:{port}/v1")
    assert body["error"]["type"] == "server_error" and body["error"]["param"] is None
    with kb.connect() as conn:
        row = conn.execute(sa.text("SELECT id, status, error FROM generations")).mappings().one()
    assert row["id"] == body["error"]["generation_id"] and row["status"] == "error"
    assert "cannot reach endpoint dead@1" in row["error"]
