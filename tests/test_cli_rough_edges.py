"""What a new user meets at the command line: one-line usage errors, help without placeholders
for flags, readable SQL at 80 columns, no markup in printed text, pagination that says there is
more, deletes that confirm, `runs show|compare`, and a README tour that writes outside the repo."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def narrow(monkeypatch):
    """An 80-column terminal for what the CLI prints."""
    from genloom.cli.output import console

    monkeypatch.setattr(console, "width", 80)


def test_usage_errors_are_one_plain_line(cli):
    unknown = cli("documents", "list", "--bogus")
    assert (unknown.exit_code, unknown.stderr) == (2, "error: No such option: --bogus (see: genloom documents list --help)\n")
    missing = cli("documents", "list")
    assert missing.exit_code == 2
    assert missing.stderr == "error: Missing option '--collection' / '-c'. (see: genloom documents list --help)\n"
    assert cli("nosuch").stderr == "error: No such command 'nosuch'. (see: genloom --help)\n"


def test_help_shows_no_value_placeholder_for_flags(cli):
    shown = cli("search", "--help")
    assert shown.exit_code == 0
    assert "--by-document" in shown.stdout and "<int>" in shown.stdout  # options that take a value keep theirs
    assert "<bool>" not in shown.stdout


def test_sql_is_readable_at_80_columns(db_url, cli, narrow):
    wide = cli("sql", "SELECT repeat('x', 70) AS description, 'extractive' AS model, 0.25 AS error_rate, 12 AS n")
    assert wide.exit_code == 0, wide.stderr
    lines = wide.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    assert lines[0].startswith("-[ RECORD 1 ]")
    labels = [line.split(" | ")[0].strip() for line in lines[1:]]
    assert [label for label in labels if label] == ["description", "model", "error_rate", "n"]
    assert "".join(line.split(" | ")[1] for line in lines[1:3]) == "x" * 70  # the long value is whole (wrapped), not cut at the column edge
    small = cli("sql", "SELECT 1 AS a, 'b' AS b")
    assert "RECORD" not in small.stdout and "┃ a" in small.stdout  # a table when it fits
    forced = cli("sql", "SELECT 1 AS a, 'b' AS b", "--vertical")
    assert forced.stdout.splitlines()[1:] == ["a | 1", "b | b"]


def test_generations_and_sessions_show_print_no_markup(fruit, cli):
    answer = cli("ask", "Which fruit is [bold]yellow[/bold]?", "-c", "fruit", "--model", "extractive", "--json").json()
    shown = cli("generations", "show", str(answer["generation_id"]))
    assert shown.exit_code == 0, shown.stderr
    assert "[bold]Q:" not in shown.stdout and "Q: Which fruit is [bold]yellow[/bold]?" in shown.stdout
    turns = cli("sessions", "show", str(answer["session_id"]))
    assert "Which fruit is [bold]yellow[/bold]?" in turns.stdout


def test_documents_list_pages_and_says_when_there_is_more(fruit, cli):
    first = cli("documents", "list", "-c", "fruit", "--limit", "2", "--json")
    assert [Path(r["external_id"]).name for r in first.json()] == ["apple.txt", "banana.txt"]
    assert "more documents" in first.stderr and "--offset 2" in first.stderr
    rest = cli("documents", "list", "-c", "fruit", "--limit", "2", "--offset", "2", "--json")
    assert [Path(r["external_id"]).name for r in rest.json()] == ["cherry.txt"] and rest.stderr == ""


def test_only_retired_lists_retired_documents_alone(fruit, cli):
    assert cli("documents", "delete", "-c", "fruit", fruit / "banana.txt").exit_code == 0
    only = cli("documents", "list", "-c", "fruit", "--only-retired", "--json").json()
    assert [(Path(r["external_id"]).name, r["status"]) for r in only] == [("banana.txt", "retired")]
    both = cli("documents", "list", "-c", "fruit", "--include-retired", "--json").json()
    assert [r["status"] for r in both] == ["current", "retired", "current"]
    current = cli("documents", "list", "-c", "fruit", "--json").json()
    assert [Path(r["external_id"]).name for r in current] == ["apple.txt", "cherry.txt"]


def test_collections_delete_asks_and_yes_skips_the_question(fruit, cli):
    # No terminal to ask on (pytest's stdin): a clear one-line refusal, not "Abort", and nothing deleted.
    refused = cli("collections", "delete", "fruit")
    assert refused.exit_code == 1
    assert refused.stderr == (
        "error: deleting collection 'fruit' removes 3 document versions and 3 chunks for good: confirm with --yes\n"
    )
    assert [r["name"] for r in cli("collections", "list", "--json").json()] == ["fruit"]
    deleted = cli("collections", "delete", "fruit", "--yes", "--json")
    assert deleted.exit_code == 0, deleted.stderr
    assert cli("collections", "list", "--json").json() == []


def test_runs_show_and_compare(fruit, cli, session):
    import sqlalchemy as sa

    (fruit / "date.txt").write_text("Dates are sweet brown fruit of the date palm.")
    assert cli("ingest", fruit, "--collection", "fruit").exit_code == 0
    first, second = session.scalars(sa.text("SELECT id FROM runs WHERE kind = 'ingest' ORDER BY id")).all()
    shown = cli("runs", "show", str(second), "--json").json()
    assert (shown["kind"], shown["status"], shown["summary"]["written"]) == ("ingest", "succeeded", 1)
    assert shown["seconds"] >= 0
    text = cli("runs", "show", str(second)).stdout
    assert "kind: ingest" in text and "summary:" in text and "  written: 1" in text
    compared = cli("runs", "compare", str(first), str(second), "--json").json()
    assert compared["rows"]["summary.written"] == [3, 1] and "summary.written" in compared["differs"]
    assert "status" not in compared["differs"]
    assert cli("runs", "show", "999999").stderr == "error: no run 999999 (see: genloom runs list)\n"
    assert cli("runs", "compare", str(first)).exit_code == 1


def test_readme_tour_writes_its_outputs_outside_the_repo():
    readme = (REPO_ROOT / "README.md").read_text()
    tour = readme.split("A short tour", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    outputs = re.findall(r"--out\s+(\S+)", tour)
    assert outputs, "the tour writes no file any more: update this test"
    inside = [path for path in outputs if not path.startswith(("~/", "/"))]
    assert not inside, f"the README tour writes into the repository (the current folder): {inside}"
