"""Prompt-template labels (moved, recorded, used by ask) and feedback turned into a dataset."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa


@pytest.fixture
def kb(db_url, cli, tmp_path):
    (tmp_path / "kb.jsonl").write_text(
        json.dumps({"id": "tea", "title": "Tea", "text": "Green tea is steeped at 80 degrees for two minutes."}) + "\n"
        + json.dumps({"id": "rust", "title": "Rust", "text": "Rust has a borrow checker that prevents data races."}) + "\n"
    )
    assert cli("ingest", tmp_path / "kb.jsonl", "--collection", "kb").exit_code == 0
    return tmp_path


def test_labels_move_are_recorded_and_drive_ask(kb, cli, session, tmp_path):
    for n in (1, 2):
        (tmp_path / f"t{n}.txt").write_text(f"Version {n}. Sources:\n{{sources}}\nQ: {{question}}")
        assert cli("templates", "add", "qa", "--file", tmp_path / f"t{n}.txt").exit_code == 0
    moved = cli("templates", "label", "qa@1", "production", "--user", "ana", "--json").json()
    assert (moved["version"], moved["from_version"], moved["moved"]) == (1, None, True)
    ask = cli("ask", "tea temperature", "-c", "kb", "--model", "extractive", "--template", "qa@production", "--json").json()
    used = session.execute(sa.text("SELECT template_name, template_version FROM prompts WHERE id = :i"),
                           {"i": ask["prompt_id"]}).one()
    assert tuple(used) == ("qa", 1)
    assert cli("templates", "label", "qa@2", "production", "--user", "bo").exit_code == 0
    ask = cli("ask", "tea temperature", "-c", "kb", "--model", "extractive", "--template", "qa@production", "--json").json()
    assert session.scalar(sa.text("SELECT template_version FROM prompts WHERE id = :i"), {"i": ask["prompt_id"]}) == 2
    rollback = cli("templates", "label", "qa@1", "production", "--user", "ana", "--json").json()
    assert (rollback["version"], rollback["from_version"]) == (1, 2)
    history = cli("templates", "history", "qa", "--json").json()
    assert [(h["from_version"], h["to_version"], h["moved_by"]) for h in history] == [(None, 1, "ana"), (1, 2, "bo"), (2, 1, "ana")]
    for args, message in [
        (("templates", "label", "qa", "production"), "error: give the version to label: qa@V"),
        (("templates", "label", "qa@9", "production"), "error: no prompt template 'qa@9'"),
        (("templates", "label", "qa@1", "7"), "error: bad label '7'"),
        (("ask", "x", "-c", "kb", "--model", "extractive", "--template", "qa@staging"), "error: template 'qa' has no label 'staging' (labels: production)"),
    ]:
        bad = cli(*args)
        assert bad.exit_code == 1 and bad.stderr.startswith(message) and bad.stderr.count("\n") == 1, bad.stderr


def test_rated_generations_become_a_sealed_dataset_with_lineage(kb, cli, session):
    good = cli("ask", "How hot is green tea steeped?", "-c", "kb", "--model", "extractive", "-k", "1", "--json").json()
    meh = cli("ask", "What prevents data races?", "-c", "kb", "--model", "extractive", "-k", "1", "--json").json()
    up = cli("ask", "borrow checker", "-c", "kb", "--model", "extractive", "-k", "1", "--json").json()
    assert cli("feedback", str(good["generation_id"]), "--score", "5").exit_code == 0
    assert cli("feedback", str(meh["generation_id"]), "--score", "2").exit_code == 0
    assert cli("feedback", str(up["generation_id"]), "--up").exit_code == 0
    result = cli("datasets", "import", "feedback", "--min-score", "4", "--name", "good-answers", "--json")
    assert result.exit_code == 0, result.stderr
    rows = session.execute(sa.text(
        "SELECT i.text, i.metadata, v.sealed FROM dataset_members m JOIN items i ON i.id = m.item_id "
        "JOIN dataset_versions v ON v.id = m.version_id ORDER BY (i.metadata->>'generation_id')::int")).all()
    assert [r.metadata["generation_id"] for r in rows] == [good["generation_id"], up["generation_id"]]
    assert all(r.sealed for r in rows)
    record = json.loads(rows[0].text)
    assert record["question"] == "How hot is green tea steeped?" and record["answer"] == good["answer"]
    assert record["sources"][0]["title"] == "Tea" and "80 degrees" in record["sources"][0]["text"]
    assert rows[0].metadata["score"] == 5
    none = cli("datasets", "import", "feedback", "--min-score", "5", "--name", "x")
    assert none.exit_code == 0  # the 5 and the thumbs-up qualify
    empty = cli("datasets", "import", "feedback", "--min-score", "9", "--name", "y")
    assert empty.exit_code == 1 and empty.stderr == "error: --min-score must be within 1..5 (got 9)\n"
