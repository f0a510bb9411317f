"""The security suite, on the real server: keys and roles on every route, the audit's findings
closed (each test names the finding it guards), tenants isolated by Postgres, the audit trail
append-only."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import socket
import threading
import time

import httpx
import pytest
import sqlalchemy as sa
from generation_support import ingest_corpus

TINY_VAE = ["--set", "channels=8", "--set", "latent_dim=4", "--batch-size", "32"]


# --------------------------------------------------------------------------- a server that requires keys


@pytest.fixture(scope="module")
def secured(pg_server):
    """(base URL, app) of a uvicorn with keys required; an extra unlisted route probes the default (admin)."""
    import uvicorn
    from genloom.api.app import create_app
    from genloom.api.auth import SecuritySettings

    app = create_app(SecuritySettings(auth=True))

    @app.post("/v1/unlisted-probe")
    def probe() -> dict:
        return {"ok": True}

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started
    yield f"http://127.0.0.1:{port}", app
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def api(secured, db_url):
    with httpx.Client(base_url=secured[0], timeout=120) as c:
        yield c


def make_key(cli, role: str, tenant: str = "default", *extra: str) -> str:
    r = cli("keys", "create", "--role", role, "--tenant", tenant, *extra, "--json")
    assert r.exit_code == 0, r.stderr
    return r.json()["key"]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _routes(app):
    """(method, path template) of every route the app serves, through included routers too."""
    from fastapi.routing import APIRoute

    def walk(routes, prefix: str):
        for route in routes:
            included = getattr(route, "original_router", None)  # FastAPI's lazily included router
            if included is not None:
                yield from walk(included.routes, prefix + route.include_context.prefix)
                continue
            methods = route.methods if isinstance(route, APIRoute) else getattr(route, "methods", None) or {"GET"}
            for method in sorted(set(methods) - {"HEAD"}):
                yield method, prefix + route.path

    return list(walk(app.routes, ""))


def _concrete(path: str) -> str:
    import re

    return re.sub(r"\{[^}]+\}", "1", path)


# --------------------------------------------------------------------------- finding 3: no authentication


def test_every_route_runs_the_key_check_including_routes_added_later():
    from genloom.api.app import create_app
    from genloom.api.auth import SecuritySettings, required_role, route_is_guarded

    app = create_app(SecuritySettings(auth=True))

    @app.get("/v1/added-after-create")
    def added() -> dict:
        return {}

    unguarded = [getattr(r, "path", r) for r in app.routes
                 if getattr(r, "path", None) != "/healthz" and not route_is_guarded(app, r)]
    assert unguarded == []
    assert required_role("GET", "/healthz") is None
    assert required_role("GET", "/v1/added-after-create") == "admin"  # unlisted: closed until classified
    assert required_role("POST", "/v1/chat/completions") == "writer"
    assert required_role("GET", "/v1/generations/{generation_id}") == "reader"


def test_unauthenticated_and_wrong_role_requests_are_refused_on_every_route(api, secured, cli, engine):
    from genloom.api.auth import required_role

    _, app = secured
    keys = {role: make_key(cli, role) for role in ("reader", "writer", "admin")}
    rank = {"reader": 0, "writer": 1, "admin": 2}
    routes = _routes(app)
    assert ("POST", "/v1/chat/completions") in routes and ("GET", "/openapi.json") in routes
    for method, path in routes:
        url = _concrete(path)
        needed = required_role(method, path)
        r = api.request(method, url)
        if needed is None:
            assert r.status_code == 200, (method, path, r.text)
            continue
        assert r.status_code == 401, (method, path, r.status_code)
        assert r.headers["www-authenticate"] == "Bearer"
        assert api.request(method, url, headers=bearer("glk_00000000_" + "A" * 43)).status_code == 401, (method, path)
        assert api.request(method, url, headers={"Authorization": "Basic dXNlcjpwdw=="}).status_code == 401
        for role, key in keys.items():
            status = api.request(method, url, headers=bearer(key)).status_code
            if rank[role] < rank[needed]:
                assert status == 403, (method, path, role, status)
            else:
                assert status not in (401, 403), (method, path, role, status)
    assert api.post("/v1/unlisted-probe", headers=bearer(keys["admin"])).json() == {"ok": True}
    with engine.connect() as conn:
        failures = conn.execute(sa.text("SELECT count(*) FROM audit_log WHERE action = 'auth.failure'")).scalar()
    assert failures >= 3 * (len(routes) - 1)


def test_keys_are_shown_once_stored_hashed_revocable_and_expire(api, cli, engine):
    r = cli("keys", "create", "--role", "reader", "--note", "ci")
    assert r.exit_code == 0, r.stderr
    key = r.stdout.strip()
    assert key.startswith("glk_") and "Store it now" in r.stderr
    prefix, secret = key.split("_")[1], key.split("_", 2)[2]
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT * FROM api_keys WHERE prefix = :p"), {"p": prefix}).mappings().one()
    assert secret.encode() not in bytes(row["hash"]) and secret not in json.dumps({k: str(v) for k, v in row.items()})
    assert secret not in cli("keys", "list", "--json").stdout
    assert api.get("/v1/sessions/1", headers=bearer(key)).status_code == 404  # authenticated; no such session
    assert cli("keys", "revoke", prefix).exit_code == 0
    refused = api.get("/v1/sessions/1", headers=bearer(key))
    assert refused.status_code == 401 and "revoked" in refused.json()["error"]["message"]

    short = make_key(cli, "reader", "default", "--expires", "1h")
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE api_keys SET expires_at = now() - interval '1 s' WHERE prefix = :p"),
                     {"p": short.split("_")[1]})
    assert "expired" in api.get("/v1/sessions/1", headers=bearer(short)).json()["error"]["message"]
    actions = [a["action"] for a in cli("audit", "list", "--json").json()]
    assert actions.count("key.create") == 2 and "key.revoke" in actions and "auth.failure" in actions


def test_a_key_whose_prefix_is_all_digits_is_revoked_by_its_prefix(cli, engine):
    """About 2 % of prefixes (8 hex digits) are all digits: revoking by one must not read it as a key id."""
    key = make_key(cli, "reader", "default")
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE api_keys SET prefix = '10386115' WHERE prefix = :p"), {"p": key.split("_")[1]})
    r = cli("keys", "revoke", "10386115")
    assert r.exit_code == 0, r.stderr
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT revoked_at FROM api_keys WHERE prefix = '10386115'")).scalar() is not None


def test_keys_bad_input_is_one_line(cli):
    for args, message in [
        (["keys", "create", "--role", "root"], "unknown role 'root'"),
        (["keys", "create", "--role", "reader", "--tenant", "Bad Name"], "tenant 'Bad Name' is not a valid name"),
        (["keys", "create", "--role", "reader", "--expires", "2001-01-01"], "is in the past"),
        (["keys", "create", "--role", "reader", "--expires", "soon"], "--expires must look like"),
        (["keys", "revoke", "deadbeef"], "no API key 'deadbeef'"),
        (["--tenant", "UPPER", "keys", "list"], "tenant 'UPPER' is not a valid name"),
    ]:
        r = cli(*args)
        assert r.exit_code == 1 and message in r.stderr and r.stderr.strip().count("\n") == 0, (args, r.stderr)


def test_openai_client_api_key_is_the_bearer(api, secured, cli):
    openai = pytest.importorskip("openai")
    writer = make_key(cli, "writer")
    ingest_corpus("kb")
    client = openai.OpenAI(base_url=secured[0] + "/v1", api_key=writer)
    out = client.chat.completions.create(model="extractive", messages=[{"role": "user", "content": "What is BM25?"}],
                                         extra_body={"collection": "kb"})
    assert "ranking function" in out.choices[0].message.content
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=secured[0] + "/v1", api_key="sk-wrong").chat.completions.create(
            model="extractive", messages=[{"role": "user", "content": "x"}])


def test_serve_refuses_no_auth_off_loopback_and_wildcard_without_host_list(cli):
    r = cli("serve", "--host", "0.0.0.0", "--no-auth")
    assert r.exit_code == 1 and "--no-auth is for loopback addresses only" in r.stderr
    r = cli("serve", "--host", "0.0.0.0")
    assert r.exit_code == 1 and "needs --allowed-host" in r.stderr


# --------------------------------------------------------------------------- finding 3: DNS rebinding, model oracle


def test_host_header_outside_the_allow_list_is_refused(api, cli):
    key = make_key(cli, "reader")
    assert api.get("/healthz", headers={"Host": "attacker.example"}).status_code == 400
    r = api.get("/v1/sessions/1", headers={"Host": "attacker.example:8000", **bearer(key)})
    assert r.status_code == 400 and "not allowed" in r.json()["error"]["message"]
    assert api.get("/healthz", headers={"Host": "localhost:1234"}).status_code == 200


def test_model_over_http_is_a_registered_name_or_an_allowed_folder(api, cli, tmp_path, monkeypatch):
    key = make_key(cli, "writer")
    ingest_corpus("kb")
    (tmp_path / "secret").mkdir()
    messages = []
    for model in ("/etc/passwd", "/no/such/dir", str(tmp_path / "secret"), "../../etc", "~/.ssh"):
        r = api.post("/v1/ask", json={"question": "q", "collection": "kb", "model": model}, headers=bearer(key))
        assert r.status_code == 422, (model, r.text)
        messages.append(r.json()["error"]["message"].replace(repr(model), "M"))
    assert len(set(messages)) == 1 and "not served here" in messages[0]  # the same answer whether a path exists or not
    r = api.post("/v1/ask", json={"question": "q", "collection": "kb", "model": "nope@1"}, headers=bearer(key))
    assert r.status_code == 404  # a registry name is looked up as before


# The smallest valid body of every route whose body names a model (audit 2, finding 3).
MODEL_ROUTES = {
    ("POST", "/v1/ask"): {"question": "q", "collection": "kb"},
    ("POST", "/v1/chat/completions"): {"messages": [{"role": "user", "content": "q"}], "collection": "kb"},
    ("POST", "/v1/chat/completions stream"): {"messages": [{"role": "user", "content": "q"}], "collection": "kb",
                                              "stream": True},
    ("POST", "/v1/completions"): {"prompt": "q", "collection": "kb"},
    ("POST", "/tokenize"): {"prompt": "q"},
    ("POST", "/v1/embeddings"): {"input": "q"},
}


def _routes_taking_a_model(app) -> set[tuple[str, str]]:
    from fastapi.routing import APIRoute

    found = set()
    for route in app.routes:
        for included in getattr(getattr(route, "original_router", None), "routes", [route]):
            if not isinstance(included, APIRoute) or included.path.startswith("/v1/local/"):
                continue  # /v1/local: the serve owner's own CLI, which may load any folder it can read
            for param in included.dependant.body_params:
                if "model" in getattr(param.field_info.annotation, "model_fields", {}):
                    found |= {(m, included.path) for m in included.methods}
    return found


def test_every_route_that_takes_a_model_refuses_paths_outside_the_model_folders(api, secured, cli, tmp_path):
    """Audit 2, finding 3: /tokenize, /v1/chat/completions and /v1/completions skipped the check
    /v1/ask made, so `model` probed the file system and loaded any Hugging Face folder on disk."""
    assert _routes_taking_a_model(secured[1]) == {(m, p.split()[0]) for m, p in MODEL_ROUTES}
    key = make_key(cli, "writer")
    ingest_corpus("kb")
    (tmp_path / "secret").mkdir()
    for (method, path), body in MODEL_ROUTES.items():
        messages = []
        for model in ("/etc", "/etc/passwd", "/no/such/dir", str(tmp_path / "secret"), "../../etc", "~/.ssh"):
            r = api.post(path.split()[0], json={**body, "model": model}, headers=bearer(key))
            assert 400 <= r.status_code < 500, (path, model, r.status_code, r.text)
            messages.append(r.json()["error"]["message"].replace(repr(model), "M"))
        assert len(set(messages)) == 1 and "not served here" in messages[0], (path, messages)


# --------------------------------------------------------------------------- audit 2, finding 5: no 500s

NESTED = "{" + '"$not":{' * 1200 + '"x":1' + "}" * 1201  # a where filter 1,200 levels deep
BIG = "99999999999999999999999"
# (method, path, JSON body with {V} where the malformed value goes, or None for a query string)
FUZZ_ROUTES = {
    "ask": ("POST", "/v1/ask", '{"question": "q", "collection": "kb", "where": {"x": {V}}}'),
    "chat": ("POST", "/v1/chat/completions",
             '{"messages": [{"role": "user", "content": "q"}], "collection": "kb", "where": {"x": {V}}}'),
    "chat-stream": ("POST", "/v1/chat/completions", '{"messages": [{"role": "user", "content": "q"}], '
                    '"collection": "kb", "stream": true, "where": {"x": {V}}}'),
    "completions": ("POST", "/v1/completions", '{"prompt": "q", "collection": "kb", "where": {"x": {V}}}'),
}
MALFORMED_NUMBERS = {"NaN": "NaN", "Infinity": "Infinity", "-Infinity": "-Infinity", "1e400": '{"$gt": 1e400}'}


def _one_line_4xx(r, what, text_match_ok: bool = False) -> None:
    if text_match_ok and r.status_code == 200:
        return
    assert r.status_code in (400, 413, 422), (what, r.status_code, r.text[:300])
    message = r.json()["error"]["message"]
    assert "\n" not in message and "Traceback" not in message and "jsonpath" not in message, (what, message)


@pytest.fixture
def fuzz(api, cli):
    ingest_corpus("kb")
    return api, bearer(make_key(cli, "admin"))


@pytest.mark.parametrize("route", sorted(FUZZ_ROUTES))
@pytest.mark.parametrize("value", sorted(MALFORMED_NUMBERS))
def test_non_finite_numbers_in_a_where_filter_are_a_4xx(fuzz, route, value):
    """Audit 2, finding 5: NaN/Infinity became a jsonpath syntax error and a 500, streaming included."""
    api, headers = fuzz
    method, path, body = FUZZ_ROUTES[route]
    r = api.request(method, path, content=body.replace("{V}", MALFORMED_NUMBERS[value]),
                    headers={**headers, "Content-Type": "application/json"})
    _one_line_4xx(r, (route, value))


@pytest.mark.parametrize("route", sorted(FUZZ_ROUTES))
def test_a_filter_nested_1200_deep_is_a_4xx(fuzz, route):
    """Audit 2, finding 5: a where filter 1,200 levels deep raised RecursionError (a 500)."""
    api, headers = fuzz
    method, path, body = FUZZ_ROUTES[route]
    r = api.request(method, path, content=body.replace('{"x": {V}}', NESTED),
                    headers={**headers, "Content-Type": "application/json"})
    _one_line_4xx(r, route)


@pytest.mark.parametrize("query", [
    {"where": "x=nan"}, {"where": "year>=1e999"}, {"where": "x=inf"}, {"where_json": '{"x": {"$gt": 1e400}}'},
    {"where_json": '{"x": NaN}'}, {"where_json": NESTED}, {"q": "a\x00b"}, {"collection": "k\x00b"},
    {"where": "k\x00ey=1"}, {"where": "key=v\x00"}, {"where_json": '{"x": "\\u0000"}'},
])
def test_malformed_search_queries_are_a_4xx(fuzz, query):
    """Audit 2, finding 5: the GET /v1/search parameters, each malformed value."""
    api, headers = fuzz
    r = api.get("/v1/search", params={"q": "bm25", "collection": "kb", **query}, headers=headers)
    _one_line_4xx(r, query, text_match_ok=query.get("where") in ("x=nan", "x=inf"))  # text equality: no hit


# Every text field of every body: a NUL character (Postgres text cannot hold one).
NUL_BODIES = {
    ("/v1/ask", "question"): {"question": "q", "collection": "kb"},
    ("/v1/ask", "collection"): {"question": "q", "collection": "kb"},
    ("/v1/ask", "user"): {"question": "q", "collection": "kb", "user": "u"},
    ("/v1/ask", "template"): {"question": "q", "collection": "kb", "template": "t"},
    ("/v1/chat/completions", "messages"): {"messages": [{"role": "user", "content": "q"}]},
    ("/v1/chat/completions", "user"): {"messages": [{"role": "user", "content": "q"}], "user": "u"},
    ("/v1/chat/completions stream", "user"): {"messages": [{"role": "user", "content": "q"}], "user": "u",
                                              "stream": True},
    ("/v1/completions", "prompt"): {"prompt": "q"},
    ("/v1/completions", "user"): {"prompt": "q", "user": "u"},
    ("/v1/feedback", "comment"): {"generation_id": 1, "score": 1, "comment": "c"},
    ("/v1/feedback", "label"): {"generation_id": 1, "label": "l"},
    ("/v1/feedback", "user"): {"generation_id": 1, "score": 1, "user": "u"},
    ("/v1/embeddings", "input"): {"input": "q"},
    ("/tokenize", "prompt"): {"prompt": "q"},
}


@pytest.mark.parametrize("route, field", sorted(NUL_BODIES))
def test_a_nul_character_in_any_text_field_is_a_4xx(fuzz, route, field):
    """Audit 2, finding 5: a NUL byte in question, collection, user, feedback comment or label… was a 500."""
    api, headers = fuzz
    body = json.loads(json.dumps(NUL_BODIES[(route, field)]))
    if field == "messages":
        body["messages"][0]["content"] = "a\x00b"
    else:
        body[field] = "a\x00b"
    _one_line_4xx(api.post(route.split()[0], json=body, headers=headers), (route, field))


@pytest.mark.parametrize("request_", [
    ("POST", "/v1/ask", {"question": "q", "collection": "kb", "session_id": int(BIG)}),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "q"}], "session_id": int(BIG)}),
    ("POST", "/v1/feedback", {"generation_id": int(BIG), "score": 1}),
    ("GET", f"/v1/generations/{BIG}", None),
    ("GET", f"/v1/sessions/{BIG}", None),
    ("POST", "/v1/ask", {"question": "q", "collection": "kb", "user": "u" * 3_000_000}),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "q"}], "user": "u" * 3_000_000}),
    ("POST", "/v1/feedback", {"generation_id": 1, "score": 1, "user": "u" * 3_000_000}),
], ids=lambda r: f"{r[0]} {r[1][:30]} {sorted(r[2] or {})}")
def test_ids_past_bigint_and_a_3_mb_user_are_a_4xx(fuzz, request_):
    """Audit 2, finding 5: bigint overflow in session_id and /v1/generations/{id}; a 3 MB `user`
    (an index row too big)."""
    api, headers = fuzz
    method, path, body = request_
    _one_line_4xx(api.request(method, path, json=body, headers=headers), request_[:2])


def test_the_cli_refuses_malformed_filters_in_one_clean_line(cli):
    """Audit 2, finding 5: the CLI printed the raw `database: syntax error at end of jsonpath input`."""
    ingest_corpus("kb")
    for option in (["--where", "x=nan"], ["--where", "year>=1e999"], ["--where-json", '{"x": {"$gt": 1e400}}'],
                   ["--where-json", NESTED], ["--where-json", '{"x": NaN}']):
        r = cli("search", "bm25", "-c", "kb", *option)
        assert r.exit_code in (0, 1, 2), r.stderr  # x=nan is a text match (no hit); the rest are refused
        assert "database:" not in r.stderr and "jsonpath" not in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert r.stderr.strip().count("\n") == 0, r.stderr
        if option[1] != "x=nan":
            assert r.exit_code != 0 and r.stderr.startswith("error: "), (option, r.stderr)


# --------------------------------------------------------------------------- finding 4: sizes checked before work


def test_oversized_bodies_and_questions_are_refused_before_any_work(api, cli, engine, monkeypatch):
    import genloom.retrieval.search as retrieval
    from genloom.generation import call

    key = make_key(cli, "writer")
    ingest_corpus("kb")
    ran = []
    monkeypatch.setattr(call, "ask", lambda *a, **k: ran.append("ask"))
    monkeypatch.setattr(retrieval, "search", lambda *a, **k: ran.append("search"))

    big = b'{"question": "' + b"x" * (5 * 1024 * 1024) + b'", "collection": "kb"}'
    r = api.post("/v1/ask", content=big, headers={"content-type": "application/json", **bearer(key)})
    assert r.status_code == 413 and "larger than the server's limit" in r.json()["error"]["message"]

    def chunked():
        for _ in range(80):
            yield b"x" * 65536

    r = api.post("/v1/ask", content=chunked(), headers={"content-type": "application/json", **bearer(key)})
    assert r.status_code == 413  # no Content-Length to trust: counted while reading

    r = api.post("/v1/ask", json={"question": "why? " * 4000, "collection": "kb"}, headers=bearer(key))
    assert r.status_code == 422 and "over the server's limit of 16000" in r.json()["error"]["message"]
    r = api.post("/v1/chat/completions", headers=bearer(key),
                 json={"messages": [{"role": "user", "content": "y" * 20000}], "collection": "kb"})
    assert r.status_code == 422
    r = api.get("/v1/search", params={"q": "z" * 20000, "collection": "kb"}, headers=bearer(key))
    assert r.status_code in (414, 422, 431) or r.status_code == 422
    assert ran == []  # refused before any work: no retrieval ran for any of them
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM generations")).scalar() == 0


# --------------------------------------------------------------------------- finding 2: code in a checkpoint


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("fmt", ["torch-zip", "plain-pickle"])
def test_a_planted_checkpoint_does_not_run_code_on_resume(cli, engine, tmp_path, fmt):
    import pickle

    import torch
    from genloom.training.options import TrainOptions, parse_set
    from genloom.errors import JobInterrupted
    from genloom.jobs.train import train

    assert cli("datasets", "import", "digits").exit_code == 0
    sets = parse_set([v for i, v in enumerate(TINY_VAE) if i % 2 and TINY_VAE[i - 1] == "--set"])
    opts = TrainOptions(dataset="digits", steps=6, checkpoint_every=2, batch_size=32, name="victim", hparams=dict(sets))

    def interrupt(step, metrics):
        if step == 3:
            raise KeyboardInterrupt

    torch.set_num_threads(1)
    with pytest.raises(JobInterrupted):  # tracked_run records the interruption, then says what it kept
        train("vae", opts, progress=None, callbacks=[interrupt])
    marker = tmp_path / "pwned"
    if fmt == "torch-zip":
        buf = io.BytesIO()
        torch.save({"step": 2, "modules": _Payload(marker)}, buf)
        evil = buf.getvalue()
    else:
        evil = pickle.dumps({"step": 2, "modules": _Payload(marker)})
    with engine.begin() as conn:  # an attacker with write access to one table
        conn.execute(sa.text("UPDATE run_checkpoints SET payload = :p, sha256 = :s"),
                     {"p": evil, "s": hashlib.sha256(evil).hexdigest()})
    r = cli("train", "vae", "--dataset", "digits", "--name", "victim", "--resume", *TINY_VAE)
    assert r.exit_code == 1 and "refusing to resume run" in r.stderr, r.stderr
    assert r.stderr.strip().count("\n") == 0
    assert not marker.exists()


# --------------------------------------------------------------------------- finding 5: the reader's password


def test_reader_password_is_sent_as_a_scram_verifier_only(engine):
    from genloom.db.reader import _set_reader_password

    statements = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        statements.append(f"{statement} {parameters}")

    password = "correct-horse-battery-staple-1234"
    sa.event.listen(sa.engine.Engine, "before_cursor_execute", capture)
    try:
        _set_reader_password(password)
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", capture)
    alter = [s for s in statements if "ALTER ROLE" in s]
    assert alter and all(password not in s for s in statements)
    assert "SCRAM-SHA-256$4096:" in alter[0]
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT rolpassword FROM pg_authid WHERE rolname = 'genloom_reader'")).scalar()
    assert stored.startswith("SCRAM-SHA-256$")


# --------------------------------------------------------------------------- finding 6: genloom sql limits


def test_sql_timeout_is_validated_and_the_reader_is_limited(cli, engine):
    for value in ("1e12", "inf", "nan", "-1", "0"):
        r = cli("sql", "SELECT 1", "--timeout", value)
        assert r.exit_code == 1 and "--timeout must be a number of seconds" in r.stderr, (value, r.stderr)
        assert r.stderr.strip().count("\n") == 0
    r = cli("sql", "SELECT pg_advisory_lock(1)")
    assert r.exit_code == 1 and "permission denied for function pg_advisory_lock" in r.stderr
    r = cli("sql", "SELECT pg_try_advisory_xact_lock(1, 2)")
    assert r.exit_code == 1 and "permission denied" in r.stderr
    assert cli("sql", "SHOW temp_file_limit", "--json").json()["rows"] == [{"temp_file_limit": "1GB"}]
    r = cli("--tenant", "zeta", "sql", "WITH s AS MATERIALIZED (SELECT set_config('genloom.tenant', 'default', false)) "
                                       "SELECT (SELECT count(*) FROM documents) FROM s")
    assert r.exit_code == 1 and "permission denied for function set_config" in r.stderr  # no switching tenant mid-query
    r = cli("sql", "SELECT * FROM api_keys")
    assert r.exit_code == 1 and "permission denied for table api_keys" in r.stderr
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT rolconnlimit FROM pg_roles WHERE rolname = 'genloom_reader'")).scalar() == 4
    audit = cli("audit", "list", "--action", "sql", "--json").json()
    assert audit[0]["object"] == hashlib.sha256(b"SELECT * FROM api_keys").hexdigest() and audit[0]["outcome"] == "error"


def _two_tenants_with_secrets():
    from genloom.db.tenancy import use_tenant

    for t in ("alpha", "bravo"):
        with use_tenant(t):
            ingest_corpus("shared", docs=[(f"{t}-doc", f"{t} title", f"The {t} secret is {t}-launch-code.")])


@pytest.mark.parametrize(
    "statement",
    [
        # audit 2, finding 1: PL/pgSQL's SET needs no right on set_config
        "DO $$ BEGIN SET LOCAL genloom.tenant = 'bravo'; RAISE EXCEPTION 'LEAK: %', "
        "(SELECT string_agg(text, ' | ') FROM chunks); END $$",
        "DO $$ BEGIN PERFORM set_config('genloom.tenant', 'bravo', true); "
        "RAISE EXCEPTION 'LEAK: %', (SELECT string_agg(text, ' | ') FROM chunks); END $$",
        # a function's SET clause carries a setting into a query: the reader may create none
        "CREATE FUNCTION pg_temp.leak() RETURNS text LANGUAGE sql SET genloom.tenant = 'bravo' "
        "AS $$ SELECT string_agg(text, ' | ') FROM chunks $$",
        "CREATE FUNCTION public.leak() RETURNS text LANGUAGE sql SET genloom.tenant = 'bravo' "
        "AS $$ SELECT string_agg(text, ' | ') FROM chunks $$",
        "WITH s AS MATERIALIZED (SELECT set_config('genloom.tenant', 'bravo', false)) "
        "SELECT (SELECT string_agg(text, ' | ') FROM chunks) FROM s",
        # every tenant's sessions share the reader login: its statistics describe them all
        "SELECT query FROM pg_stat_activity",
        "SELECT relname, n_live_tup FROM pg_stat_user_tables",
        "SELECT relname, heap_blks_read FROM pg_statio_user_tables",
        "SELECT pg_stat_get_live_tuples('documents'::regclass)",
        "SELECT pg_stat_get_activity(NULL)",
        "SELECT pg_total_relation_size('chunks')",
    ],
)
def test_the_sql_reader_cannot_leave_its_tenant_or_read_other_tenants_statistics(cli, engine, statement):
    """Audit 2, finding 1: `genloom --tenant alpha sql` reaches nothing of bravo's, through DO,
    functions, set_config or the statistics views (all refused by Postgres, one line)."""
    _two_tenants_with_secrets()
    r = cli("--tenant", "alpha", "sql", statement, "--json")
    assert r.exit_code == 1, r.stdout
    assert "bravo" not in r.stdout + r.stderr, r.stderr
    assert "permission denied" in r.stderr or "read-only transaction" in r.stderr, r.stderr
    assert r.stderr.strip().count("\n") == 0


def test_set_and_reset_in_genloom_sql_cannot_switch_the_tenant(cli, engine):
    """Audit 2, finding 1: SET and RESET of genloom.tenant are statements of their own, and
    genloom sql runs one statement per connection; the next query is alpha's again."""
    _two_tenants_with_secrets()
    for statement in ("SET genloom.tenant = 'bravo'", "RESET genloom.tenant", "SET SESSION genloom.tenant TO bravo"):
        assert cli("--tenant", "alpha", "sql", statement).exit_code == 0
        rows = cli("--tenant", "alpha", "sql", "SELECT string_agg(text, ' ') AS t FROM chunks", "--json").json()["rows"]
        assert "alpha-launch-code" in rows[0]["t"] and "bravo" not in rows[0]["t"]
    with engine.connect() as conn:
        # not only the read-only transaction: the role itself may create nothing that carries a SET
        # (TEMPORARY is read on the migrated template: CREATE DATABASE … TEMPLATE does not copy a
        # database's own grants, so each test's copy starts with Postgres' defaults)
        rights = conn.execute(sa.text(
            "SELECT has_language_privilege('genloom_reader', 'plpgsql', 'USAGE'), "
            "has_database_privilege('genloom_reader', 'genloom_template', 'TEMPORARY'), "
            "has_schema_privilege('genloom_reader', 'public', 'CREATE')")).one()
        assert tuple(rights) == (False, False, False)
        # what genloom itself needs still works: its own sessions, and the statistics for the owner
        assert conn.execute(sa.text("SELECT count(*) FROM pg_stat_activity")).scalar() >= 1
        assert conn.execute(sa.text("SELECT has_language_privilege('genloom_app', 'plpgsql', 'USAGE')")).scalar()


