"""`genloom eval rag`: answer quality of the logged call on a QA set, stored as a run whose
per-question records join to their generations."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from generation_support import CORPUS, counts


def _squad_file(tmp_path):
    """A SQuAD-style file over the test corpus: three answerable questions, one the corpus cannot answer."""
    paragraphs = {doc_id: (title, text) for doc_id, title, text in CORPUS}
    qas = {
        "eiffel": [{"id": "q1", "question": "When was the Eiffel Tower completed?", "answers": [{"text": "1889"}]}],
        "photosynthesis": [{"id": "q2", "question": "What does chlorophyll absorb?",
                            "answers": [{"text": "mostly blue and red light"}]}],
        "rust": [{"id": "q3", "question": "How does Rust achieve memory safety without a garbage collector?",
                  "answers": [{"text": "by checking ownership and borrowing at compile time"}]}],
        "bm25": [{"id": "q4", "question": "Who won the 1998 football world cup?",
                  "answers": [{"text": "France"}]}],
    }
    data = {"data": [{"title": paragraphs[d][0].replace(" ", "_"),
                      "paragraphs": [{"context": paragraphs[d][1], "qas": qas[d]}]} for d in qas]}
    path = tmp_path / "qa.json"
    path.write_text(json.dumps(data))
    return path


def test_eval_rag_on_a_squad_file(cli, engine, tmp_path):
    path = _squad_file(tmp_path)
    out = cli("eval", "rag", path, "-c", "qa", "--ingest-contexts", "--json")
    assert out.exit_code == 0, out.stderr
    report = out.json()
    assert report["questions"] == 4 and report["errors"] == 0 and report["model"] == "extractive"
    # The three answerable questions are answered with the gold sentence, cited; the fourth abstains.
    assert report["answer_recall"] == 0.75 and report["abstention_rate"] == 0.25
    assert report["citation_precision"] == 1.0 and report["groundedness"] == 1.0
    assert 0 < report["f1"] < 1 and report["em"] == 0.0
    assert report["latency_p50_ms"] <= report["latency_p95_ms"]

    with engine.connect() as conn:
        run = conn.execute(sa.text("SELECT id, kind, status, params FROM runs WHERE kind = 'evaluate'")).mappings().one()
        metrics = dict(conn.execute(sa.text("SELECT name, value FROM metrics WHERE run_id = :r AND step IS NULL"),
                                    {"r": run["id"]}).all())
        # The documented join: per-question records → their generations rows.
        joined = conn.execute(sa.text(
            "SELECT rec->>'id' AS id, (rec->>'f1')::float AS f1, rec->>'hit_rank' AS hit_rank, g.output, "
            "g.params->>'finish_reason' AS finish "
            "FROM runs r, jsonb_array_elements(r.summary->'records') rec "
            "JOIN generations g ON g.id = (rec->>'generation_id')::bigint WHERE r.id = :r ORDER BY 1"),
            {"r": run["id"]}).mappings().all()
    assert run["status"] == "succeeded" and run["params"]["evaluation"] == "rag" and run["id"] == report["run_id"]
    assert metrics["f1"] == pytest.approx(report["f1"]) and metrics["abstention_rate"] == 0.25
    assert [r["id"] for r in joined] == ["q1", "q2", "q3", "q4"]
    assert [r["hit_rank"] for r in joined[:3]] == ["1", "1", "1"]
    assert "1889" in joined[0]["output"] and joined[0]["finish"] == "stop"
    assert joined[3]["output"] == "The sources do not answer this." and joined[3]["finish"] == "abstain"


def test_eval_rag_jsonl_with_repeats_and_limit(cli, engine, tmp_path):
    from generation_support import ingest_corpus

    ingest_corpus("kb")
    path = tmp_path / "qa.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [
        {"id": "a", "question": "What is BM25?", "answers": ["a ranking function"], "doc_id": "bm25"},
        {"id": "b", "question": "What does chlorophyll absorb?", "answer": "blue and red light"},
        {"id": "c", "question": "When was the Eiffel Tower completed?", "answers": ["1889"], "doc_id": "eiffel"},
    ]) + "\n")
    out = cli("eval", "rag", path, "-c", "kb", "--limit", "2", "--seed", "3", "--repeats", "2", "--json")
    assert out.exit_code == 0, out.stderr
    report = out.json()
    assert report["sampled"] == 2 and report["questions"] == 4 and report["repeats"] == 2
    assert report["f1_std"] == 0.0  # the extractive backend is deterministic
    assert counts(engine)["generations"] == 4


@pytest.mark.parametrize("args, needle", [
    (["missing.json", "-c", "kb"], "cannot read QA file missing.json"),
    (["QA", "-c", "nope"], "collection 'nope' not found"),
    (["QA", "-c", "kb", "--ingest-contexts"], "--ingest-contexts needs a SQuAD-style JSON file"),
    (["QA", "-c", "kb", "--limit", "0"], "--limit must be at least 1"),
    (["BAD", "-c", "kb"], "line 1: not JSON"),
])
def test_eval_rag_bad_input_is_one_line_and_writes_nothing(cli, engine, tmp_path, args, needle):
    (tmp_path / "qa.jsonl").write_text(json.dumps({"question": "What is BM25?", "answers": ["x"]}) + "\n")
    (tmp_path / "bad.jsonl").write_text("{nope\n")
    args = [{"QA": tmp_path / "qa.jsonl", "BAD": tmp_path / "bad.jsonl"}.get(a, a) for a in args]
    from generation_support import ingest_corpus

    ingest_corpus("kb")
    out = cli("eval", "rag", *args)
    assert out.exit_code == 1 and needle in out.stderr and out.stderr.count("\n") == 1, out.stderr
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM runs WHERE kind = 'evaluate'")).scalar() == 0
    assert counts(engine)["generations"] == 0


def test_squad_metrics_match_the_official_script():
    from genloom.evaluation.rag import answer_sentences, best_over, exact_match_score, f1_score, supported

    assert exact_match_score("The Eiffel Tower!", "eiffel tower") == 1.0
    assert f1_score("in 1889 for the fair", "1889") == pytest.approx(2 * (1 / 4) / (1 + 1 / 4))
    assert best_over(f1_score, "Denver Broncos", ["Broncos", "Denver Broncos"]) == 1.0
    assert answer_sentences("It was completed in 1889. [1] BM25 scores documents. [2][3] Uncited tail.") == [
        ("It was completed in 1889.", [1]), ("BM25 scores documents.", [2, 3]), ("Uncited tail.", []),
    ]
    assert supported("It was completed in 1889.", "The tower was completed in 1889 for the fair.")
    assert not supported("It was demolished in 1920.", "The tower was completed in 1889 for the fair.")


def test_a_question_that_cannot_be_asked_is_an_error_record(cli, engine, tmp_path, monkeypatch):
    from generation_support import ingest_corpus

    import genloom.generation.call as call  # the job imports ask from here when it runs
    from genloom.errors import BadInput

    ingest_corpus("kb")

    original = call.ask

    def ask(session, request, **kw):
        if "BM25" in request.question:
            raise BadInput("the context window of 64 tokens cannot fit even one source")
        return original(session, request, **kw)

    monkeypatch.setattr(call, "ask", ask)
    path = tmp_path / "qa.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [
        {"id": "a", "question": "What is BM25?", "answers": ["a ranking function"]},
        {"id": "c", "question": "When was the Eiffel Tower completed?", "answers": ["1889"]},
    ]) + "\n")
    report = cli("eval", "rag", path, "-c", "kb", "--json").json()
    assert report["questions"] == 2 and report["errors"] == 1 and report["answer_recall"] == 1.0
    with engine.connect() as conn:
        records = conn.execute(sa.text("SELECT summary->'records' FROM runs WHERE kind = 'evaluate'")).scalar()
    assert records[0] == {"id": "a", "generation_id": None, "status": "error", "repeat": 0,
                          "error": "the context window of 64 tokens cannot fit even one source"}
    assert counts(engine)["generations"] == 1
    # When no question can be asked, the run fails with the reason.
    path.write_text(json.dumps({"question": "What is BM25?", "answers": ["x"]}) + "\n")
    out = cli("eval", "rag", path, "-c", "kb")
    assert out.exit_code == 1 and "no question could be asked: the context window of 64" in out.stderr
