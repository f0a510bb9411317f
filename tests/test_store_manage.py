"""Managing what was ingested: collections and documents listed, renamed, retired, purged,
re-labelled with metadata; BM25 statistics stay exact and every change is a recorded run."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa


def _assert_bm25_exact(session, collection="fruit"):
    """The maintained statistics equal a recount over current chunks."""
    kept = session.execute(sa.text(
        "SELECT s.n_chunks, s.total_length FROM retrieval_collection_stats s JOIN collections c ON c.id = s.collection_id "
        "WHERE c.name = :n"), {"n": collection}).one()
    recount = session.execute(sa.text(
        "SELECT count(*), coalesce(sum(rc.length), 0) FROM retrieval_chunks rc JOIN chunks ch ON ch.id = rc.chunk_id "
        "JOIN documents d ON d.id = ch.document_id JOIN collections c ON c.id = d.collection_id "
        "WHERE c.name = :n AND d.superseded_at IS NULL"), {"n": collection}).one()
    assert tuple(kept) == tuple(recount)
    df = dict(session.execute(sa.text("SELECT term, df FROM retrieval_term_stats WHERE df > 0")).all())
    postings = dict(session.execute(sa.text(
        "SELECT term, count(*) FROM retrieval_postings WHERE current GROUP BY term")).all())
    assert df == postings


def _ask(cli, question: str) -> dict:
    result = cli("ask", question, "--collection", "fruit", "--model", "extractive", "--json", "-k", "3")
    assert result.exit_code == 0, result.stderr
    return result.json()


def test_documents_list_show_retire_and_purge(fruit, cli, session):
    listed = cli("documents", "list", "--collection", "fruit", "--json").json()
    assert [Path(r["external_id"]).name for r in listed] == ["apple.txt", "banana.txt", "cherry.txt"]
    answer = _ask(cli, "Which fruit is yellow?")
    banana = str((fruit / "banana.txt").resolve())

    retired = cli("documents", "delete", "--collection", "fruit", fruit / "banana.txt", "--json")
    assert retired.exit_code == 0, retired.stderr
    assert retired.json()["action"] == "retire"
    hits = cli("search", "yellow bananas", "--collection", "fruit", "--mode", "bm25", "--json").json()
    assert banana not in [h["doc_id"] for h in hits]
    _assert_bm25_exact(session)
    shown = cli("documents", "show", "--collection", "fruit", banana, "--json").json()
    assert shown["status"] == "retired" and answer["generation_id"] in shown["cited_by_generations"]
    with_retired = cli("documents", "list", "--collection", "fruit", "--include-retired", "--json").json()
    assert [r["status"] for r in with_retired] == ["current", "retired", "current"]
    again = cli("documents", "delete", "--collection", "fruit", banana)
    assert again.exit_code == 1 and "is not current" in again.stderr and again.stderr.count("\n") == 1

    # Purge: asks first (here: refused without --yes), then removes rows for good.
    refused = cli("documents", "delete", "--collection", "fruit", banana, "--purge", "--json")
    assert refused.exit_code == 1
    assert "generations cite them and will keep only a tombstone" in refused.stderr
    purged = cli("documents", "delete", "--collection", "fruit", banana, "--purge", "--yes", "--json").json()
    assert (purged["action"], purged["versions"], purged["generations_citing"]) == ("purge", 1, 1)
    assert session.scalar(sa.text("SELECT count(*) FROM documents WHERE external_id = :e"), {"e": banana}) == 0
    detail = cli("generations", "show", str(answer["generation_id"]), "--json").json()
    assert detail["answer"] == answer["answer"]  # the answer text stays
    gone = [s for s in detail["sources"] if s.get("tombstone")]
    assert gone and gone[0]["tombstone"]["external_id"] == banana and gone[0]["chunk_id"] is None
    assert gone[0]["doc_id"] == banana
    _assert_bm25_exact(session)
    runs = session.execute(sa.text("SELECT params->>'action', status, summary FROM runs WHERE kind = 'manage' ORDER BY id")).all()
    assert [(r[0], r[1]) for r in runs] == [("retire", "succeeded"), ("retire", "failed"), ("purge", "succeeded")]
    assert runs[-1][2]["external_id"] == banana


def test_set_meta_filters_and_survives_a_new_version(fruit, cli, session):
    apple = fruit / "apple.txt"
    result = cli("documents", "set-meta", "--collection", "fruit", apple, "season=autumn", "year=2024", "--json")
    assert result.exit_code == 0, result.stderr
    hits = cli("search", "fruit", "--collection", "fruit", "--mode", "bm25", "--where", "year>=2020", "--json").json()
    assert [Path(h["doc_id"]).name for h in hits] == ["apple.txt"]
    apple.write_text("Apples are crisp fruit; this orchard grows twelve kinds.")
    assert cli("ingest", fruit, "--collection", "fruit").exit_code == 0
    meta = session.execute(sa.text(
        "SELECT version, metadata FROM documents WHERE external_id = :e AND superseded_at IS NULL"),
        {"e": str(apple.resolve())}).one()
    assert meta.version == 2 and meta.metadata["season"] == "autumn" and meta.metadata["source"] == "apple.txt"
    unchanged = cli("ingest", fruit, "--collection", "fruit", "--json").json()
    assert unchanged["written"] == 0  # set-meta does not make the file look changed
    removed = cli("documents", "set-meta", "--collection", "fruit", apple, "season=", "--json").json()
    assert "season" not in removed["metadata"]
    bad = cli("documents", "set-meta", "--collection", "fruit", apple, "novalue")
    assert bad.exit_code == 1 and bad.stderr == "error: set-meta expects key=value (got 'novalue')\n"
    missing = cli("documents", "show", "--collection", "fruit", "nope.txt")
    assert missing.exit_code == 1 and missing.stderr.startswith("error: no document 'nope.txt'")


def test_collections_list_show_rename_delete(fruit, cli, session):
    rows = cli("collections", "list", "--json").json()
    assert [(r["name"], r["documents"], r["chunks"]) for r in rows] == [("fruit", 3, 3)]
    renamed = cli("collections", "rename", "fruit", "produce", "--json")
    assert renamed.exit_code == 0, renamed.stderr
    assert cli("collections", "show", "produce", "--json").json()["documents"] == 3
    clash = cli("collections", "rename", "produce", "produce")
    assert clash.exit_code == 1 and "already exists" in clash.stderr
    answer = cli("ask", "red fruit", "--collection", "produce", "--model", "extractive", "--json").json()
    assert cli("datasets", "import", "collection", "produce", "--name", "produce-text").exit_code == 0

    refused = cli("collections", "delete", "produce", "--yes")
    assert refused.exit_code == 1 and refused.stderr.count("\n") == 1
    assert refused.stderr.startswith("error: collection 'produce' is the source of dataset produce-text@1;")
    assert session.scalar(sa.text("SELECT count(*) FROM documents")) == 3  # nothing half-deleted

    deleted = cli("collections", "delete", "produce", "--force", "--yes", "--json")
    assert deleted.exit_code == 0, deleted.stderr
    assert deleted.json()["datasets_imported_from_it"] == ["produce-text@1"]
    assert session.scalar(sa.text("SELECT count(*) FROM chunks")) == 0
    assert session.scalar(sa.text("SELECT count(*) FROM items")) == 3  # the dataset's copies stay
    detail = cli("generations", "show", str(answer["generation_id"]), "--json").json()
    assert detail["answer"] == answer["answer"] and all(s["tombstone"]["collection"] == "produce" for s in detail["sources"])
    assert cli("collections", "list", "--json").json() == []
