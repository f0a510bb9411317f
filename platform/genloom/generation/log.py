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
)
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


def _template_clause(session: Session, ref: str, params: dict[str, Any]) -> str:
    """`name` matches every version; `name@3` or `name@label` the one version it resolves to."""
    from genloom.generation.templates import get_template

    if "@" not in ref:
        params["tname"] = ref
        return "p.template_name = :tname"
    template = get_template(session, ref)
    params["tname"], params["tversion"] = template.name, template.version
    return "p.template_name = :tname AND p.template_version = :tversion"


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
    params: dict[str, Any] = {"limit": max(1, min(int(limit), 500))}
    where = ["TRUE"]
    if before is not None:
        where.append("g.id < :before")
        params["before"] = before
    simple = {
        "model": "g.model_name = :model",
        "user": "p.user_id IN (:user, :user_pseudonym)",  # clear (pii off) or keyed hash (genloom.pii.pseudonym)
        "collection": "s.collection_id = (SELECT id FROM collections WHERE name = :collection)",
        "since": "g.created_at >= CAST(:since AS timestamptz)",
        "until": "g.created_at < CAST(:until AS timestamptz)",
        "min_ms": "g.total_ms >= :min_ms",
        "max_ms": "g.total_ms <= :max_ms",
        "status": "g.status = :status",
        "min_score": "(SELECT avg(score) FROM feedback f WHERE f.generation_id = g.id) >= :min_score",
        "max_score": "(SELECT avg(score) FROM feedback f WHERE f.generation_id = g.id) <= :max_score",
    }
    for name, clause in simple.items():
        if name in f:
            where.append(clause)
            params[name] = f[name]
    if "user" in f:
        params["user_pseudonym"] = pseudonym(str(f["user"]), "hash")
    if "template" in f:
        where.append(_template_clause(session, str(f["template"]), params))
    if "has_feedback" in f:
        exists = "EXISTS (SELECT 1 FROM feedback f WHERE f.generation_id = g.id)"
        where.append(exists if f["has_feedback"] else f"NOT {exists}")
    if "abstained" in f:
        where.append(("" if f["abstained"] else "NOT ") + "coalesce(g.params->>'finish_reason' = 'abstain', false)")
    rows = session.execute(
        sa.text(
            f"""
            SELECT g.id, g.created_at, g.model_name AS model, g.status, g.total_ms, g.input_tokens, g.output_tokens,
                   g.params->>'finish_reason' AS finish_reason, p.text AS prompt, p.user_id AS user,
                   p.template_name, p.template_version, c.name AS collection,
                   fb.feedback, fb.mean_score, fb.thumbs
            FROM generations g
            JOIN prompts p ON p.id = g.prompt_id
            JOIN sessions s ON s.id = p.session_id
            LEFT JOIN collections c ON c.id = s.collection_id
            LEFT JOIN LATERAL (
                SELECT count(*) AS feedback, avg(f.score)::float8 AS mean_score, sum(f.thumbs) AS thumbs
                FROM feedback f WHERE f.generation_id = g.id
            ) fb ON true
            WHERE {" AND ".join(where)}
            ORDER BY g.id DESC
            LIMIT :limit
            """
        ),
        params,
    ).mappings()
    return [
        dict(row)
        | {
            "prompt": unseal(row["prompt"], "prompts.text"),
            "template": f"{row['template_name']}@{row['template_version']}" if row["template_name"] else None,
        }
        for row in rows
    ]


def generation_facets(session: Session) -> dict[str, list[str]]:
    """The values the trace browser offers in its filter menus (small tables only: models, templates, collections)."""
    # A skip scan over ix_generations_model: one index probe per distinct model, not a pass over the log.
    models = session.scalars(
        sa.text(
            """
            WITH RECURSIVE m AS (
                SELECT min(model_name) AS v FROM generations
                UNION ALL
                SELECT (SELECT min(model_name) FROM generations WHERE model_name > m.v) FROM m WHERE m.v IS NOT NULL
            )
            SELECT v FROM m WHERE v IS NOT NULL LIMIT 200
            """
        )
    ).all()
    templates = session.scalars(sa.text("SELECT DISTINCT name FROM prompt_templates ORDER BY 1")).all()
    collections = session.scalars(sa.text("SELECT name FROM collections ORDER BY 1")).all()
    return {"models": list(models), "templates": list(templates), "collections": list(collections)}
