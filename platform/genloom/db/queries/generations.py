"""Named queries over the generation log (prompts, generations, their sources and feedback).

Each runs in the caller's session and transaction. `generations` is partitioned by created_at,
so a GROUP BY over a generation groups by its key (id, created_at).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

# A generation's rating: its best feedback score, a thumbs-up counting as 5 and a thumbs-down as 1.
BEST_SCORE = "max(coalesce(f.score, CASE f.thumbs WHEN 1 THEN 5 WHEN -1 THEN 1 END))"

# --------------------------------------------------------------------------- the trace browser

# One clause per simple filter of the trace browser, with its parameter of the same name.
_FILTER_CLAUSES = {
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
_HAS_FEEDBACK = "EXISTS (SELECT 1 FROM feedback f WHERE f.generation_id = g.id)"
_ABSTAINED = "coalesce(g.params->>'finish_reason' = 'abstain', false)"

_PAGE_SQL = """
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
WHERE {where}
ORDER BY g.id DESC
LIMIT :limit
"""


def generations_page(
    session: Session,
    *,
    before: int | None,
    limit: int,
    filters: dict[str, Any],
    user_pseudonym: str | None = None,
    template: tuple[str, int | None] | None = None,
) -> list[dict[str, Any]]:
    """Newest first, LIMIT generations with an id below BEFORE (keyset), one row per generation.

    FILTERS holds the simple filters (keys of _FILTER_CLAUSES) plus has_feedback and abstained
    (booleans); TEMPLATE is (name, version), version None for every version. Only the filters given
    become clauses, so the planner sees a plain query.
    """
    params: dict[str, Any] = {"limit": limit}
    where = ["TRUE"]
    if before is not None:
        where.append("g.id < :before")
        params["before"] = before
    for name, clause in _FILTER_CLAUSES.items():
        if name in filters:
            where.append(clause)
            params[name] = filters[name]
    if "user" in filters:
        params["user_pseudonym"] = user_pseudonym
    if template is not None:
        params["tname"] = template[0]
        where.append("p.template_name = :tname")
        if template[1] is not None:
            params["tversion"] = template[1]
            where.append("p.template_version = :tversion")
    if "has_feedback" in filters:
        where.append(_HAS_FEEDBACK if filters["has_feedback"] else f"NOT {_HAS_FEEDBACK}")
    if "abstained" in filters:
        where.append(_ABSTAINED if filters["abstained"] else f"NOT {_ABSTAINED}")
    rows = session.execute(sa.text(_PAGE_SQL.format(where=" AND ".join(where))), params).mappings()
    return [dict(r) for r in rows]


# A skip scan over ix_generations_model: one index probe per distinct model, not a pass over the log.
_MODELS_SQL = """
WITH RECURSIVE m AS (
    SELECT min(model_name) AS v FROM generations
    UNION ALL
    SELECT (SELECT min(model_name) FROM generations WHERE model_name > m.v) FROM m WHERE m.v IS NOT NULL
)
SELECT v FROM m WHERE v IS NOT NULL LIMIT 200
"""


def logged_model_names(session: Session) -> list[str]:
    """The distinct model names in the log (at most 200), in order."""
    return list(session.scalars(sa.text(_MODELS_SQL)))


# --------------------------------------------------------------------------- PII mode


def prompt_collection_pii_mode(session: Session, prompt_id: int) -> str | None:
    """The PII mode of the collection the prompt's session asked (None: no collection, or none set)."""
    return session.scalar(
        sa.text(
            "SELECT c.pii_mode FROM prompts p JOIN sessions s ON s.id = p.session_id "
            "JOIN collections c ON c.id = s.collection_id WHERE p.id = :p"
        ),
        {"p": prompt_id},
    )


# --------------------------------------------------------------------------- rated generations → datasets

_RATED_SQL = f"""
SELECT g.id AS generation_id, g.prompt_id, p.session_id, p.text AS question, g.output AS answer,
       g.model_name, {BEST_SCORE} AS score
FROM generations g
JOIN prompts p ON p.id = g.prompt_id
JOIN feedback f ON f.generation_id = g.id
WHERE g.status = 'ok' AND g.output IS NOT NULL
GROUP BY g.id, g.created_at, p.id  -- (id, created_at): the partitioned key
HAVING {BEST_SCORE} >= :min
ORDER BY g.id
"""

_SOURCES_SQL = """
SELECT gs.generation_id, gs.rank, c.text, c.metadata, d.title, d.external_id, gs.tombstone
FROM generation_sources gs
LEFT JOIN chunks c ON c.id = gs.chunk_id
LEFT JOIN documents d ON d.id = c.document_id
WHERE gs.generation_id = ANY(:ids)
ORDER BY gs.generation_id, gs.rank
"""

# Rated generations whose sources are in collection :c, with "rank:external id" per source.
_RATED_OVER_COLLECTION_SQL = f"""
SELECT g.id, p.text AS question, g.output, {BEST_SCORE} AS score,
       array_agg(DISTINCT gs.rank || ':' || d.external_id) AS sources
FROM generations g
JOIN prompts p ON p.id = g.prompt_id
JOIN feedback f ON f.generation_id = g.id
JOIN generation_sources gs ON gs.generation_id = g.id
JOIN chunks c ON c.id = gs.chunk_id
JOIN documents d ON d.id = c.document_id AND d.collection_id = :c
WHERE g.status = 'ok'
GROUP BY g.id, g.created_at, p.id  -- (id, created_at): the partitioned key
ORDER BY g.id
"""


def rated_generations(session: Session, min_score: int) -> list[sa.RowMapping]:
    """Successful generations whose best score is >= MIN_SCORE, with their question and answer, by id."""
    return list(session.execute(sa.text(_RATED_SQL), {"min": min_score}).mappings())


def generation_sources(session: Session, generation_ids: list[int]) -> list[sa.RowMapping]:
    """The sources of those generations in rank order, with chunk text and document (NULL once purged)."""
    return list(session.execute(sa.text(_SOURCES_SQL), {"ids": generation_ids}).mappings())


def rated_generations_over(session: Session, collection_id: int) -> list[sa.RowMapping]:
    """Every rated successful generation with sources in the collection: id, question, output, score, sources."""
    return list(session.execute(sa.text(_RATED_OVER_COLLECTION_SQL), {"c": collection_id}).mappings())
