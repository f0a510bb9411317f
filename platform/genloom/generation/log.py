"""Reading the generation log back: one generation with its sources and feedback; a session's turns."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from genloom.crypto import unseal
from genloom.db.models import (
    ChatSession,
    Chunk,
    Collection,
    Document,
    Feedback,
    Generation,
    GenerationSource,
    Prompt,
    PromptTemplate,
)
from genloom.db.queries.generations import generations_page, logged_model_names
from genloom.errors import BadInput, NotFound
from genloom.generation.feedback import feedback_json
from genloom.pii import pseudonym
from genloom.retrieval.locations import format_location, location_fields


def generation_detail(session: Session, generation_id: int) -> dict[str, Any]:
    """Prompt, answer, sources (with each retriever's rank and score) and feedback of one generation."""
    gen = session.get(Generation, generation_id)
    if gen is None:
        raise NotFound(f"no generation {generation_id}")
    prompt = session.get(Prompt, gen.prompt_id)
    assert prompt is not None  # generations.prompt_id is a NOT NULL foreign key
    sources = session.execute(
        sa.select(GenerationSource, Chunk.text, Document.external_id, Document.title, Document.version, Chunk.metadata_)
        .outerjoin(Chunk, Chunk.id == GenerationSource.chunk_id)  # NULL once purged: the tombstone remains
        .outerjoin(Document, Document.id == Chunk.document_id)
        .where(GenerationSource.generation_id == gen.id)
        .order_by(GenerationSource.rank)
    ).all()
    feedback = session.scalars(
        sa.select(Feedback).where(Feedback.generation_id == gen.id).order_by(Feedback.created_at, Feedback.id)
    ).all()
    return {
        "generation_id": gen.id,
        "session_id": prompt.session_id,
        "prompt_id": prompt.id,
        "parent_prompt_id": prompt.parent_id,
        "prompt": unseal(prompt.text, "prompts.text"),
        "template": f"{prompt.template_name}@{prompt.template_version}" if prompt.template_name else None,
        "rendered_prompt": unseal(gen.rendered_prompt, "generations.rendered_prompt"),
        "answer": unseal(gen.output, "generations.output"),
        "status": gen.status,
        "error": gen.error,
        "model": gen.model_name,
        "model_revision": gen.model_revision,
        "model_id": gen.model_id,
        "params": gen.params,
        "timings_ms": {"retrieval": gen.retrieval_ms, "generation": gen.generation_ms, "total": gen.total_ms},
        "tokens": {"input": gen.input_tokens, "output": gen.output_tokens},
        "sources": [
            {
                "n": src.rank,
                "cited": src.cited,
                "doc_id": external_id if src.chunk_id is not None else (src.tombstone or {}).get("external_id"),
                "document_version": version if src.chunk_id is not None else (src.tombstone or {}).get("version"),
                "chunk_id": src.chunk_id,
                "title": title if src.chunk_id is not None else (src.tombstone or {}).get("title"),
                "score": src.score,
                "bm25_rank": src.bm25_rank,
                "bm25_score": src.bm25_score,
                "vector_rank": src.vector_rank,
                "vector_score": src.vector_score,
                "text": text,
                **location_fields(chunk_meta),
                "location": format_location(
                    title if src.chunk_id is not None else (src.tombstone or {}).get("title"),
                    external_id if src.chunk_id is not None else (src.tombstone or {}).get("external_id"),
                    chunk_meta,
                ),
                **({"tombstone": src.tombstone} if src.tombstone else {}),
            }
            for src, text, external_id, title, version, chunk_meta in sources
        ],
        "feedback": [feedback_json(f) for f in feedback],
        "created_at": gen.created_at,
    }


def session_detail(session: Session, session_id: int) -> dict[str, Any]:
    """The conversation's turns in order, each with its answer (or error)."""
    chat = session.get(ChatSession, session_id)
    if chat is None:
        raise NotFound(f"no session {session_id}")
    collection = session.get(Collection, chat.collection_id) if chat.collection_id else None
    rows = session.execute(
        sa.select(Prompt, Generation)
        .outerjoin(Generation, Generation.prompt_id == Prompt.id)
        .where(Prompt.session_id == chat.id)
        .order_by(Prompt.created_at, Prompt.id, Generation.id)
    ).all()
    return {
        "session_id": chat.id,
        "user": chat.user_id,
        "collection": collection.name if collection else None,
        "title": unseal(chat.title, "sessions.title"),
        "created_at": chat.created_at,
        "turns": [
            {
                "prompt_id": p.id,
                "parent_prompt_id": p.parent_id,
                "question": unseal(p.text, "prompts.text"),
                "generation_id": g.id if g else None,
                "answer": unseal(g.output, "generations.output") if g else None,
                "status": g.status if g else None,
                "error": g.error if g else None,
                "model": g.model_name if g else None,
                "created_at": p.created_at,
            }
            for p, g in rows
        ],
    }


# The filters of the trace browser (genloom.ui's Generations page, and anything else that lists the log).
GENERATION_FILTERS = (
    "model",
    "template",
    "collection",
    "user",
    "since",
    "until",
    "min_score",
    "max_score",
    "min_ms",
    "max_ms",
    "has_feedback",
    "abstained",
    "status",
)


def _template(session: Session, ref: str) -> tuple[str, int | None]:
    """`name` matches every version (None); `name@3` or `name@label` the one version it resolves to."""
    from genloom.generation.templates import get_template

    if "@" not in ref:
        return ref, None
    template = get_template(session, ref)
    return template.name, template.version


def list_generations(
    session: Session, *, before: int | None = None, limit: int = 50, **filters: Any
) -> list[dict[str, Any]]:
    """The newest generations first, `limit` of them with an id below `before` (keyset pagination:
    the page after this one starts below the last id shown, so page 1,000 costs what page 1 does).

    Filters (see GENERATION_FILTERS; None or '' means no filter): model, template (name, name@V,
    name@label), collection (name), user, since/until (timestamps), min_score/max_score (mean
    feedback score), min_ms/max_ms (total latency), has_feedback, abstained (finish reason 'abstain'),
    status ('ok'/'error'). Only the filters given become clauses, so the planner sees a plain query.
    """
    unknown = set(filters) - set(GENERATION_FILTERS)
    if unknown:
        raise BadInput(f"unknown generation filter(s): {', '.join(sorted(unknown))}")
    f = {k: v for k, v in filters.items() if v is not None and v != ""}
    rows = generations_page(
        session,
        before=before,
        limit=max(1, min(int(limit), 500)),
        filters=f,
        user_pseudonym=pseudonym(str(f["user"]), "hash") if "user" in f else None,
        template=_template(session, str(f["template"])) if "template" in f else None,
    )
    return [
        row
        | {
            "prompt": unseal(row["prompt"], "prompts.text"),
            "template": f"{row['template_name']}@{row['template_version']}" if row["template_name"] else None,
        }
        for row in rows
    ]


def generation_facets(session: Session) -> dict[str, list[str]]:
    """The values the trace browser offers in its filter menus (small tables only: models, templates, collections)."""
    models = logged_model_names(session)  # a skip scan: one index probe per distinct model
    templates = session.scalars(sa.select(PromptTemplate.name).distinct().order_by(PromptTemplate.name)).all()
    collections = session.scalars(sa.select(Collection.name).order_by(Collection.name)).all()
    return {"models": list(models), "templates": list(templates), "collections": list(collections)}
