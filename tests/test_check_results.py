"""bench/check_results.py: a figure in docs/benchmarks.md's tables needs a result file that holds it."""

from __future__ import annotations

import sys

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "bench"))

import check_results  # noqa: E402

CITE = "Result file: `bench/results/ingest/throughput.json`"


def _doc(tmp_path, text):
    path = tmp_path / "benchmarks.md"
    path.write_text(text)
    return check_results.check(path)


def test_the_published_benchmarks_pass():
    assert check_results.check(check_results.DOC) == []


def test_figures_must_be_in_the_cited_file_at_the_printed_precision(tmp_path):
    import json

    data = json.loads((REPO_ROOT / "bench/results/ingest/throughput.json").read_text())
    median = data["ratio_median"]
    ok = f"{CITE}\n\n| what | value |\n|---|---|\n| median ratio, `--repeats 3` | **{median}** |\n"
    assert _doc(tmp_path, ok) == []
    wrong = ok.replace(f"**{median}**", f"**{median + 0.01:.3f}**")
    assert _doc(tmp_path, wrong) == [f"benchmarks.md:5: {median + 0.01:.3f} is in none of throughput.json"]


def test_a_table_without_a_citation_or_with_a_missing_file_fails(tmp_path):
    table = "| what | value |\n|---|---|\n| x | 1.5 |\n"
    assert _doc(tmp_path, "## Section\n\n" + table) == [
        "benchmarks.md:3: table cites no result file (add a 'Result file: `bench/results/…`' line)"]
    problems = _doc(tmp_path, "Result file: `bench/results/nope.json`\n\n" + table)
    assert problems[0] == "benchmarks.md:1: cited result file bench/results/nope.json does not exist"
    # A citation covers only the table right after it, within its section.
    assert _doc(tmp_path, f"{CITE}\n\n## Next\n\n" + table)[0].endswith("table cites no result file "
                                                                         "(add a 'Result file: `bench/results/…`' line)")
