"""Demo step 3: a grounded answer with citations from the `demo` collection, logged with feedback."""

from __future__ import annotations

from pathlib import Path

TITLE = "generation: a grounded answer with citations (extractive backend), logged with feedback"

QUESTION = "How does genloom combine keyword search and vector search?"


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
        if result.status == "ok":
            feedback = add_feedback(s, result.generation_id, score=5, thumbs=1, label="demo", user="demo")
            feedback_id = feedback.id
        else:
            feedback_id = None
    return {
        "question": QUESTION,
        "answer": result.answer,
        "status": result.status,
        "citations": result.citations,
        "generation_id": result.generation_id,
        "session_id": result.session_id,
        "feedback_id": feedback_id,
        "timings_ms": result.timings_ms,
        "tokens": result.tokens,
    }
