"""Named queries of the analytics summary (genloom/analytics/summary.py) and the UI's view pages.

They read the documented views (analytics/views/*.sql: the SQL interface docs/analytics.md
teaches) and a few table counts, in the caller's session. View names come from the package's
own list (genloom.analytics.views); the caller checks them before they reach SQL.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session


def _rows(session: Session, query: str, **params: Any) -> list[dict[str, Any]]:
    return [dict(r._mapping) for r in session.execute(sa.text(query), params)]


_TOTALS_SQL = """
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
"""

_TOP_MODELS_SQL = """
SELECT coalesce(model_ref, model_name) AS model, generations, error_rate, feedback_rate, mean_score,
       thumbs_up_share, total_ms_p50, total_ms_p95, tokens_per_s
FROM v_model_stats ORDER BY generations DESC, model_name LIMIT 5
"""

_TOP_DOCUMENTS_SQL = """
SELECT collection, external_id, title, citations, answers, mean_feedback_score
FROM v_document_citations ORDER BY citations DESC, external_id LIMIT 3
"""

# The latest version of each dataset.
_LATEST_DATASETS_SQL = """
SELECT DISTINCT ON (dataset) ref, items, real, synthetic, models_sampled_in
FROM v_dataset_versions ORDER BY dataset, version DESC
"""

_RUNS_SQL = "SELECT kind, status, count(*) AS runs FROM runs GROUP BY kind, status ORDER BY kind, status"

_LEADERS_SQL = """
SELECT dataset_ref, metric, model_ref, value, higher_is_better
FROM v_leaderboard WHERE rank = 1 ORDER BY dataset_ref, metric LIMIT 6
"""


# The summary's figures: name → (query, one row?). totals: one row of counts; models: top 5 by
# generations; top_documents: 3 most cited; datasets: latest version of each; runs: per kind and
# status; leaders: rank 1 per metric.
SUMMARY_FIGURES: dict[str, tuple[str, bool]] = {
    "totals": (_TOTALS_SQL, True),
    "models": (_TOP_MODELS_SQL, False),
    "top_documents": (_TOP_DOCUMENTS_SQL, False),
    "datasets": (_LATEST_DATASETS_SQL, False),
    "runs": (_RUNS_SQL, False),
    "leaders": (_LEADERS_SQL, False),
}


def summary_figure(session: Session, name: str) -> Any:
    """One figure of the summary (SUMMARY_FIGURES), in a savepoint of its own: a statement the
    server refuses (a Citus planner limit, say) rolls back alone and the session stays usable."""
    query, one_row = SUMMARY_FIGURES[name]
    with session.begin_nested():
        rows = _rows(session, query)
    return rows[0] if one_row else rows


def explain_view(session: Session, view: str, *, timeout_ms: int) -> Any:
    """EXPLAIN ANALYZE's JSON plan of `SELECT * FROM view` (it runs the query), under a statement
    timeout for this savepoint only; raises sqlalchemy's OperationalError on timeout (and another
    DBAPIError when the server refuses the view); either way only the savepoint is rolled back."""
    with session.begin_nested():
        session.execute(sa.text(f"SET LOCAL statement_timeout = {int(timeout_ms)}"))
        plan = session.execute(sa.text(f"EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) SELECT * FROM {view}")).scalar()
        session.execute(sa.text("SET LOCAL statement_timeout = 0"))
    return plan if plan is None or isinstance(plan, list) else json.loads(plan)


def view_rows(
    session: Session, view: str, *, key: str, after: Any = None, limit: int = 100, descending: bool = True
) -> list[dict[str, Any]]:
    """A page of VIEW ordered by its column KEY past AFTER (keyset). The caller has checked VIEW
    against the documented views and KEY against a column-name pattern."""
    op, direction = ("<", "DESC") if descending else (">", "ASC")
    where = f"WHERE {key} {op} :after" if after not in (None, "") else ""
    return _rows(
        session, f"SELECT * FROM {view} {where} ORDER BY {key} {direction} LIMIT :limit", after=after, limit=limit
    )