# --------------------------------------------------------------------------- audit 2, finding 2: serve reuse


@pytest.fixture
def impostor(db_url):
    """An HTTP listener on this machine that records what it is sent and forges genloom's answers;
    `knows_token` makes it answer the challenge as the real server would."""
    import hmac
    import http.server

    def proof(token, challenge):  # the protocol, written out: HMAC-SHA256(token, tag ‖ challenge)
        return hmac.new(token.encode(), b"genloom-serve-proof\0" + challenge.encode(), hashlib.sha256).hexdigest()

    seen: list[dict] = []
    state = {"knows_token": None}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
            seen.append({"path": self.path, "authorization": self.headers.get("Authorization"), "body": body})
            if self.path == "/v1/local/hello":
                challenge = json.loads(body)["challenge"]
                answer = {"proof": proof(state["knows_token"], challenge) if state["knows_token"] else "0" * 64}
            else:
                answer = {"generation_id": 1, "session_id": 1, "prompt_id": 1, "answer": "FORGED ANSWER",
                          "citations": [], "model": "x", "timings_ms": {"total": 1, "retrieval": 0, "generation": 1},
                          "tokens": {"input": 1, "output": 1}, "status": "ok", "error": None, "sources": [],
                          "vectors": [[0.0] * 384]}
            data = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", seen, state
    httpd.shutdown()


