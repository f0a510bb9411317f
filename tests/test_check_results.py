"""bench/check_results.py: every figure in docs/benchmarks.md names its JSON value and equals it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "bench"))

import check_results  # noqa: E402

PUBLISHED = check_results.DOC.read_text()


def _problems(tmp_path, text):
    path = tmp_path / "benchmarks.md"
    path.write_text(text)
    problems, _historical = check_results.check(path)
    return problems


def test_the_published_benchmarks_pass():
    problems, historical = check_results.check(check_results.DOC)
    assert problems == []
    # Every file not re-run at a clean commit is declared historical on the page, and listed.
    assert historical


@pytest.mark.parametrize(
    ("published", "fabricated"),
    [
        ("**0.7334 <!-- result: retrieval_quality.json", "**0.7441 <!-- result: retrieval_quality.json"),  # SciFact
        (
            "**132.13 <!-- result:",
            "**13.06 <!-- result:",
        ),  # end-to-end p50 (re-run at HEAD): the issue's load-average edit
        ("199.01 <!-- result:", "782 <!-- result:"),  # end-to-end p95 (re-run at HEAD): the issue's git-sha edit
    ],
)
def test_the_fabricated_edits_of_issue_30_fail(tmp_path, published, fabricated):
    assert PUBLISHED.count(published) == 1
    problems = _problems(tmp_path, PUBLISHED.replace(published, fabricated))
    assert len(problems) == 1
    assert fabricated.split(" ")[0].strip("*") in problems[0] and "is not" in problems[0]


# Two markers once on the page: a target and a tolerance, each citing a measured score of another bench.
MISCITED_BOUNDS = [
    (
        "target `≥ 0.85`",
        "target ≥ 0.85 <!-- result: retrieval_quality.json#/collections/squad-verbose/fusion_grid/"
        "weighted w=0.7 minmax depth=300 chunk | bm25 distinct lexemes (before)/ndcg@10 -->",
    ),
    (
        "span 0.043 <!-- result: ingest/throughput.json#/rounds/1/ratio − #/rounds/3/ratio -->",
        "agree within 0.05 <!-- result: retrieval_quality.json#/fusion_choice/0/per_collection/scifact/over_best_branch -->",
    ),
]


@pytest.mark.parametrize(("published", "miscited"), MISCITED_BOUNDS)
def test_a_bound_citing_a_measured_value_fails(tmp_path, published, miscited):
    assert PUBLISHED.count(published) == 1
    problems = _problems(tmp_path, PUBLISHED.replace(published, miscited))
    assert len(problems) == 1 and "is printed as a bound, so it is a setting" in problems[0]


def test_a_bound_may_cite_the_setting_its_file_records(tmp_path, monkeypatch):
    doc = _result(tmp_path, monkeypatch, COMPLETE, {"target_ratio": 0.85, "ratio": 0.9})
    assert (
        _problems(
            tmp_path,
            doc + "Ratio 0.90 <!-- result: r.json#/ratio --> (target ≥ 0.85 <!-- result: r.json#/target_ratio -->).\n",
        )
        == []
    )
    assert "bound" in _problems(tmp_path, doc + "Target ≥ 0.90 <!-- result: r.json#/ratio -->.\n")[0]
    check_results.load.cache_clear()


def test_a_prose_number_without_a_marker_fails(tmp_path):
    text = PUBLISHED + "\nThe median ratio was 0.933 on a quiet machine.\n"
    assert _problems(tmp_path, text) == [f"benchmarks.md:{text.count(chr(10))}: 0.933 has no result marker"]
    # The same figure with its marker passes; as a setting in code it is not a figure.
    marked = PUBLISHED + "\nThe median ratio was 0.933 <!-- result: ingest/throughput.json#/ratio_median -->.\n"
    assert _problems(tmp_path, marked) == []
    assert _problems(tmp_path, PUBLISHED + "\nRun with `--repeats 5`, in issue 17, on 2026-11-29.\n") == []


def test_units_and_ratios_are_computed_not_matched(tmp_path):
    base = "| what | value |\n|---|---|\n"
    ok = base + "| share | 96.6 % <!-- result: ingest/throughput.json#/rounds/1/ratio ×100 --> |\n"
    assert _problems(tmp_path, PUBLISHED + "\n" + ok) == []
    wrong = ok.replace("96.6 %", "0.966 %")
    assert "is not" in _problems(tmp_path, PUBLISHED + "\n" + wrong)[0]
    assert "no 'nope'" in _problems(tmp_path, PUBLISHED + "\n" + ok.replace("/ratio", "/nope"))[0]


def _result(tmp_path, monkeypatch, env, values=None):
    results = tmp_path / "results"
    results.mkdir()
    (results / "r.json").write_text(json.dumps({"environment": env, "value": 1.5, **(values or {})}))
    monkeypatch.setattr(check_results, "RESULTS", results)
    check_results.load.cache_clear()
    return "A figure: 1.5 <!-- result: r.json#/value -->.\n"


HEAD = subprocess.run(
    ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
).stdout.strip()
COMPLETE = {
    "command": "python bench/x.py",
    "git_sha": HEAD,
    "versions": {"torch": "2.13.0", "postgresql": "18.6", "pgvector": "0.8.1"},
    "load_average": [0.5],
}


def test_a_result_file_needs_a_clean_known_commit(tmp_path, monkeypatch):
    doc = _result(tmp_path, monkeypatch, COMPLETE)
    assert _problems(tmp_path, doc) == []
    for sha, why in (
        (HEAD + "-dirty", "dirty tree"),
        ("9d494c5f43db782b879dca0579bc4a81a6c8f0a5", "not in this repository"),
    ):
        sub = tmp_path / sha[-6:]
        sub.mkdir()
        doc = _result(sub, monkeypatch, {**COMPLETE, "git_sha": sha})
        problems = _problems(sub, doc)
        assert len(problems) == 1 and why in problems[0]
    check_results.load.cache_clear()


def test_a_historical_declaration_is_accepted_only_for_the_files_own_commit(tmp_path, monkeypatch):
    parent = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD~1"], capture_output=True, text=True, check=True
    ).stdout.strip()
    doc = _result(tmp_path, monkeypatch, {**COMPLETE, "git_sha": parent + "-dirty"})
    assert _problems(tmp_path, doc + f"<!-- historical: r.json @ {parent[:7]} -->\n") == []
    assert (
        "is not the one the file names" in _problems(tmp_path, doc + f"<!-- historical: r.json @ {HEAD[:7]} -->\n")[0]
    )
    assert "not in this repository's history" in _problems(tmp_path, doc + "<!-- historical: r.json @ 9d494c5 -->\n")[0]
    check_results.load.cache_clear()


def test_a_file_measured_since_the_rule_names_the_servers_versions(tmp_path, monkeypatch):
    without = {**COMPLETE, "versions": {"torch": "2.13.0"}}
    problems = _problems(tmp_path, _result(tmp_path, monkeypatch, without))
    assert len(problems) == 1 and "records no PostgreSQL and pgvector versions" in problems[0]
    # Measured before write_result recorded them: the older rule holds.
    before = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "rev-parse", check_results.SERVER_VERSIONS_SINCE + "~1"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    older = tmp_path / "older"
    older.mkdir()
    assert _problems(older, _result(older, monkeypatch, {**without, "git_sha": before})) == []
    check_results.load.cache_clear()
