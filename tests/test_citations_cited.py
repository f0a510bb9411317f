"""Citations mean cited: a source retrieved into the prompt is not a citation unless the answer's
[n] marker names it. The log records which sources were cited, the analytics views count and
credit feedback only to those, and migration 0017 fills the flag in for answers logged before it."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa


def test_only_cited_sources_count_as_citations_and_earn_feedback(fruit, cli, session):
    answer = cli("ask", "Which fruit is yellow?", "-c", "fruit", "--model", "extractive", "-k", "3", "--json").json()
    cited = {Path(c["doc_id"]).name for c in answer["citations"]}
    assert cited == {"banana.txt"}  # three sources in the prompt, one cited
    assert cli("feedback", str(answer["generation_id"]), "--score", "2").exit_code == 0

    flags = session.execute(sa.text(
        "SELECT d.external_id, s.cited FROM generation_sources s JOIN chunks c ON c.id = s.chunk_id "
        "JOIN documents d ON d.id = c.document_id WHERE s.generation_id = :g"), {"g": answer["generation_id"]}).all()
    assert {Path(doc).name: flag for doc, flag in flags} == {"banana.txt": True, "apple.txt": False, "cherry.txt": False}

    rows = session.execute(sa.text(
        "SELECT external_id, citations, retrievals, answers, mean_feedback_score FROM v_document_citations")).all()
    assert [(Path(r[0]).name, r[1], r[2], r[3], r[4]) for r in rows] == [("banana.txt", 1, 1, 1, 2.0)]
    never = session.execute(sa.text("SELECT external_id, retrievals FROM v_documents_never_cited ORDER BY 1")).all()
    assert [(Path(r[0]).name, r[1]) for r in never] == [("apple.txt", 1), ("cherry.txt", 1)]
    credited = session.execute(sa.text("SELECT external_id FROM v_feedback_sources")).scalars().all()
    assert [Path(e).name for e in credited] == ["banana.txt"]
    chunks = session.execute(sa.text(
        "SELECT external_id, citations, retrievals, mean_feedback_score FROM v_chunk_citations ORDER BY 1")).all()
    assert [(Path(r[0]).name, r[1], r[2], r[3]) for r in chunks] == [
        ("apple.txt", 0, 1, None), ("banana.txt", 1, 1, 2.0), ("cherry.txt", 0, 1, None)]
    explained = session.execute(sa.text("SELECT sources FROM v_feedback_explained")).scalar_one()
    assert sorted(s["cited"] for s in explained) == [False, False, True]
    shown = cli("generations", "show", str(answer["generation_id"]), "--json").json()
    assert sorted(s["cited"] for s in shown["sources"]) == [False, False, True]


def test_migration_0017_fills_cited_from_the_logged_answers(engine):
    from genloom.db import migrate

    migrate.downgrade(engine, "0015")
    with engine.begin() as conn:
        for statement in [
            "INSERT INTO collections (name) VALUES ('c')",
            "INSERT INTO documents (collection_id, external_id, sha256) SELECT id, 'd', repeat('a', 64) FROM collections",
            "INSERT INTO chunks (document_id, ordinal, text, token_count) "
            "SELECT d.id, o, 'chunk ' || o, 2 FROM documents d, generate_series(0, 2) o",
            "INSERT INTO sessions DEFAULT VALUES",
            "INSERT INTO prompts (session_id, text) SELECT id, 'q' FROM sessions",
            "INSERT INTO generations (prompt_id, model_name, output) "
            "SELECT id, m, o FROM prompts, (VALUES ('plain', 'It is so [2].'), ('sealed', 'gle1:k:AAAA')) v(m, o)",
            "INSERT INTO generation_sources (generation_id, rank, chunk_id) "
            "SELECT g.id, r, (SELECT min(id) FROM chunks) + r - 1 FROM generations g, generate_series(1, 3) r",
        ]:
            conn.execute(sa.text(statement))
    migrate.upgrade(engine, "head")
    with engine.connect() as conn:
        flags = conn.execute(sa.text(
            "SELECT g.model_name, s.rank, s.cited FROM generation_sources s JOIN generations g ON g.id = s.generation_id "
            "ORDER BY 1, 2")).all()
    assert [tuple(f) for f in flags] == [
        ("plain", 1, False), ("plain", 2, True), ("plain", 3, False),
        ("sealed", 1, None), ("sealed", 2, None), ("sealed", 3, None),  # unreadable to SQL: unknown
    ]
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT citations FROM v_document_citations")).scalar_one() == 4
