"""`genloom report`: every plot is in the page, decodes in a real browser, and an empty store says what is missing."""

from __future__ import annotations

import base64
import re
import subprocess

import pytest

import analytics_data

EXPECTED_PLOTS = {
    "plot-usage", "plot-latency", "plot-citations", "plot-training", "plot-samples-0", "plot-leaderboards", "plot-datasets",
}

# Runs after load: writes one marker per <img> with its decoded size, which --dump-dom then shows.
CHECK_SCRIPT = """
<script>
window.addEventListener('load', function () {
  var out = document.createElement('pre'); out.id = 'img-check';
  var lines = [];
  document.querySelectorAll('img').forEach(function (img) {
    lines.push('IMG ' + img.id + ' ' + img.naturalWidth + 'x' + img.naturalHeight + ' ' + (img.complete ? 'complete' : 'pending'));
  });
  out.textContent = lines.join('\\n') + '\\nDONE';
  document.body.appendChild(out);
});
</script>
"""

# Runs after load in a 1280 px window: names each table wider than the box it sits in, and the page width.
WIDTH_SCRIPT = """
<script>
window.addEventListener('load', function () {
  var out = document.createElement('pre'); var lines = [];
  document.querySelectorAll('table').forEach(function (t, i) {
    var room = t.parentElement.clientWidth;
    if (t.scrollWidth > room || t.getBoundingClientRect().right > window.innerWidth) lines.push('TABLE ' + i + ' ' + t.scrollWidth + '>' + room);
  });
  var page = document.documentElement.scrollWidth;
  lines.push('PAGE ' + page);
  out.textContent = lines.join('\\n') + '\\nWIDTHS-DONE';
  document.body.appendChild(out);
});
</script>
"""


@pytest.fixture(scope="module")
def loaded_db(pg_server):
    """One database with the analytics fixture for the tests that only read it."""
    from sqlalchemy.orm import Session

    from conftest import own_database
    from genloom.db.engine import get_engine, reset_engines

    with own_database(pg_server) as url:
        with Session(get_engine()) as s:
            analytics_data.load(s)
        reset_engines()
        yield url


@pytest.fixture
def loaded(loaded_db, monkeypatch):
    from genloom.db.engine import reset_engines

    monkeypatch.setenv("DATABASE_URL", loaded_db)
    reset_engines()
    yield loaded_db
    reset_engines()


@pytest.fixture
def report_with_data(loaded, cli, tmp_path):
    out = tmp_path / "report.html"
    result = cli("report", "--out", out, "--json")
    assert result.exit_code == 0, result.stderr
    return out, result.json()


def test_report_contains_every_plot_as_an_embedded_png(report_with_data):
    out, payload = report_with_data
    assert set(payload["plots"]) == EXPECTED_PLOTS and payload["missing"] == {}
    page = out.read_text()
    images = dict(re.findall(r'<img id="([^"]+)" class="plot" alt="[^"]*" src="data:image/png;base64,([^"]+)"', page))
    assert set(images) == EXPECTED_PLOTS
    for b64 in images.values():
        assert base64.b64decode(b64)[:8] == b"\x89PNG\r\n\x1a\n"
    # Self-contained: nothing for the browser to fetch.
    assert not re.search(r'(src|href)="(https?:)?//', page)
    assert "gpt@1" in page and "ds@2" in page and "Doc three" in page  # model table, datasets, never-cited


def test_report_since_filters_the_period(loaded, cli, tmp_path):
    out = tmp_path / "r.html"
    result = cli("report", "--out", out, "--since", "2030-01-01", "--json")
    assert result.exit_code == 0
    assert "usage" in result.json()["missing"] and "since 2030-01-01" in out.read_text()
    bad = cli("report", "--out", out, "--since", "yesterday")
    assert bad.exit_code == 1 and bad.stderr.strip() == "error: --since must be a date like 2026-11-01 (got 'yesterday')"


