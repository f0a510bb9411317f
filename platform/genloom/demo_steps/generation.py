"""Demo step 3: a grounded answer with citations from the `demo` collection, checked, logged with feedback.

The question is one the bundled documents answer (hybrid_search.md says how the branches are
fused), and the feedback the demo records is the result of checking the answer for the expected
span: 5 and a thumb up when it is there, 1 and a thumb down when it is not. Never a fixed score.
"""

from __future__ import annotations

from pathlib import Path

TITLE = "generation: a grounded answer with citations (extractive backend), checked, logged with feedback"

QUESTION = "How does genloom fuse the keyword and vector branches?"
EXPECTED_SPAN = "weighted sum of normalised scores"  # hybrid_search.md's answer
EXPECTED_SOURCE = "hybrid_search.md"
BACKEND_NOTE = (
    "extractive backend: it picks sentences from the retrieved sources (no language model); "
    "for generative answers, register an LLM endpoint (genloom models add-endpoint NAME --base-url URL --model ID) "
    "and ask with --model NAME"
)


def check_answer(answer: str, cited_documents: list[str]) -> dict:
    """Is the expected span in the answer (case and spacing ignored), citing the document that holds it?"""
    normalised = " ".join(answer.lower().split())
    span_present = EXPECTED_SPAN in normalised
    cites_source = any(Path(doc).name == EXPECTED_SOURCE for doc in cited_documents)
    correct = span_present and cites_source
    return {
        "expected_span": EXPECTED_SPAN,
        "expected_source": EXPECTED_SOURCE,
        "span_present": span_present,
        "cites_source": cites_source,
        "correct": correct,
    }


def _ensure_demo_collection() -> None:
    """The retrieval step ingests `demo`; if it did not run, ingest the same bundled documents
    (unchanged documents are skipped by their hash, so this is safe to repeat)."""
    from genloom.db.engine import session_scope
    from genloom.errors import NotFound
    from genloom.retrieval.collections import get_collection

    try:
        with session_scope() as s:
            get_collection(s, "demo")
        return
    except NotFound:
        pass
    from ingest.pipeline import IngestOptions, ingest

    ingest([Path(__file__).resolve().parents[1] / "data" / "sample_docs"], IngestOptions(collection="demo"))


def run(ctx) -> dict:
    from genloom.db.engine import session_scope
    from genloom.generation.backend import GenParams
    from genloom.generation.call import CallRequest, ask
    from genloom.generation.feedback import add_feedback

    _ensure_demo_collection()
    request = CallRequest(
        question=QUESTION, collection="demo", model="extractive", k=5, params=GenParams(max_new_tokens=128), user="demo"
    )
    with session_scope() as s:
        result = ask(s, request)
        check = check_answer(result.answer or "", [c["doc_id"] or "" for c in result.citations])
        feedback_id = None
        if result.status == "ok":
            verdict = "contains" if check["span_present"] else "lacks"
            feedback = add_feedback(
                s,
                result.generation_id,
                score=5 if check["correct"] else 1,
                thumbs=1 if check["correct"] else -1,
                label="demo-check",
                comment=f"automatic check: the answer {verdict} {EXPECTED_SPAN!r}"
                + ("" if check["cites_source"] else f" and does not cite {EXPECTED_SOURCE}"),
                user="demo",
            )
            feedback_id = feedback.id
    return {
        "question": QUESTION,
        "model": result.model,
        "backend_note": BACKEND_NOTE if result.model == "extractive" else None,
        "check": check,
        "answer": result.answer,
        "status": result.status,
        "citations": result.citations,
        "generation_id": result.generation_id,
        "session_id": result.session_id,
        "feedback_id": feedback_id,
        "timings_ms": result.timings_ms,
        "tokens": result.tokens,
    }
