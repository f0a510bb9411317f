"""The demo tells the truth: its question is one its documents answer, the answer is checked for
the expected span, the feedback records that check (never a fixed 5/5), and it says which backend
answered and how to get generative answers."""

from __future__ import annotations

import sqlalchemy as sa


def _feedback(session, generation_id):
    return session.execute(
        sa.text("SELECT score, thumbs, label, comment FROM feedback WHERE generation_id = :g"), {"g": generation_id}
    ).one()


def test_demo_answer_is_right_and_its_feedback_is_the_check(db_url, session, tmp_path):
    from genloom.demo_steps import DemoContext
    from genloom.demo_steps import generation as step

    result = step.run(DemoContext(out_dir=tmp_path, quick=True))
    assert result["status"] == "ok"
    assert "weighted sum of normalised scores" in result["answer"]
    assert result["check"]["correct"] and result["check"]["cites_source"]
    assert result["model"] == "extractive" and "genloom models add-endpoint" in result["backend_note"]
    score, thumbs, label, comment = _feedback(session, result["generation_id"])
    assert (score, thumbs, label) == (5, 1, "demo-check") and "contains" in comment


def test_demo_rates_a_wrong_answer_down(db_url, session, tmp_path, monkeypatch):
    from genloom.demo_steps import DemoContext
    from genloom.demo_steps import generation as step

    monkeypatch.setattr(step, "EXPECTED_SPAN", "reciprocal rank fusion with k = 60 is the default")
    result = step.run(DemoContext(out_dir=tmp_path, quick=True))
    assert result["check"]["correct"] is False and result["check"]["span_present"] is False
    score, thumbs, _, comment = _feedback(session, result["generation_id"])
    assert (score, thumbs) == (1, -1) and "lacks" in comment


def test_check_answer_needs_the_span_and_the_source():
    from genloom.demo_steps.generation import check_answer

    right = "It fuses them with a weighted sum of  Normalised scores: each branch... [1]"
    assert check_answer(right, ["/somewhere/sample_docs/hybrid_search.md"])["correct"]
    assert not check_answer(right, ["/somewhere/sample_docs/bm25.md"])["correct"]  # right words, wrong source
    assert not check_answer("Every chunk is turned into lexemes with to_tsvector. [1]", ["/somewhere/hybrid_search.md"])["correct"]