def test_empty_database_report_says_what_is_missing(cli, db_url, tmp_path):
    out = tmp_path / "empty.html"
    result = cli("report", "--out", out, "--json")
    assert result.exit_code == 0, result.stderr
    payload = result.json()
    assert payload["plots"] == []
    assert set(payload["missing"]) == {"usage", "latency", "retrieval", "training", "samples", "leaderboards", "datasets"}
    page = out.read_text()
    assert page.count('class="missing"') == 7 and "genloom ask" in page


def test_decode_image_layouts():
    import numpy as np

    from genloom.analytics.report import decode_image

    grey = np.arange(64, dtype=np.uint8).reshape(8, 8)
    assert decode_image(grey.tobytes(), [8, 8], "uint8").shape == (8, 8)
    chw = np.zeros((3, 4, 5), dtype=np.uint8)
    assert decode_image(chw.tobytes(), [3, 4, 5], "uint8").shape == (4, 5, 3)
    assert decode_image(np.ones((1, 4, 4), np.float32).tobytes(), [1, 4, 4], "float32").max() == 1.0
    assert decode_image(b"abc", [8, 8], "uint8") is None


def test_report_renders_in_a_real_browser(report_with_data, browser, tmp_path):
    out, payload = report_with_data
    checked = tmp_path / "checked.html"
    checked.write_text(out.read_text().replace("</body>", CHECK_SCRIPT + "</body>"))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([browser, *flags, "--virtual-time-budget=5000", "--dump-dom", checked.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert "DONE" in dom.stdout, dom.stderr[-2000:]
    decoded = dict(re.findall(r"IMG (\S+) (\d+)x\d+ complete", dom.stdout))
    assert set(decoded) == EXPECTED_PLOTS
    assert all(int(width) > 100 for width in decoded.values()), decoded
    shot = tmp_path / "report.png"
    subprocess.run([browser, *flags, "--window-size=1300,2400", "--hide-scrollbars", f"--screenshot={shot}",
                    out.as_uri()], capture_output=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 50_000


def test_report_tables_fit_a_1280px_window(db_url, session, cli, browser, tmp_path):
    """Long unbreakable values (a 64-hex revision, a local model path) wrap inside their cell:
    at a 1280 px window no table is wider than its section and the page does not scroll sideways."""
    import sqlalchemy as sa

    analytics_data.load(session)
    session.execute(sa.text("UPDATE generations SET model_revision = repeat('0123456789abcdef', 4), "
                            "model_name = '/home/someone/models/checkpoints/' || model_name || '-finetuned-2026-12-01-final'"))
    session.commit()
    out = tmp_path / "report.html"
    assert cli("report", "--out", out).exit_code == 0
    wide = tmp_path / "wide.html"
    wide.write_text(out.read_text().replace("</body>", WIDTH_SCRIPT + "</body>"))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([browser, *flags, "--window-size=1280,2000", "--virtual-time-budget=5000", "--dump-dom",
                          wide.as_uri()], capture_output=True, text=True, timeout=120)
    assert "WIDTHS-DONE" in dom.stdout, dom.stderr[-2000:]
    overflowing = re.findall(r"TABLE (\d+) (\d+)&gt;(\d+)", dom.stdout)
    assert not overflowing, f"tables wider than their section at 1280 px (index, table px > room px): {overflowing}"
    page = re.search(r"PAGE (\d+)", dom.stdout)
    assert page and int(page.group(1)) <= 1280, dom.stdout[-300:]


def test_demo_step_writes_the_report_and_is_rerunnable(loaded, tmp_path, capsys):
    from genloom.cli.demo_render import render_analytics
    from genloom.demo_steps import DemoContext
    from genloom.demo_steps import analytics as step

    ctx = DemoContext(out_dir=tmp_path, quick=True)
    for _ in range(2):  # idempotent: the second run rewrites the same file
        result = step.run(ctx)
    assert result["plots"] == len(EXPECTED_PLOTS) and result["sections_without_data"] == []
    assert (tmp_path / "report.html").exists()
    render_analytics(result)  # the CLI draws what the step computed
    screen = capsys.readouterr().err
    assert "5 generations in 2 sessions" in screen and "gpt@1" in screen and "view latency" in screen
