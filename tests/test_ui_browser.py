"""The web UI in a real browser: Playwright driving Debian's /usr/bin/chromium (no browser download).

Also writes the README's screenshots to docs/img/ui/ when GENLOOM_UI_SCREENSHOTS=1.
"""

from __future__ import annotations

import os
import re

import pytest
import sqlalchemy as sa
import ui_support
from conftest import REPO_ROOT, skip_or_fail

served = ui_support.served  # the module's server: a fixture shared by the UI and MCP tests

SHOTS = REPO_ROOT / "docs" / "img" / "ui"


@pytest.fixture(scope="module")
def chromium(browser):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("the playwright package is not installed (pip install -e .[dev])")
    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=browser, headless=True, args=["--no-sandbox"])
        yield instance
        instance.close()


def _login(chromium, served, key: str):
    context = chromium.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    page.goto(f"{served.url}/ui/login")
    page.fill("#key", key)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/ui/ask$"))
    return page


def _shot(page, name: str) -> None:
    if os.environ.get("GENLOOM_UI_SCREENSHOTS") == "1":
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=False)


def test_wrong_key_cannot_log_in(chromium, served):
    page = chromium.new_page()
    page.goto(f"{served.url}/ui/login")
    _shot(page, "login")
    page.fill("#key", "glk_00000000_" + "A" * 43)
    page.click("button[type=submit]")
    assert page.locator("[role=alert]").inner_text() == "That key was not accepted."
    assert page.goto(f"{served.url}/ui/generations").url.startswith(f"{served.url}/ui/login")


def test_ask_streams_cites_and_rates_into_the_feedback_table(chromium, served):
    page = _login(chromium, served, served.keys["writer"])
    page.fill("#question", "How does hybrid search combine BM25 and vectors?")
    page.click("#ask-submit")
    page.wait_for_function("document.querySelector('#answer').textContent.length > 0")  # text arrives first
    page.wait_for_selector("#answer a.cite")  # then the citations, linked
    _shot(page, "ask")
    page.click("#answer a.cite >> nth=0")
    page.wait_for_selector("#chunk-location")
    assert "Hybrid search" in page.inner_text("#chunk")
    gid = int(re.search(r"generation #(\d+)", page.inner_text("#answer-meta")).group(1))
    page.check("input[name=thumbs][value=up]")
    page.select_option("select[name=score]", "5")
    page.fill("#rate-form input[name=comment]", "clear and cited")
    page.click("#rate-form button[type=submit]")
    page.wait_for_selector("#rate-result .ok")
    engine = sa.create_engine(served.db_url)
    with engine.connect() as conn:
        row = conn.execute(
            sa.text("SELECT thumbs, score, comment FROM feedback WHERE generation_id = :g"), {"g": gid}
        ).one()
    engine.dispose()
    assert tuple(row) == (1, 5, "clear and cited")
    page.goto(f"{served.url}/ui/generations/{gid}")
    _shot(page, "generation")
    assert "clear and cited" in page.inner_text("#feedback + table")


def test_upload_two_files_then_search_them_and_filter_generations(chromium, served, tmp_path):
    page = _login(chromium, served, served.keys["writer"])
    (tmp_path / "owls.md").write_text("# Owls\n\nBarn owls hunt voles at night over open fields.\n")
    (tmp_path / "kites.txt").write_text("Red kites soar over hills looking for carrion.\n")
    page.goto(f"{served.url}/ui/collections/kb")
    page.set_input_files("#upload-files", [str(tmp_path / "owls.md"), str(tmp_path / "kites.txt")])
    page.click("form[enctype] button[type=submit]")
    summary = page.inner_text("#ingest-summary")
    assert summary.startswith("kb: 2 written") and "failed 0" in summary
    _shot(page, "upload")
    page.goto(f"{served.url}/ui/collections/kb/search?q=barn+owls+voles")
    assert page.inner_text("section[aria-label='hybrid results'] li >> nth=0").startswith("Owls")
    assert page.inner_text("section[aria-label='bm25 results'] li >> nth=0").startswith("Owls")
    _shot(page, "search")
    page.goto(f"{served.url}/ui/collections")
    _shot(page, "collections")
    page.goto(f"{served.url}/ui/generations")
    page.select_option("select[name=has_feedback]", "yes")
    page.click("form.filters button[type=submit]")
    assert "has_feedback=yes" in page.url
    _shot(page, "generations")
    for row in page.locator("#generations tbody tr").all():
        assert "–" not in row.locator("td").nth(9).inner_text()  # every row shown has feedback


