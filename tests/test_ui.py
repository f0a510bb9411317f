"""The web UI over HTTP (no browser): every page authenticated, authorised, CSRF-checked and tenant-scoped."""

from __future__ import annotations

import re

import httpx
import sqlalchemy as sa
import ui_support
from ui_support import csrf_of, login

served = ui_support.served  # the module's server: a fixture shared by the UI and MCP tests


def _ui_routes(app):
    from test_security import _routes  # the same walk through included routers

    return [(method, path) for method, path in _routes(app) if path.startswith("/ui")]


def _concrete(path: str) -> str:
    return re.sub(
        r"\{(\w+)\}",
        lambda m: {"name": "kb", "ref": "kb@1", "key_id": "999999", "view": "v_daily"}.get(m.group(1), "1"),
        path,
    )


def test_every_ui_route_needs_a_session_the_right_role_and_a_csrf_token(served):
    from genloom.ui.routes import PUBLIC, ROLES

    routes = sorted(_ui_routes(served.app), key=lambda r: r[1] == "/ui/logout")  # logging out last
    assert ("GET", "/ui/generations") in routes and ("POST", "/ui/ask") in routes
    assert [r for r in routes if r not in ROLES and r not in PUBLIC] == []  # every page classified
    rank = {"reader": 0, "writer": 1, "admin": 2}
    sessions = {role: login(served.url, served.keys[role]) for role in ("reader", "writer", "admin")}
    anonymous = httpx.Client(base_url=served.url, timeout=60)
    refusals = 0
    for method, path in routes:
        if (method, path) in PUBLIC:
            continue
        url, needed = _concrete(path), ROLES[(method, path)]
        r = anonymous.request(method, url)
        if method == "GET":
            assert r.status_code == 303 and r.headers["location"].startswith("/ui/login?next="), (method, path)
        else:
            assert r.status_code == 401, (method, path, r.status_code)
        forged = anonymous.request(method, url, cookies={"genloom_session": "gls_1_9999999999_" + "A" * 43})
        assert forged.status_code in (303, 401), (method, path)
        refusals += 1
        for role, client in sessions.items():
            if method == "POST" and rank[role] >= rank[needed]:
                assert client.request(method, url, data={"csrf": "wrong"}).status_code == 403, (method, path)
                assert client.request(method, url).status_code == 403, (method, path)
            data = {"csrf": csrf_of(client)} if method == "POST" else None
            status = client.request(method, url, data=data).status_code
            if rank[role] < rank[needed]:
                assert status == 403, (method, path, role, status)
                refusals += 1
            else:
                assert status not in (401, 403), (method, path, role, status)
    engine = sa.create_engine(served.db_url)
    with engine.connect() as conn:  # every refusal (forged cookie, wrong role) is in the audit log
        audited = conn.execute(
            sa.text("SELECT count(*) FROM audit_log WHERE action = 'auth.failure' AND object ~ '^(GET|POST) /ui'")
        ).scalar()
    engine.dispose()
    assert audited >= refusals > 0


def test_login_sets_an_httponly_strict_cookie_that_is_not_the_key_and_a_wrong_key_is_refused(served, engine=None):
    client = httpx.Client(base_url=served.url, timeout=60)
    form = client.get("/ui/login")
    token = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
    wrong = client.post("/ui/login", data={"key": "glk_00000000_" + "A" * 43, "csrf": token})
    assert wrong.status_code == 401 and "not accepted" in wrong.text
    assert "genloom_session" not in client.cookies
    token = re.search(r'name="csrf" value="([^"]+)"', wrong.text).group(1)
    assert client.post("/ui/login", data={"key": served.keys["reader"], "csrf": "x"}).status_code == 403  # login CSRF
    ok = client.post("/ui/login", data={"key": served.keys["reader"], "csrf": token})
    assert ok.status_code == 303
    cookie = ok.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/ui" in cookie
    assert served.keys["reader"] not in cookie and served.keys["reader"].split("_", 2)[2] not in cookie
    assert client.get("/ui/generations").status_code == 200


