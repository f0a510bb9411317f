"""Named queries of retention (genloom/analytics/retention.py): what a purge at a cut-off deletes.

Each runs in the caller's session; the tenant policy limits it to the caller's tenant. The caller
runs the deletes batch by batch, a transaction each, so a big purge holds no huge lock.
"""

from __future__ import annotations

import datetime as dt
from typing import cast

import sqlalchemy as sa
from sqlalchemy.orm import Session

# A prompt survives while any of its generations does; a session while any of its prompts
# does. Deleting a prompt or session cascades, so these conditions protect newer rows.
_SURVIVING_GENERATION = "EXISTS (SELECT 1 FROM generations g WHERE g.prompt_id = p.id AND g.created_at >= :cutoff)"
_EXPIRED_PROMPTS = f"""
    FROM prompts p
    WHERE p.created_at < :cutoff AND NOT {_SURVIVING_GENERATION}
"""
_EXPIRED_SESSIONS = f"""
    FROM sessions s
    WHERE s.created_at < :cutoff
      AND NOT EXISTS (SELECT 1 FROM prompts p WHERE p.session_id = s.id
                      AND (p.created_at >= :cutoff OR {_SURVIVING_GENERATION}))
"""

# What a purge at :cutoff would delete, per table (feedback goes with its generation).
_EXPIRED_COUNTS_SQL = f"""
SELECT (SELECT count(*) FROM generations WHERE created_at < :cutoff) AS generations,
       (SELECT count(*) FROM feedback f JOIN generations g ON g.id = f.generation_id
        WHERE g.created_at < :cutoff) AS feedback,
       (SELECT count(*) {_EXPIRED_PROMPTS}) AS prompts,
       (SELECT count(*) {_EXPIRED_SESSIONS}) AS sessions
"""

# One batch of :n per table. Generations go oldest first (created_at follows id closely),
# through the created_at index; their sources and feedback cascade.
_DELETE_BATCH_SQL = {
    "generations": (
        "DELETE FROM generations WHERE id IN ("
        " SELECT id FROM generations WHERE created_at < :cutoff ORDER BY created_at LIMIT :n)"
    ),
    "prompts": f"DELETE FROM prompts WHERE id IN (SELECT p.id {_EXPIRED_PROMPTS} LIMIT :n)",
    "sessions": f"DELETE FROM sessions WHERE id IN (SELECT s.id {_EXPIRED_SESSIONS} LIMIT :n)",
}
RETENTION_TABLES = tuple(_DELETE_BATCH_SQL)  # in the order a purge deletes them


def expired_counts(session: Session, cutoff: dt.datetime) -> dict[str, int]:
    """Rows a purge at CUTOFF would delete: generations, feedback, prompts, sessions."""
    row = session.execute(sa.text(_EXPIRED_COUNTS_SQL), {"cutoff": cutoff}).one()
    return {k: int(v or 0) for k, v in row._mapping.items()}


def delete_expired_batch(session: Session, table: str, cutoff: dt.datetime, batch_size: int) -> int:
    """Delete up to BATCH_SIZE expired rows of TABLE (one of RETENTION_TABLES); how many went."""
    result = session.execute(sa.text(_DELETE_BATCH_SQL[table]), {"cutoff": cutoff, "n": batch_size})
    return cast(sa.CursorResult, result).rowcount  # a DELETE's result is a cursor result
