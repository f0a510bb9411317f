"""Feedback on a generation: a 1–5 score and/or thumbs up/down, with a label and comment."""

from __future__ import annotations

from sqlalchemy.orm import Session

from genloom.crypto import seal, unseal
from genloom.db.models import Feedback, Generation
from genloom.errors import BadInput, NotFound
from genloom.pii import log_mode, pseudonym


def add_feedback(
    session: Session,
    generation_id: int,
    *,
    score: int | None = None,
    thumbs: int | None = None,
    label: str | None = None,
    comment: str | None = None,
    user: str | None = None,
) -> Feedback:
    if score is None and thumbs is None:
        raise BadInput("feedback needs a score (1..5) or a thumb (up or down)")
    if score is not None and not (isinstance(score, int) and 1 <= score <= 5):
        raise BadInput(f"feedback score must be a whole number from 1 to 5 (got {score})")
    if thumbs is not None and thumbs not in (-1, 1):
        raise BadInput(f"thumbs must be +1 (up) or -1 (down) (got {thumbs})")
    generation = session.get(Generation, generation_id)
    if generation is None:
        raise NotFound(f"no generation {generation_id}")
    mode = _pii_mode(session, generation.prompt_id)
    row = Feedback(
        generation_id=generation_id,
        generation_created_at=generation.created_at,  # feedback lives in its generation's month partition
        user_id=pseudonym(user, mode),
        score=score,
        thumbs=thumbs,
        label=pseudonym(label, mode),
        comment=seal(comment, "feedback.comment"),
    )
    session.add(row)
    session.flush()
    return row


def _pii_mode(session: Session, prompt_id: int) -> str:
    """The log's PII mode for this generation: its collection's, else the server's (genloom.pii.log_mode)."""
    from genloom.db.queries.generations import prompt_collection_pii_mode

    return log_mode(prompt_collection_pii_mode(session, prompt_id))


def feedback_json(row: Feedback) -> dict:
    return {
        "feedback_id": row.id,
        "generation_id": row.generation_id,
        "score": row.score,
        "thumbs": row.thumbs,
        "label": row.label,
        "comment": unseal(row.comment, "feedback.comment"),
        "user": row.user_id,
        "created_at": row.created_at,
    }