def test_revoking_the_key_ends_its_sessions(served):
    from genloom.db.engine import session_scope
    from genloom.keys import create_key, revoke_key

    with session_scope() as s:
        key = create_key(s, role="reader")
    client = login(served.url, key.key)
    assert client.get("/ui/collections").status_code == 200
    with session_scope() as s:
        revoke_key(s, key.prefix)
    assert client.get("/ui/collections").status_code == 303


def test_pages_never_show_another_tenants_rows(served):
    writer, other = login(served.url, served.keys["writer"]), login(served.url, served.keys["other"])
    assert "Hybrid search" in writer.get("/ui/collections/kb").text
    assert "Globex plans" not in writer.get("/ui/collections/kb").text
    assert "Globex plans" in other.get("/ui/collections/kb").text
    hits = writer.get("/ui/collections/kb/search", params={"q": "zebras secret plan"}).text
    assert "Globex plans" not in hits and "mentions zebras" not in hits
    r = other.post("/ui/ask", data={"question": "what is the plan?", "collection": "kb", "csrf": csrf_of(other)})
    gid = int(re.search(r'"generation_id": (\d+)', r.text).group(1))
    assert other.get(f"/ui/generations/{gid}").status_code == 200
    assert writer.get(f"/ui/generations/{gid}").status_code == 404
    assert f'href="/ui/generations/{gid}"' not in writer.get("/ui/generations").text


def test_every_page_renders_for_a_reader(served):
    reader = login(served.url, served.keys["reader"])
    for path in (
        "/ui/ask",
        "/ui/generations",
        "/ui/collections",
        "/ui/collections/kb",
        "/ui/collections/kb/search?q=bm25",
        "/ui/datasets",
        "/ui/runs",
        "/ui/models",
        "/ui/evaluations",
        "/ui/analytics",
    ):
        r = reader.get(path)
        assert r.status_code == 200, (path, r.text[:300])
    page = reader.get("/ui/ask").text
    assert 'id="ask-submit"' not in page and "reader" in page  # a reader sees no submit button


def test_a_generation_added_to_a_dataset_becomes_a_new_sealed_version(served):
    from genloom.db.engine import session_scope

    writer = login(served.url, served.keys["writer"])
    r = writer.post(
        "/ui/ask", data={"question": "How do I install genloom?", "collection": "kb", "csrf": csrf_of(writer)}
    )
    gid = int(re.search(r'"generation_id": (\d+)', r.text).group(1))
    for expected in (1, 2):
        added = writer.post(f"/ui/generations/{gid}/dataset", data={"name": "good", "csrf": csrf_of(writer)})
        assert added.status_code == 303 and added.headers["location"] == f"/ui/datasets/good@{expected}"
    page = writer.get("/ui/datasets/good@2").text
    assert "How do I install genloom?" in page and "parent good@1" in page
    with session_scope() as s:
        rows = s.execute(sa.text("SELECT version, item_count, sealed FROM dataset_versions ORDER BY version")).all()
    assert [tuple(r) for r in rows] == [(1, 1, True), (2, 1, True)]  # the same item: content-addressed


def test_no_auth_on_loopback_needs_no_login_but_still_a_csrf_token(served):
    from fastapi.testclient import TestClient

    from genloom.api.auth import SecuritySettings
    from genloom.server import create_app

    client = TestClient(create_app(SecuritySettings(auth=False)), base_url="http://127.0.0.1")
    page = client.get("/ui/collections")
    assert page.status_code == 200 and "Hybrid search" not in page.text and ">kb<" in page.text
    token = re.search(r'name="csrf-token" content="([^"]+)"', page.text).group(1)
    assert client.post("/ui/generations/1/feedback", data={"score": "3"}).status_code == 403
    assert client.post("/ui/generations/1/feedback", data={"score": "3", "csrf": token}).status_code in (303, 404)


