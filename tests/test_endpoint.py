"""Remote engines and the OpenAI-compatible API, over real HTTP.

Two `genloom serve` subprocesses on loopback ports, each with its own database:
- the *engine*: serves a tiny random Hugging Face model (`--model DIR`); genloom calls it
  as an endpoint (`models add-endpoint`), the way it would call vLLM or llama.cpp;
- the *demo* server: `--collection kb`, called with the official `openai` client.

A small in-test HTTP server plays a broken engine (malformed JSON, a cut stream, 503s).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import sqlalchemy as sa

from conftest import REPO_ROOT, own_database
from generation_support import CORPUS, counts, ingest_corpus, tiny_lm


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _serve(*args: str, database_url: str):
    """`genloom serve ARGS` in a child process; yields its base URL once /healthz answers."""
    port = _free_port()
    env = {**os.environ, "DATABASE_URL": database_url, "OMP_NUM_THREADS": "1"}
    env.pop("GENLOOM_MODEL", None)
    proc = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "cli.py"), "serve", "--port", str(port), "--log-level", "warning", *args],
        cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"genloom serve exited: {proc.stderr.read()}")
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.time() < deadline, "genloom serve did not start in 120 s"
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory):
    return tiny_lm(tmp_path_factory.mktemp("engine-lm"), tokenizer="words")


@pytest.fixture(scope="module")
def engine_server(pg_server, lm_dir):
    """(base URL, database URL) of a genloom serve that plays the LLM server (keyless on loopback,
    as local vLLM or llama.cpp servers often run; the demo server below requires a key)."""
    with own_database(pg_server) as url, _serve("--model", str(lm_dir), "--no-auth", database_url=url) as base:
        yield base, url


@pytest.fixture(scope="module")
def demo_server(pg_server):
    """A genloom serve with --collection kb (retrieval by default), for the openai client."""
    with own_database(pg_server) as url:
        ingest_corpus("kb")
        created = subprocess.run(
            [sys.executable, str(REPO_ROOT / "cli.py"), "keys", "create", "--role", "writer", "--json"],
            cwd=REPO_ROOT, env={**os.environ, "DATABASE_URL": url}, capture_output=True, text=True, timeout=120,
        )
        assert created.returncode == 0, created.stderr
        with _serve("--collection", "kb", database_url=url) as base:  # API keys required: the default
            yield base, json.loads(created.stdout)["key"]


@pytest.fixture
def kb(engine):
    ingest_corpus("kb")
    return engine


def _generation(engine, generation_id: int) -> dict:
    with engine.connect() as conn:
        return dict(conn.execute(sa.text("SELECT * FROM generations WHERE id = :i"), {"i": generation_id}).mappings().one())


def _last_generation(engine) -> dict:
    with engine.connect() as conn:
        return dict(conn.execute(sa.text("SELECT * FROM generations ORDER BY id DESC LIMIT 1")).mappings().one())


# --------------------------------------------------------------------------- genloom → an engine


def test_add_endpoint_stores_the_variable_name_never_the_key(cli, db_url, monkeypatch):
    monkeypatch.setenv("ENGINE_KEY", "sk-secret-value")
    out = cli("models", "add-endpoint", "eng", "--base-url", "http://127.0.0.1:9/v1/", "--model", "m",
              "--api-key-env", "ENGINE_KEY", "--context-window", "2048", "--json")
    assert out.exit_code == 0, out.stderr
    assert out.json()["model"] == "eng@1"
    assert out.json()["endpoint"] == {"base_url": "http://127.0.0.1:9/v1", "model": "m", "api_key_env": "ENGINE_KEY",
                                      "context_window": 2048}
    shown = cli("models", "show", "eng", "--json").json()
    assert shown["format"] == "endpoint" and shown["architecture"] == "endpoint"
    from genloom.db.engine import get_engine

    with get_engine().connect() as conn:
        dump = conn.execute(sa.text("SELECT checkpoint, config::text, metadata::text FROM models")).one()
    assert b"sk-secret" not in bytes(dump[0]) and "sk-secret" not in dump[1] + dump[2]
    for args, needle in [
        (("--base-url", "ftp://x/v1", "--model", "m"), "--base-url must be an http(s) URL"),
        (("--base-url", "http://u:p@x/v1", "--model", "m"), "must not carry credentials"),
        (("--base-url", "http://x/v1", "--model", "m", "--api-key-env", "sk-123 abc"), "--api-key-env must be"),
        (("--base-url", "http://x/v1", "--model", "m", "--context-window", "3"), "--context-window must be"),
    ]:
        bad = cli("models", "add-endpoint", "other", *args)
        assert bad.exit_code == 1 and needle in bad.stderr and bad.stderr.count("\n") == 1, bad.stderr
    assert len(cli("models", "list", "--json").json()) == 1


def test_ask_through_an_endpoint_is_one_logged_call(cli, kb, engine_server):
    base, engine_db = engine_server
    added = cli("models", "add-endpoint", "eng", "--base-url", f"{base}/v1", "--model", "default")
    assert added.exit_code == 0, added.stderr
    out = cli("ask", "When was the Eiffel Tower completed?", "-c", "kb", "--model", "eng", "-k", "2",
              "--max-new-tokens", "6", "--json")
    assert out.exit_code == 0, out.stderr
    result = out.json()
    row = _generation(kb, result["generation_id"])
    assert row["status"] == "ok" and row["model_name"] == "eng@1" and row["model_id"] is not None
    # What was sent is what was logged: the JSON of the chat messages, sources included.
    messages = json.loads(row["rendered_prompt"])
    assert messages[-1]["role"] == "user" and "[1] The Eiffel Tower" in messages[-1]["content"]
    assert row["params"]["finish_reason"] in ("stop", "length") and row["params"]["collection"] == "kb"
    # The engine logged the same call: its usage is our token count, its output our answer.
    remote = _last_generation(sa.create_engine(engine_db))
    assert remote["output"] == row["output"] == result["answer"]
    assert (row["input_tokens"], row["output_tokens"]) == (remote["input_tokens"], remote["output_tokens"])
    assert 0 < row["output_tokens"] <= 6
    # Budgeting used the engine's /tokenize, and its window came from /v1/models (max_model_len).
    from genloom.db.engine import session_scope
    from genloom.generation.resolve import load_backend

    with session_scope() as s:
        backend = load_backend(s, "eng")
    assert backend._tokenize == "vllm" and backend.context_window == 512


def test_generate_streams_from_an_endpoint(kb, engine_server):
    from genloom.db.engine import session_scope
    from genloom.generation.backend import GenParams
    from genloom.generation.call import CallRequest, ask
    from genloom.generation.endpoint import EndpointSpec, add_endpoint

    base, _ = engine_server
    with session_scope() as s:
        add_endpoint(s, "eng", EndpointSpec(base_url=f"{base}/v1", model="default"))
    pieces: list[str] = []
    with session_scope() as s:
        result = ask(s, CallRequest(question="say something", model="eng",
                                    params=GenParams(max_new_tokens=12, temperature=1.0, seed=1)),
                     on_text=pieces.append)
    assert result.status == "ok" and len(pieces) >= 2 and "".join(pieces) == result.answer
    assert json.loads(_generation(kb, result.generation_id)["rendered_prompt"]) == [
        {"role": "user", "content": "say something"}
    ]


def _ask_fails(cli, engine, model: str, needle: str, *extra: str) -> dict:
    """The CLI prints one line naming the problem; the generation row records it as an error."""
    before = counts(engine)
    out = cli("ask", "When was the Eiffel Tower completed?", "-c", "kb", "--model", model, *extra)
    assert out.exit_code == 1, out.stdout
    assert needle in out.stderr and out.stderr.count("\n") == 1, out.stderr
    after = counts(engine)
    assert after["generations"] == before["generations"] + 1
    row = _last_generation(engine)
    assert row["status"] == "error" and needle in row["error"] and row["output"] is None
    return row


def test_unreachable_endpoint_is_one_line_and_logged(cli, kb):
    port = _free_port()  # nothing listens there
    cli("models", "add-endpoint", "dead", "--base-url", f"http://127.0.0.1:{port}/v1", "--model", "m")
    started = time.perf_counter()
    _ask_fails(cli, kb, "dead", f"cannot reach endpoint dead@1 at http://127.0.0.1:{port}/v1")
    assert time.perf_counter() - started >= 3.5  # three retries with backoff 0.5 + 1 + 2 s


def test_wrong_model_id_on_the_server(cli, kb, engine_server):
    base, _ = engine_server
    cli("models", "add-endpoint", "wrong", "--base-url", f"{base}/v1", "--model", "no-such-model")
    _ask_fails(cli, kb, "wrong", "answered HTTP 404: model 'no-such-model'")


def test_missing_api_key_variable(cli, kb, engine_server, monkeypatch):
    base, _ = engine_server
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    cli("models", "add-endpoint", "keyed", "--base-url", f"{base}/v1", "--model", "default",
        "--api-key-env", "NO_SUCH_KEY_VAR", "--context-window", "4096")
    _ask_fails(cli, kb, "keyed", "needs its API key in $NO_SUCH_KEY_VAR, which is not set")


@pytest.mark.parametrize("variable", ["GENLOOM_ENCRYPTION_KEY", "GENLOOM_PII_HASH_KEY", "DATABASE_URL",
                                      "DATABASE_URL_REPLICA", "genloom_anything"])
def test_genlooms_own_variables_are_never_an_endpoint_key(cli, kb, engine_server, monkeypatch, variable):
    """Audit 2, finding 7: --api-key-env GENLOOM_ENCRYPTION_KEY was accepted, and a chat then sent
    `Authorization: Bearer <the encryption key>` to the endpoint. Refused when added and when called."""
    import base64

    base, _ = engine_server
    if variable != "DATABASE_URL":  # that one is set already: the test database's URL
        monkeypatch.setenv(variable, base64.b64encode(b"the-secret-genloom-keeps-32bytes").decode())
    secret = os.environ[variable]
    r = cli("models", "add-endpoint", "leaky", "--base-url", f"{base}/v1", "--model", "default",
            "--api-key-env", variable, "--context-window", "4096")
    assert r.exit_code == 1 and "one of genloom's own variables" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    # a row written before this check (or by SQL) is refused at call time, before any request
    assert cli("models", "add-endpoint", "leaky", "--base-url", f"{base}/v1", "--model", "default",
               "--api-key-env", "ENGINE_KEY", "--context-window", "4096").exit_code == 0
    with kb.begin() as conn:
        conn.execute(sa.text("UPDATE models SET config = jsonb_set(config, '{api_key_env}', to_jsonb(CAST(:v AS text))) "
                             "WHERE name = 'leaky'"), {"v": variable})
    row = _ask_fails(cli, kb, "leaky", "one of genloom's own variables")
    assert secret not in json.dumps(row, default=str)


def test_context_larger_than_the_endpoint_window_writes_nothing(cli, kb, engine_server):
    base, _ = engine_server
    cli("models", "add-endpoint", "eng", "--base-url", f"{base}/v1", "--model", "default")
    before = counts(kb)
    out = cli("ask", "When was the Eiffel Tower completed?", "-c", "kb", "--model", "eng", "--max-new-tokens", "500")
    assert out.exit_code == 1
    assert "context window of 512" in out.stderr and out.stderr.count("\n") == 1, out.stderr
    assert counts(kb) == before


class _BrokenEngine(BaseHTTPRequestHandler):
    """/<mode>/v1/...: 'malformed' sends a bad chunk, 'cut' drops the stream, 'flaky' answers 503 twice first."""

    calls: dict[str, int] = {}

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):
        self.send_response(404)
        self.end_headers()

    def do_POST(self):
        mode = self.path.split("/")[1]
        self.rfile.read(int(self.headers.get("content-length", 0)))
        if not self.path.endswith("/chat/completions"):
            self.send_response(404)
            self.end_headers()
            return
        _BrokenEngine.calls[mode] = _BrokenEngine.calls.get(mode, 0) + 1
        if mode == "auth" and self.headers.get("authorization") != "Bearer sk-test-key":
            body = b'{"error": {"message": "Incorrect API key provided"}}'
            self.send_response(401)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if mode == "flaky" and _BrokenEngine.calls[mode] <= 2:
            body = b'{"error": {"message": "overloaded"}}'
            self.send_response(503)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.end_headers()
        chunk = {"choices": [{"index": 0, "delta": {"content": "Paris"}, "finish_reason": None}]}
        self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        if mode == "malformed":
            self.wfile.write(b"data: {not json\n\n")
        elif mode in ("flaky", "auth"):
            done = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 11, "completion_tokens": 1}}
            self.wfile.write(f"data: {json.dumps(done)}\n\ndata: [DONE]\n\n".encode())
        self.wfile.flush()  # 'cut': the connection closes here, before any finish_reason or [DONE]


@pytest.fixture(scope="module")
def broken_engine():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _BrokenEngine)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.parametrize("mode, needle", [
    ("malformed", "sent malformed JSON in its stream"),
    ("cut", "cut the stream before it finished"),
])
def test_a_broken_stream_is_an_error_row(cli, kb, broken_engine, mode, needle):
    cli("models", "add-endpoint", mode, "--base-url", f"{broken_engine}/{mode}/v1", "--model", "m",
        "--context-window", "4096")
    _ask_fails(cli, kb, mode, f"endpoint {mode}@1 at {broken_engine}/{mode}/v1 {needle}")


def test_503_is_retried_then_answers(cli, kb, broken_engine):
    cli("models", "add-endpoint", "flaky", "--base-url", f"{broken_engine}/flaky/v1", "--model", "m",
        "--context-window", "4096")
    out = cli("ask", "What is the capital of France?", "-c", "kb", "--model", "flaky", "--json")
    assert out.exit_code == 0, out.stderr
    assert out.json()["answer"] == "Paris" and out.json()["tokens"] == {"input": 11, "output": 1}
    assert _BrokenEngine.calls["flaky"] == 3


def test_the_api_key_is_sent_from_its_variable_and_never_logged(cli, kb, broken_engine, monkeypatch):
    cli("models", "add-endpoint", "auth", "--base-url", f"{broken_engine}/auth/v1", "--model", "m",
        "--api-key-env", "ENGINE_KEY", "--context-window", "4096")
    monkeypatch.setenv("ENGINE_KEY", "sk-wrong")
    _ask_fails(cli, kb, "auth", "answered HTTP 401: Incorrect API key provided")
    monkeypatch.setenv("ENGINE_KEY", "sk-test-key")
    out = cli("ask", "What is the capital of France?", "-c", "kb", "--model", "auth", "--json")
    assert out.exit_code == 0 and out.json()["answer"] == "Paris", out.stderr
    with kb.connect() as conn:
        logged = conn.execute(sa.text("SELECT string_agg(g::text, ' ') FROM generations g")).scalar()
    assert "sk-test-key" not in logged and "sk-wrong" not in logged


def test_token_estimate_is_conservative():
    from genloom.generation.endpoint import estimate_tokens
    from genloom.embeddings import tokenizer

    # Against a real English tokenizer (MiniLM's WordPiece), the estimate is never below the count.
    tok = tokenizer()
    for _, title, text in CORPUS:
        for sample in (title, text, text.upper()):
            assert estimate_tokens(sample) >= len(tok(sample, add_special_tokens=False)["input_ids"]), sample
    assert estimate_tokens("abc") == 1 and estimate_tokens("", messages=2) == 16


# --------------------------------------------------------------------------- the official openai client


@pytest.fixture
def openai_client(demo_server):
    base, key = demo_server
    openai = pytest.importorskip("openai")  # a dev dependency (pyproject [dev])
    return openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=120)


def test_openai_client_lists_models_and_embeds(openai_client):
    import numpy as np

    from genloom.embeddings import embed

    ids = [m.id for m in openai_client.models.list()]
    assert ids[0] == "extractive"
    assert openai_client.models.retrieve("extractive").id == "extractive"
    # The client asks for base64 by default; the vectors are the collection's embedding model's.
    out = openai_client.embeddings.create(model="default", input=["Eiffel Tower", "photosynthesis"])
    assert out.model == "all-MiniLM-L6-v2" and [d.index for d in out.data] == [0, 1]
    got = np.array([d.embedding for d in out.data], dtype=np.float32)
    assert np.allclose(got, embed(["Eiffel Tower", "photosynthesis"]), atol=1e-5)
    assert out.usage.prompt_tokens > 0
    floats = openai_client.embeddings.create(model="default", input="Eiffel Tower", encoding_format="float")
    assert np.allclose(floats.data[0].embedding, got[0], atol=1e-5)


def test_openai_client_chats_with_default_retrieval(openai_client):
    question = [{"role": "user", "content": "When was the Eiffel Tower completed?"}]
    plain = openai_client.chat.completions.create(model="extractive", messages=question)
    assert "1889" in plain.choices[0].message.content and plain.choices[0].finish_reason == "stop"
    assert plain.usage.completion_tokens > 0
    chunks = list(openai_client.chat.completions.create(model="extractive", messages=question, stream=True,
                                                        stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == plain.usage.total_tokens
    completion = openai_client.completions.create(model="extractive", prompt="What does chlorophyll absorb?")
    assert "blue and red light" in completion.choices[0].text


def test_openai_client_errors_are_openai_shaped(openai_client):
    import openai

    question = [{"role": "user", "content": "When was the Eiffel Tower completed?"}]
    with pytest.raises(openai.BadRequestError) as n3:
        openai_client.chat.completions.create(model="extractive", messages=question, n=3)
    assert n3.value.body["message"].startswith("n must be 1 (got 3)") and n3.value.body["param"] == "n"
    with pytest.raises(openai.NotFoundError) as unknown:
        openai_client.chat.completions.create(model="extractive", messages=question, extra_body={"collection": "nope"})
    # Text for an HTTP caller: no CLI commands or flags.
    assert unknown.value.body["message"] == "collection 'nope' not found; existing: kb"
    # Retrieval off (null collection, or the header): the extractive backend has nothing to quote.
    for kwargs in ({"extra_body": {"collection": None}}, {"extra_headers": {"X-Genloom-Retrieval": "off"}}):
        with pytest.raises(openai.UnprocessableEntityError) as off:
            openai_client.chat.completions.create(model="extractive", messages=question, **kwargs)
        assert "extractive backend answers from retrieved sources" in off.value.body["message"]
        assert "--" not in off.value.body["message"]
    with pytest.raises(openai.BadRequestError):
        openai_client.embeddings.create(model="text-embedding-3-small", input="x")
    with pytest.raises(openai.NotFoundError) as no_model:
        openai_client.chat.completions.create(model="no-such-model", messages=question)
    assert no_model.value.body["message"] == (
        "model 'no-such-model' is neither 'extractive', a local directory, nor a registry model: "
        "no model 'no-such-model' in the registry (the registry is empty)")