def test_a_runs_curve_opens(chromium, served):
    from genloom.db.engine import session_scope
    from genloom.runs import finish_run, log_metrics, start_run

    with session_scope() as s:
        run = start_run(s, "train", params={"lr": 0.001, "architecture": "vae"})
        run_id = run.id
    with session_scope() as s:
        for step in range(1, 21):
            log_metrics(s, run_id, {"loss": 2.0 / step, "val_loss": 2.2 / step + 0.05}, step=step)
    with session_scope() as s:
        finish_run(s, run_id, status="succeeded", summary={"steps": 20})
    page = _login(chromium, served, served.keys["reader"])
    page.goto(f"{served.url}/ui/runs")
    _shot(page, "runs")
    page.click(f"a[href='/ui/runs/{run_id}']")
    assert page.locator("#curve-loss svg polyline").count() == 1
    _shot(page, "run")
    import numpy as np

    from genloom.datasets.items import image_item, put_items
    from genloom.datasets.versions import add_members, create_version, seal_version

    yy, xx = np.mgrid[0:16, 0:16]
    with session_scope() as s:  # a small image dataset, so the grid has something to show
        ids = put_items(
            s,
            [
                image_item(
                    ((np.sin(xx / (2 + i % 4)) + np.cos(yy / (2 + i // 4))) * 60 + 128).astype(np.uint8), label=i % 3
                )
                for i in range(16)
            ],
        )
        version = create_version(s, "patterns", modality="image")
        add_members(s, version, [(i, "train") for i in ids])
        seal_version(s, version)
    for path, name in (
        ("/ui/analytics", "analytics"),
        ("/ui/datasets", "datasets"),
        ("/ui/datasets/patterns@1", "dataset"),
        ("/ui/models", "models"),
    ):
        page.goto(served.url + path)
        _shot(page, name)


def test_a_reader_sees_no_ask_submit_and_tenants_never_mix(chromium, served):
    reader = _login(chromium, served, served.keys["reader"])
    assert reader.locator("#ask-submit").count() == 0 and reader.locator("#reader-note").is_visible()
    other = _login(chromium, served, served.keys["other"])
    other.goto(f"{served.url}/ui/collections/kb")
    assert "Globex plans" in other.content() and "Hybrid search" not in other.content()
    reader.goto(f"{served.url}/ui/collections/kb")
    assert "Globex plans" not in reader.content()


def test_a_post_without_the_csrf_token_is_refused(chromium, served):
    page = _login(chromium, served, served.keys["writer"])
    status = page.evaluate(
        """async () => (await fetch('/ui/generations/1/feedback', {method: 'POST',
            body: new URLSearchParams({score: '1'})})).status"""
    )
    assert status == 403


def test_keyboard_alone_reaches_every_control_of_the_ask_page(chromium, served):
    page = _login(chromium, served, served.keys["writer"])
    controls = page.evaluate(
        """() => [...document.querySelectorAll('a[href], button, input:not([type=hidden]), select, textarea')]
              .filter(e => e.offsetParent !== null).length"""
    )
    reached = set()
    for _ in range(controls + 10):
        page.keyboard.press("Tab")
        reached.add(page.evaluate("() => { const e = document.activeElement; return e.outerHTML.slice(0, 120); }"))
    assert len(reached) >= controls, (len(reached), controls)
    page.focus("#question")
    page.keyboard.type("What does feedback join?")
    page.keyboard.press("Tab")  # to the submit button
    page.keyboard.press("Enter")
    page.wait_for_selector("#answer a.cite")


def test_an_admin_creates_and_revokes_a_key_and_a_refusal_is_a_page(chromium, served):
    from genloom.db.engine import session_scope
    from genloom.runs import finish_run, log_metrics, start_run

    ids = []
    with session_scope() as s:  # evaluations repeated over time, so the charts have lines to draw
        for i in range(6):
            for config, base in (("hybrid", 0.62), ("bm25", 0.55)):
                run = start_run(s, "evaluate", name=f"retrieval:kb:{config}", params={"collection": "kb"})
                log_metrics(s, run.id, {"ndcg@10": base + 0.02 * i, "recall@10": base + 0.15 + 0.01 * i})
                ids.append(run.id)
            run = start_run(s, "evaluate", params={"evaluation": "rag", "collection": "kb", "model": "tiny-gpt"})
            log_metrics(s, run.id, {"faithfulness": 0.7 + 0.03 * i, "answer_relevance": 0.6 + 0.02 * (i % 3)})
            ids.append(run.id)
    with session_scope() as s:
        for run_id in ids:
            finish_run(s, run_id, summary={})
    page = _login(chromium, served, served.keys["admin"])
    page.goto(f"{served.url}/ui/keys")
    page.select_option("select[name=role]", "reader")
    page.fill("input[name=note]", "dashboard for the support team")
    page.click("form[action='/ui/keys'] button[type=submit]")
    secret = page.inner_text("#new-key-secret")
    assert re.fullmatch(r"glk_[0-9a-f]{8}_\S{43}", secret)
    _shot(page, "keys")
    key_id = int(re.search(r"Key (\d+) created", page.inner_text("#new-key")).group(1))
    with page.expect_navigation():  # the form posts from /ui/keys back to /ui/keys: wait for the new page
        page.click(f"button[aria-label='Revoke key {key_id}']")
    assert page.locator(f"button[aria-label='Revoke key {key_id}']").count() == 0
    assert secret.split("_", 2)[2] not in page.content()
    for path, name in (
        ("/ui/evaluations", "evaluations"),
        ("/ui/analytics", "analytics"),
        ("/ui/analytics/views/v_model_stats", "analytics_view"),
        ("/ui/audit", "audit"),
    ):
        page.goto(served.url + path)
        _shot(page, name)
    assert page.locator("td", has_text="key.revoke").count() >= 1
    reader = _login(chromium, served, served.keys["reader"])
    response = reader.goto(f"{served.url}/ui/keys")
    assert response.status == 403 and "needs admin" in reader.inner_text("#error-message")
    _shot(reader, "error")