def test_dataset_pages_show_an_image_grid_real_vs_synthetic_and_a_diff_and_two_runs_compare(served):
    import base64
    import io

    import numpy as np
    from PIL import Image

    from genloom.datasets.items import image_item, put_items
    from genloom.datasets.versions import add_members, create_version, seal_version
    from genloom.db.engine import session_scope
    from genloom.runs import finish_run, log_metrics, start_run

    rng = np.random.default_rng(0)
    with session_scope() as s:
        run_ids = [start_run(s, "train", params={"lr": lr}).id for lr in (0.1, 0.01)]
    with session_scope() as s:
        for run_id, scale in zip(run_ids, (1.0, 2.0)):
            for step in range(1, 6):
                log_metrics(s, run_id, {"loss": scale / step}, step=step)
            finish_run(s, run_id, summary={})
    with session_scope() as s:
        real = put_items(
            s, [image_item(rng.integers(0, 255, (3, 8, 8), dtype=np.uint8), label=i % 2) for i in range(4)]
        )
        fake = put_items(s, [image_item(rng.integers(0, 255, (3, 8, 8), dtype=np.uint8), origin="synthetic")])
        v1 = create_version(s, "digits", modality="image")
        add_members(s, v1, [(i, "train") for i in real])
        seal_version(s, v1)
        v2 = create_version(s, "digits", modality="image", copy_parent=True)
        add_members(s, v2, [(fake[0], "train")])
        seal_version(s, v2)
    reader = login(served.url, served.keys["reader"])
    listed = reader.get("/ui/datasets").text
    assert re.search(r'digits@2</a></td><td>image</td><td class="num">5</td>', listed)
    page = reader.get("/ui/datasets/digits@2").text
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 5
    assert Image.open(io.BytesIO(base64.b64decode(images[0]))).size == (8, 8)
    assert "real <b>4</b> · synthetic <b>1</b>" in page and "parent digits@1" in page
    diff = reader.get("/ui/datasets/diff", params={"a": "digits@1", "b": "digits@2"}).text
    assert '<th>added</th><td class="num">1</td>' in diff and '<th>removed</th><td class="num">0</td>' in diff
    compared = reader.get("/ui/runs/compare", params={"a": run_ids[0], "b": run_ids[1]}).text
    assert compared.count("<polyline") == 2 and f"run {run_ids[1]}" in compared


def test_an_admin_lists_creates_and_revokes_keys_of_their_tenant_with_the_secret_shown_once(served):
    from genloom.db.engine import session_scope
    from genloom.keys import create_key

    with session_scope() as s:
        foreign = create_key(s, role="reader", tenant="globex")
    admin = login(served.url, served.keys["admin"])
    listed = admin.get("/ui/keys").text
    assert "glk_" + served.keys["reader"].split("_")[1] + "_…" in listed  # the prefix, never the secret
    assert all(key.split("_", 2)[2] not in listed for key in served.keys.values())
    assert foreign.prefix not in listed  # another tenant's keys are not this admin's to see
    created = admin.post("/ui/keys", data={"role": "reader", "note": "from the ui", "csrf": csrf_of(admin)})
    assert created.status_code == 200 and created.headers["cache-control"] == "no-store"
    secret = re.search(r'<pre id="new-key-secret">(glk_[^<]+)</pre>', created.text).group(1)
    new_id = int(re.search(r"Key (\d+) created", created.text).group(1))
    assert secret.split("_", 2)[2] not in admin.get("/ui/keys").text  # shown once only
    assert login(served.url, secret).get("/ui/collections").status_code == 200
    bad = admin.post("/ui/keys", data={"role": "root", "csrf": csrf_of(admin)})
    assert bad.status_code == 422
    assert admin.post(f"/ui/keys/{foreign.id}/revoke", data={"csrf": csrf_of(admin)}).status_code == 404
    revoked = admin.post(f"/ui/keys/{new_id}/revoke", data={"csrf": csrf_of(admin)})
    assert revoked.status_code == 303 and revoked.headers["location"] == "/ui/keys"
    assert f"Revoke key {new_id}" not in admin.get("/ui/keys?all=true").text
    engine = sa.create_engine(served.db_url)
    with engine.connect() as conn:
        actions = conn.execute(
            sa.text("SELECT action, key_id FROM audit_log WHERE object LIKE :o ORDER BY id"), {"o": f"key {new_id} (%"}
        ).all()
        foreign_revoked = conn.execute(
            sa.text("SELECT revoked_at FROM api_keys WHERE id = :i"), {"i": foreign.id}
        ).scalar()
    engine.dispose()
    assert [a for a, _ in actions] == ["key.create", "key.revoke"] and all(k is not None for _, k in actions)
    assert foreign_revoked is None