def _advertise_as(url: str, pid: int, started: float | None, token: str, mode: int = 0o600):
    from genloom.api.local import discovery_path, store_key

    path = discovery_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"url": url, "pid": pid, "started": started, "store": store_key(), "token": token}))
    path.chmod(mode)
    return path


def test_the_cli_sends_nothing_to_a_listener_that_cannot_prove_it_is_the_server(cli, impostor):
    """Audit 2, finding 2: after a `kill -9` of serve, another local user binds the port and recycles
    the pid; the CLI must not send him the token, the question or the tenant, nor print his answer."""
    import psutil

    url, seen, _ = impostor
    token = "t" * 43
    path = _advertise_as(url, os.getpid(), psutil.Process().create_time(), token)  # a live pid of ours
    try:
        r = cli("--tenant", "alpha", "ask", "my card is 4716 4444 3333 2222", "-c", "kb", "--model", "extractive")
        assert "FORGED ANSWER" not in r.stdout
        assert [s["path"] for s in seen] == ["/v1/local/hello"]  # only the challenge went out
        assert all(token not in json.dumps(s) and "4716" not in s["body"] and "alpha" not in s["body"] for s in seen)
    finally:
        path.unlink()


def test_find_server_checks_the_files_and_the_pids_owner_and_start_time(impostor, tmp_path):
    """Audit 2, finding 2: a pid that is alive is not enough; it must be this user's process that
    started when serve.json says, in a file only this user can read; and the listener must know the token."""
    import subprocess

    import psutil
    from genloom.api.local import find_server

    url, seen, state = impostor
    token = "s" * 43
    state["knows_token"] = token
    me, started = os.getpid(), psutil.Process().create_time()
    path = _advertise_as(url, me, started, token)
    try:
        assert find_server() is not None  # every check passes: the listener proves it knows the token
        _advertise_as(url, me, started - 5.0, token)  # a recycled pid: same number, another process
        assert find_server() is None
        _advertise_as(url, me, started, token, mode=0o644)  # a file others can read (or wrote)
        assert find_server() is None
        other = subprocess.Popen(["sleep", "30"], user=65534 if os.getuid() == 0 else None)
        try:
            if os.getuid() == 0:  # another user's live process under the recorded pid
                _advertise_as(url, other.pid, psutil.Process(other.pid).create_time(), token)
                assert find_server() is None
        finally:
            other.kill()
            other.wait()
        state["knows_token"] = "not-the-token"
        _advertise_as(url, me, started, token)
        assert find_server() is None
        assert all(s["authorization"] is None for s in seen)  # the token itself never travelled
    finally:
        path.unlink()


