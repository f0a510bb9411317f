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
    started = time.perf_counter()
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
    assert time.perf_counter() - started < 20 and ran == []
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
    from genloom.analytics.sql import _set_reader_password

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


def test_model_registration_and_dataset_seal_are_audited_in_their_transaction(cli, db_url):
    assert cli("datasets", "import", "digits").exit_code == 0
    actions = {(a["action"], a["object"]) for a in cli("audit", "list", "--json").json()}
    assert ("dataset.seal", "digits@1") in actions