def _pages(client: httpx.Client, path: str, row: str) -> list[list[str]]:
    import html

    pages, query = [], ""
    while len(pages) < 100:  # a pager that does not advance would loop forever
        text = client.get(path + query).text
        pages.append(re.findall(row, text))
        found = re.search(r'<a class="button" href="(\?[^"]+)">Next page', text)
        if not found:
            return pages
        query = html.unescape(found.group(1))
        assert "offset" not in query
    raise AssertionError(f"{path}: the next-page link does not advance")


def test_collections_datasets_and_audit_pages_follow_the_keyset_to_the_last_row(served, monkeypatch):
    from genloom.datasets.versions import create_version
    from genloom.db.engine import session_scope
    from genloom.retrieval.collections import ensure_collection
    from genloom.ui import routes

    with session_scope() as s:
        for name in ("paged-a", "paged-b", "paged-c"):
            ensure_collection(s, name)
        for _ in range(3):
            create_version(s, "paged", modality="text")
    monkeypatch.setattr(routes, "PAGE", 2)
    admin = login(served.url, served.keys["admin"])
    names = _pages(admin, "/ui/collections", r'<td><a href="/ui/collections/([^"/]+)">')
    assert all(len(p) <= 2 for p in names) and len(names) >= 2
    flat = [n for p in names for n in p]
    assert flat == sorted(flat) and len(flat) == len(set(flat)) and {"kb", "paged-a", "paged-c"} <= set(flat)
    refs = _pages(admin, "/ui/datasets", r'<td><a href="/ui/datasets/([^"]+)">')
    flat = [r for p in refs for r in p]
    assert [r for r in flat if r.startswith("paged@")] == ["paged@1", "paged@2", "paged@3"] and len(refs) >= 2
    ids = _pages(admin, "/ui/audit", r'<tr><td class="num">(\d+)</td>')
    flat = [int(i) for p in ids for i in p]
    assert len(ids) > 3 and flat == sorted(flat, reverse=True) and len(flat) == len(set(flat))


def test_evaluations_chart_each_metric_over_runs_and_two_runs_compare_per_metric(served):
    from genloom.db.engine import session_scope
    from genloom.runs import finish_run, log_metrics, start_run

    ids = []
    with session_scope() as s:
        for ndcg in (0.5, 0.6, 0.7):
            run = start_run(s, "evaluate", name="retrieval:kb:hybrid", params={"collection": "kb"})
            log_metrics(s, run.id, {"ndcg@10": ndcg, "recall@10": ndcg + 0.1})
            ids.append(run.id)
        for faithful in (0.8, 0.9):
            run = start_run(s, "evaluate", params={"evaluation": "rag", "collection": "kb", "model": "tiny"})
            log_metrics(s, run.id, {"faithfulness": faithful})
            ids.append(run.id)
    with session_scope() as s:
        for run_id in ids:
            finish_run(s, run_id, summary={})
    reader = login(served.url, served.keys["reader"])
    page = reader.get("/ui/evaluations").text
    charts = {
        m.group(1): m.group(0)
        for m in re.finditer(r'<svg class="chart" role="img" aria-label="([^"]+)".*?</svg>', page, re.S)
    }
    assert {"ndcg@10", "recall@10", "faithfulness"} <= set(charts)
    ndcg = re.findall(r'<polyline[^>]*points="([^"]+)"', charts["ndcg@10"])
    assert len(ndcg) == 1 and len(ndcg[0].split()) == 3 and "retrieval:kb:hybrid" in charts["ndcg@10"]
    ys = [float(p.split(",")[1]) for p in ndcg[0].split()]
    assert ys[0] > ys[1] > ys[2]  # rising nDCG drawn upwards (SVG y grows down), oldest run first
    assert "rag:kb:tiny" in charts["faithfulness"] and "retrieval" not in charts["faithfulness"]
    assert f'<option value="{ids[0]}"' in page and 'action="/ui/runs/compare"' in page
    compared = reader.get("/ui/runs/compare", params={"a": ids[0], "b": ids[2]}).text
    assert re.search(
        r"<th>ndcg@10</th><td class=\"num\">0\.5</td><td class=\"num\">0\.7</td><td class=\"num\">\+0\.2</td>", compared
    )


