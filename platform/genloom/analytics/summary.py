"""The one-screen analytics summary: what `genloom demo` ends with.

Every figure comes from the analytics views, so the summary doubles as a smoke test
of them, and it times each view (server-side execution, EXPLAIN ANALYZE) so the
numbers a person sees say how the views cope with the data at hand. The CLI draws it
(cli/summary_render.py).
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from genloom.analytics.views import VIEWS
from genloom.errors import BadInput


def _rows(session: Session, query: str, **params: Any) -> list[dict[str, Any]]:
    return [dict(r._mapping) for r in session.execute(sa.text(query), params)]


def time_view(session: Session, view: str, *, timeout_ms: int = 10_000) -> float | None:
    """Server-side planning + execution time of `SELECT * FROM view`, in ms (None on timeout)."""
    if view not in VIEWS:
        raise ValueError(f"unknown view {view}")
    try:
        with session.begin_nested():
            session.execute(sa.text(f"SET LOCAL statement_timeout = {int(timeout_ms)}"))
            plan = session.execute(sa.text(f"EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) SELECT * FROM {view}")).scalar()
            session.execute(sa.text("SET LOCAL statement_timeout = 0"))
    except sa.exc.OperationalError:
        return None
    if plan is None:
        return None
    plan = plan if isinstance(plan, list) else json.loads(plan)
    return round(plan[0]["Planning Time"] + plan[0]["Execution Time"], 2)


def collect_summary(session: Session, *, time_views: bool = True) -> dict[str, Any]:
    totals = _rows(
        session,
        """
        SELECT (SELECT count(*) FROM generations) AS generations,
               (SELECT count(*) FROM generations WHERE status = 'error') AS errors,
               (SELECT count(*) FROM sessions) AS sessions,
               (SELECT count(*) FROM feedback) AS feedback,
               (SELECT avg(score)::float8 FROM feedback) AS mean_score,
               (SELECT count(*) FROM documents WHERE superseded_at IS NULL) AS documents,
               (SELECT count(*) FROM v_documents_never_cited) AS documents_never_cited,
               (SELECT count(*) FROM runs) AS runs,
               (SELECT count(*) FROM models) AS models,
               (SELECT count(*) FROM datasets) AS datasets
        """,
    )[0]
    models = _rows(
        session,
        """
        SELECT coalesce(model_ref, model_name) AS model, generations, error_rate, feedback_rate, mean_score,
               thumbs_up_share, total_ms_p50, total_ms_p95, tokens_per_s
        FROM v_model_stats ORDER BY generations DESC, model_name LIMIT 5
        """,
    )
    documents = _rows(
        session,
        """
        SELECT collection, external_id, title, citations, answers, mean_feedback_score
        FROM v_document_citations ORDER BY citations DESC, external_id LIMIT 3
        """,
    )
    # The latest version of each dataset.
    datasets = _rows(
        session,
        """
        SELECT DISTINCT ON (dataset) ref, items, real, synthetic, models_sampled_in
        FROM v_dataset_versions ORDER BY dataset, version DESC
        """,
    )
    runs = _rows(
        session,
        "SELECT kind, status, count(*) AS runs FROM runs GROUP BY kind, status ORDER BY kind, status",
    )
    leaders = _rows(
        session,
        """
        SELECT dataset_ref, metric, model_ref, value, higher_is_better
        FROM v_leaderboard WHERE rank = 1 ORDER BY dataset_ref, metric LIMIT 6
        """,
    )
    view_ms = {name: time_view(session, name) for name in VIEWS} if time_views else {}
    return {
        "totals": totals,
        "models": models,
        "top_documents": documents,
        "datasets": datasets,
        "runs": runs,
        "leaders": leaders,
        "view_ms": view_ms,
    }


def view_page(
    session: Session, view: str, *, key: str, after: Any = None, limit: int = 100, descending: bool = True
) -> list[dict[str, Any]]:
    """A page of one documented view ordered by its column `key`, past `after` (keyset): the UI's Analytics tables."""
    import re

    from genloom.analytics.views import ORDER

    if view not in ORDER:
        raise BadInput(f"unknown view {view!r}; documented views: {', '.join(ORDER)}")
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", key):
        raise BadInput(f"not a column name: {key!r}")
    op, direction = ("<", "DESC") if descending else (">", "ASC")
    where = f"WHERE {key} {op} :after" if after not in (None, "") else ""
    return _rows(
        session, f"SELECT * FROM {view} {where} ORDER BY {key} {direction} LIMIT :limit", after=after, limit=limit
    )