# --------------------------------------------------------------------------- finding 7: ingest and printed paths


def test_ingest_does_not_follow_links_out_of_the_folder(cli, db_url, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("the launch code is 0000", encoding="utf-8")
    root = tmp_path / "docs"
    root.mkdir()
    (root / "a.txt").write_text("an ordinary document about tea", encoding="utf-8")
    (root / "link.txt").symlink_to(outside / "secret.txt")
    (root / "linkdir").symlink_to(outside)
    r = cli("ingest", root, "-c", "kb", "--json")
    assert r.exit_code == 0, r.stderr
    out = r.json()
    assert out["written"] == 1 and out["skipped"]["by_reason"] == {"symlink outside": 2}
    assert sorted(p["path"] for p in out["problems"]) == [str(root / "link.txt"), str(root / "linkdir")]
    assert all("a symbolic link out of" in p["detail"] for p in out["problems"])
    assert "launch code" not in cli("sql", "SELECT string_agg(text, ' ') AS t FROM chunks", "--json").stdout
    r = cli("ingest", root, "-c", "kb2", "--follow-symlinks", "--json")
    assert r.json()["written"] == 2  # a.txt and the linked file (both links resolve to it)
    assert "launch code" in cli("sql", "SELECT string_agg(text, ' ') AS t FROM chunks", "--json").stdout


def test_a_file_name_cannot_forge_an_output_line(cli, db_url, tmp_path):
    root = tmp_path / "docs"
    root.mkdir()
    (root / "ok.txt").write_text("fine", encoding="utf-8")
    (root / "x\nerror: database wiped.txt").write_text("", encoding="utf-8")  # empty: reported as a problem
    r = cli("ingest", root, "-c", "kb")
    assert r.exit_code == 0, r.stderr
    assert not any(line.startswith("error:") for line in r.stderr.splitlines()), r.stderr
    assert "x\\nerror: database wiped.txt" in r.stderr


# --------------------------------------------------------------------------- tenants


def test_two_tenants_interleaving_through_api_cli_and_sql_never_see_each_other(api, cli, engine, tmp_path):
    from genloom.db.tenancy import use_tenant

    tenants = ("acme", "globex")
    writer = {t: make_key(cli, "writer", t) for t in tenants}
    owned: dict[str, dict[str, list]] = {t: {"words": [], "generations": [], "datasets": []} for t in tenants}
    rng = random.Random(14)
    for t in tenants:  # the same collection name in both: names are unique per tenant
        with use_tenant(t):
            ingest_corpus("kb", docs=[(f"{t}-seed", t, f"The {t} seed document mentions {t}word0 only.")])
        owned[t]["words"].append(f"{t}word0")

    def op_ingest_cli(t, i):
        f = tmp_path / f"{t}-{i}.txt"
        f.write_text(f"A note from {t} that mentions {t}word{i} and nothing else.", encoding="utf-8")
        assert cli("--tenant", t, "ingest", f, "-c", "kb").exit_code == 0
        owned[t]["words"].append(f"{t}word{i}")

    def op_ask_api(t, i):
        r = api.post("/v1/ask", json={"question": f"what mentions {t}word0?", "collection": "kb"},
                     headers=bearer(writer[t]))
        assert r.status_code == 200, r.text
        assert all(c["doc_id"].startswith(t) or c["doc_id"].startswith(str(tmp_path)) for c in r.json()["citations"])
        owned[t]["generations"].append(r.json()["generation_id"])

    def op_dataset_cli(t, i):
        f = tmp_path / f"{t}-words-{i}.txt"
        f.write_text(f"{t} line one of {i}\n{t} line two of {i}\n", encoding="utf-8")
        assert cli("--tenant", t, "datasets", "import", "text", f, "--name", "shared-name").exit_code == 0
        owned[t]["datasets"].append(i)

    ops = [op_ingest_cli, op_ask_api, op_dataset_cli]
    for i in range(1, 9):
        t = rng.choice(tenants)
        rng.choice(ops)(t, i)
        for me in tenants:
            other = tenants[1 - tenants.index(me)]
            # SQL (the read-only role under the same policies)
            text = cli("--tenant", me, "sql", "SELECT string_agg(text, ' ') AS t, count(DISTINCT tenant) AS n "
                                              "FROM chunks", "--json").json()["rows"][0]
            assert all(w not in (text["t"] or "") for w in owned[other]["words"]) and text["n"] == 1
            # CLI search for the other tenant's words finds nothing of theirs
            if owned[other]["words"]:
                hits = cli("--tenant", me, "search", owned[other]["words"][-1], "-c", "kb", "--json").json()
                assert all(other not in json.dumps(h) for h in hits), hits
            # API: the other tenant's generations do not exist for me; feedback on them is refused
            for gid in owned[other]["generations"]:
                assert api.get(f"/v1/generations/{gid}", headers=bearer(writer[me])).status_code == 404
                assert api.post("/v1/feedback", json={"generation_id": gid, "score": 1},
                                headers=bearer(writer[me])).status_code == 404
    for t in tenants:
        datasets = cli("--tenant", t, "datasets", "list", "--json").json()
        assert len(datasets) == len(owned[t]["datasets"])
    with engine.connect() as conn:  # the superuser sees both; every row is labelled
        by_tenant = dict(conn.execute(sa.text("SELECT tenant, count(*) FROM documents GROUP BY tenant")).all())
    assert set(by_tenant) == set(tenants)


def test_default_tenant_keeps_working_and_sees_only_its_own(cli, engine):
    from genloom.db.tenancy import use_tenant

    ingest_corpus("kb")
    with use_tenant("other"):
        ingest_corpus("kb", docs=[("hidden", "Hidden", "A hidden document about rust and bm25.")])
    hits = cli("search", "rust", "-c", "kb", "--json").json()
    assert hits and all(h["doc_id"] != "hidden" for h in hits)
    assert cli("sql", "SELECT count(*) AS n FROM documents", "--json").json()["rows"] == [{"n": 4}]


def test_every_view_runs_with_the_callers_rights(engine):
    with engine.connect() as conn:
        views = conn.execute(sa.text(
            "SELECT c.relname, coalesce(c.reloptions::text[] @> '{security_invoker=true}', false) "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind = 'v'"
        )).all()
    assert views and [name for name, invoker in views if not invoker] == []


def test_vector_retrieval_under_rls_uses_the_hnsw_index_and_fills_k(engine):
    """Three tenants of 1,500 vectors each: the policy drops two rows in three from the HNSW scan.
    With a 10-wide beam a plain scan comes back short; the iterative scan (what search sets) fills k."""
    from genloom.db.tenancy import use_tenant
    from genloom.retrieval.vector import ensure_embedding_model
    from sqlalchemy.orm import Session

    def fill(tenant: str, n: int) -> int:
        with use_tenant(tenant), Session(engine) as s, s.begin():
            model = ensure_embedding_model(s, "synthetic-16", 16)
            cid = s.execute(sa.text("INSERT INTO collections (name, embedding_model_id) VALUES ('kb', :m) RETURNING id"),
                            {"m": model.id}).scalar()
            s.execute(sa.text(
                "INSERT INTO documents (collection_id, external_id, sha256, metadata) "
                "SELECT :c, :t || g, md5(g::text) || md5(g::text), '{}' FROM generate_series(1, :n) g"),
                {"c": cid, "t": tenant, "n": n})
            s.execute(sa.text("INSERT INTO chunks (document_id, ordinal, text, token_count, metadata) "
                              "SELECT id, 0, external_id, 1, '{}' FROM documents WHERE collection_id = :c"), {"c": cid})
            s.execute(sa.text(
                "INSERT INTO embeddings (chunk_id, embedding_model_id, embedding) "
                "SELECT c.id, :m, (SELECT array_agg(random()) FROM generate_series(1, 16) WHERE c.id > 0)::vector "
                "FROM chunks c JOIN documents d ON d.id = c.document_id WHERE d.collection_id = :c"),
                {"m": model.id, "c": cid})
            return model.id

    model_ids = {fill(t, 1500) for t in ("a", "b", "c")}
    assert len(model_ids) == 1
    model_id = model_ids.pop()
    with engine.begin() as conn:
        conn.execute(sa.text("ANALYZE embeddings"))
    query = (f"SELECT e.chunk_id, e.tenant FROM embeddings e WHERE e.embedding_model_id = {model_id} "
             f"ORDER BY (e.embedding::vector(16)) <=> CAST(:q AS vector(16)) LIMIT 10")
    q = "[" + ",".join(["0.5"] * 16) + "]"

    def run(iterative: str):
        with use_tenant("b"), Session(engine) as s, s.begin():
            s.execute(sa.text("SELECT set_config('hnsw.iterative_scan', :i, true), set_config('hnsw.ef_search', '10', true)"),
                      {"i": iterative})
            plan = "\n".join(s.execute(sa.text("EXPLAIN " + query), {"q": q}).scalars())
            return plan, s.execute(sa.text(query), {"q": q}).all()

    plan, rows = run("relaxed_order")
    assert f"Index Scan using ix_embeddings_hnsw_{model_id}" in plan and "tenant = " in plan, plan
    assert len(rows) == 10 and {r.tenant for r in rows} == {"b"}
    plan_off, rows_off = run("off")
    assert f"ix_embeddings_hnsw_{model_id}" in plan_off and len(rows_off) < 10  # why search turns iterative scan on


# --------------------------------------------------------------------------- audit trail


def test_audit_rows_cannot_be_changed_even_by_the_owner(cli, engine):
    assert cli("keys", "create", "--role", "admin").exit_code == 0
    for statement in ("UPDATE audit_log SET outcome = 'ok'", "DELETE FROM audit_log", "TRUNCATE audit_log"):
        with pytest.raises(sa.exc.DBAPIError, match="audit_log is append-only"), engine.begin() as conn:
            conn.execute(sa.text(statement))  # as the superuser that owns the table
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM v_audit_log WHERE action = 'key.create'")).scalar() == 1


def test_replica_mode_does_not_switch_the_audit_guards_off(cli, engine):
    """Audit 2, finding 4: the append-only triggers were ordinary ones, so a superuser's
    `SET session_replication_role = replica` let DELETE/UPDATE/TRUNCATE through without any DDL."""
    assert cli("keys", "create", "--role", "admin").exit_code == 0
    for statement in ("UPDATE audit_log SET outcome = 'ok'", "DELETE FROM audit_log", "TRUNCATE audit_log"):
        with pytest.raises(sa.exc.DBAPIError, match="audit_log is append-only"), engine.begin() as conn:
            conn.execute(sa.text("SET LOCAL session_replication_role = replica"))
            conn.execute(sa.text(statement))
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM audit_log")).scalar() == 1


def _chain(engine) -> list:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT id, chain_seq FROM audit_log WHERE tenant = 'default' ORDER BY chain_seq")).all()


def _as_superuser_past_the_triggers(engine, statement: str) -> None:
    with engine.begin() as conn:  # DDL: what only a superuser or the owner can do
        conn.execute(sa.text("ALTER TABLE audit_log DISABLE TRIGGER USER"))
        conn.execute(sa.text(statement))
        for trigger in ("audit_log_chain", "audit_log_no_update", "audit_log_no_truncate"):
            conn.execute(sa.text(f"ALTER TABLE audit_log ENABLE ALWAYS TRIGGER {trigger}"))


@pytest.mark.parametrize("tamper", ["delete a middle entry", "change an entry", "cut the end", "recompute the chain"])
def test_audit_verify_detects_what_a_superuser_did_past_the_triggers(cli, engine, tamper):
    """Audit 2, finding 4: each entry's hash covers the previous one's, so `genloom audit verify` finds
    a deleted or changed entry; the head it saw last (kept outside the database) finds a cut end."""
    for _ in range(4):
        assert cli("keys", "create", "--role", "reader").exit_code == 0
    r = cli("audit", "verify")
    assert r.exit_code == 0 and "audit chain intact: 4 entries" in r.stderr, r.stderr
    assert cli("keys", "create", "--role", "reader").exit_code == 0  # a fifth, after the last verify
    ids = [row.id for row in _chain(engine)]
    if tamper == "delete a middle entry":
        _as_superuser_past_the_triggers(engine, f"DELETE FROM audit_log WHERE id = {ids[2]}")
        expected = "entries 3..3 are missing"
    elif tamper == "change an entry":
        _as_superuser_past_the_triggers(engine, f"UPDATE audit_log SET outcome = 'error' WHERE id = {ids[1]}")
        expected = "was changed after it was written"
    elif tamper == "cut the end":
        _as_superuser_past_the_triggers(engine, f"DELETE FROM audit_log WHERE id IN ({ids[3]}, {ids[4]})")
        expected = "entry 4 (the head at the last verify) is gone or was rewritten"
    else:  # delete entry 2, then renumber and rehash everything after it, as the trigger would have
        _as_superuser_past_the_triggers(engine, f"""
            DELETE FROM audit_log WHERE id = {ids[1]};
            DO $$ DECLARE r record; prev bytea := decode(repeat('00', 32), 'hex'); seq bigint := 0; BEGIN
                FOR r IN SELECT * FROM audit_log WHERE tenant = 'default' ORDER BY chain_seq LOOP
                    seq := seq + 1;
                    UPDATE audit_log SET chain_seq = seq, prev_hash = prev,
                        hash = audit_log_row_hash(prev, seq, r.id, r.at, r.tenant, r.key_id, r.os_user, r.role,
                                                  r.action, r.object, r.outcome, r.detail)
                    WHERE id = r.id RETURNING hash INTO prev;
                END LOOP; END $$""")
        expected = "entry 4 (the head at the last verify) is gone or was rewritten"
    r = cli("audit", "verify")
    assert r.exit_code == 1 and r.stderr.startswith("error: audit chain broken") and expected in r.stderr, r.stderr


def test_model_registration_and_dataset_seal_are_audited_in_their_transaction(cli, db_url):
    assert cli("datasets", "import", "digits").exit_code == 0
    actions = {(a["action"], a["object"]) for a in cli("audit", "list", "--json").json()}
    assert ("dataset.seal", "digits@1") in actions