def test_analytics_shows_every_documented_view_as_a_table_with_latency_and_score_charts(served):
    from genloom.analytics.views import ORDER
    from genloom.ui.routes import ANALYTICS_VIEWS

    assert list(ANALYTICS_VIEWS) == ORDER  # a new view needs a paging decision here
    writer = login(served.url, served.keys["writer"])
    r = writer.post("/ui/ask", data={"question": "How is search fused?", "collection": "kb", "csrf": csrf_of(writer)})
    gid = int(re.search(r'"generation_id": (\d+)', r.text).group(1))
    writer.post(f"/ui/generations/{gid}/feedback", data={"score": "4", "csrf": csrf_of(writer)})
    page = writer.get("/ui/analytics").text
    assert all(f'href="/ui/analytics/views/{view}"' in page for view in ORDER)
    latency = re.search(r'aria-label="total latency per model".*?</svg>', page, re.S).group(0)
    assert latency.count("<rect") >= 2 and " ms</title>" in latency  # p50 and p95 bars of at least one model
    assert "<rect" in re.search(r'aria-label="mean feedback score \(1–5\) per model".*?</svg>', page, re.S).group(0)
    for view in ORDER:
        shown = writer.get(f"/ui/analytics/views/{view}")
        assert shown.status_code == 200 and f"<code>{view}</code></h1>" in shown.text, (view, shown.text[:300])
    explained = writer.get("/ui/analytics/views/v_feedback_explained").text
    assert "How is search fused?" in explained and '<th scope="col">feedback_id</th>' in explained
    assert writer.get("/ui/analytics/views/pg_authid").status_code == 404


def test_refusals_and_bad_input_on_ui_pages_are_small_html_pages_with_the_status_kept(served):
    html = {"accept": "text/html,application/xhtml+xml"}
    anonymous = httpx.Client(base_url=served.url, timeout=60)
    reader, admin = login(served.url, served.keys["reader"]), login(served.url, served.keys["admin"])
    cases = [
        (anonymous.post("/ui/keys", headers=html), 401, "Please log in"),
        (reader.get("/ui/keys", headers=html), 403, "may not use GET /ui/keys (needs admin)"),
        (admin.post("/ui/keys", data={"role": "reader"}, headers=html), 403, "missing or wrong CSRF token"),
        (reader.get("/ui/generations/999999", headers=html), 404, "Not found"),
        (reader.get("/ui/no-such-page", headers=html), 404, "Not found"),
        (reader.get("/ui/generations?min_score=high", headers=html), 422, "min_score must be a number"),
        (admin.post("/ui/keys", data={"role": "root", "csrf": csrf_of(admin)}, headers=html), 422, "root"),
    ]
    for response, status, words in cases:
        assert response.status_code == status, (response.request.url, response.status_code)
        assert response.headers["content-type"].startswith("text/html"), response.request.url
        assert words in response.text and 'id="error-message"' in response.text and '"error"' not in response.text
    assert 'href="/ui/login?next=' in cases[0][0].text
    assert anonymous.post("/ui/keys").json()["error"]["code"] == 401  # no text/html: the API's JSON, as before
    assert reader.get("/ui/keys").json()["error"]["code"] == 403
    api = anonymous.get("/v1/models", headers=html)  # the API never answers in HTML
    assert api.status_code == 401 and api.headers["content-type"].startswith("application/json")
