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
from genloom.errors import NotFound
from genloom.generation.feedback import feedback_json
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
