"""Named queries of the HTML report (genloom/analytics/report.py): one per figure or table.

Each reads the documented analytics views (analytics/views/*.sql) or the tables behind them, in the
caller's session; the report draws the rows. Parameters: :since (a timestamp, or the epoch for all
time), :n (a row cap), and the ids a section found in an earlier query.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session


def _rows(session: Session, query: str, **params: Any) -> list[dict[str, Any]]:
    return [dict(r._mapping) for r in session.execute(sa.text(query), params)]


_PERIOD_TOTALS_SQL = """
SELECT (SELECT count(*) FROM generations WHERE created_at >= :since) AS generations,
(SELECT count(*) FROM generations WHERE created_at >= :since AND status = 'error') AS errors,
(SELECT count(*) FROM sessions WHERE created_at >= :since) AS sessions,
(SELECT count(*) FROM feedback WHERE created_at >= :since) AS feedback,
(SELECT avg(score)::float8 FROM feedback WHERE created_at >= :since) AS mean_score,
(SELECT count(*) FROM documents WHERE superseded_at IS NULL) AS documents,
(SELECT count(*) FROM datasets) AS datasets,
(SELECT count(*) FROM models) AS models,
(SELECT count(*) FROM runs) AS runs
"""


def period_totals(session: Session, *, since: dt.datetime) -> list[dict[str, Any]]:
    """Counts of the period (since :since) and of the store: the overview's cards."""
    return _rows(session, _PERIOD_TOTALS_SQL, since=since)


_MODEL_DAILY_SQL = """
SELECT day, model_name, generations, errors, feedback, mean_score FROM v_model_daily
WHERE day >= CAST(:since AS date) ORDER BY day, model_name
"""


def model_daily(session: Session, *, since: dt.date) -> list[dict[str, Any]]:
    """Generations, errors and feedback per day and model (v_model_daily) since :since."""
    return _rows(session, _MODEL_DAILY_SQL, since=since)


_MODEL_STATS_SQL = """
SELECT coalesce(model_ref, model_name) AS model, model_revision, generations, error_rate, feedback_rate,
       mean_score, thumbs_up_share, retrieval_ms_p50, generation_ms_p50, total_ms_p50, total_ms_p95, tokens_per_s
FROM v_model_stats ORDER BY generations DESC LIMIT 20
"""


def model_stats(session: Session) -> list[dict[str, Any]]:
    """The 20 most used models' figures (v_model_stats)."""
    return _rows(session, _MODEL_STATS_SQL)


_LATENCIES_SQL = """
SELECT model_name, retrieval_ms, generation_ms, total_ms FROM generations
WHERE created_at >= :since AND status = 'ok' ORDER BY created_at DESC LIMIT :n
"""


def latencies(session: Session, *, since: dt.datetime, n: int) -> list[dict[str, Any]]:
    """Latency parts of the :n newest successful generations since :since."""
    return _rows(session, _LATENCIES_SQL, since=since, n=n)


_CITED_DOCUMENTS_SQL = """
SELECT collection, external_id, document_version, title, citations, retrievals, answers, mean_feedback_score
FROM v_document_citations ORDER BY citations DESC, external_id LIMIT 12
"""


def cited_documents(session: Session) -> list[dict[str, Any]]:
    """The 12 most cited documents (v_document_citations)."""
    return _rows(session, _CITED_DOCUMENTS_SQL)


_NEVER_CITED_DOCUMENTS_SQL = """
SELECT collection, external_id, document_version, title, retrievals FROM v_documents_never_cited
ORDER BY retrievals DESC, collection, external_id LIMIT 20
"""


def never_cited_documents(session: Session) -> list[dict[str, Any]]:
    """20 documents retrieved but never cited, most retrieved first (v_documents_never_cited)."""
    return _rows(session, _NEVER_CITED_DOCUMENTS_SQL)


_NEVER_CITED_COUNT_SQL = "SELECT count(*) AS n FROM v_documents_never_cited"


def never_cited_count(session: Session) -> int:
    """How many documents were retrieved but never cited."""
    return int(_rows(session, _NEVER_CITED_COUNT_SQL)[0]["n"])


_LOSS_RUNS_SQL = """
SELECT r.id, r.status, coalesce(m.name || '@' || m.version, r.name, 'run ' || r.id) AS label
FROM runs r LEFT JOIN models m ON m.id = r.model_id
WHERE r.kind = 'train' AND EXISTS (SELECT 1 FROM metrics mt WHERE mt.run_id = r.id AND mt.step IS NOT NULL
                                   AND mt.name ILIKE '%loss%')
ORDER BY r.started_at DESC LIMIT :n
"""


def loss_runs(session: Session, *, n: int) -> list[dict[str, Any]]:
    """The :n newest training runs that logged a loss per step, with a label."""
    return _rows(session, _LOSS_RUNS_SQL, n=n)


_LOSS_POINTS_SQL = """
SELECT run_id, name, step, value FROM metrics
WHERE run_id = ANY(:ids) AND step IS NOT NULL AND name ILIKE '%loss%' AND item_id IS NULL
ORDER BY run_id, name, step
"""


def loss_points(session: Session, *, ids: list[int]) -> list[dict[str, Any]]:
    """The per-step loss metrics of runs :ids."""
    return _rows(session, _LOSS_POINTS_SQL, ids=ids)


_STORED_SAMPLE_MODELS_SQL = """
SELECT DISTINCT ON (i.model_id) i.model_id, i.run_id, m.name || '@' || m.version AS model_ref,
       m.architecture
FROM items i JOIN models m ON m.id = i.model_id
WHERE i.origin = 'synthetic' AND i.modality = 'image'
ORDER BY i.model_id, i.run_id DESC NULLS LAST, i.id DESC
"""


def stored_sample_models(session: Session) -> list[dict[str, Any]]:
    """Per model, its latest run's stored synthetic image items."""
    return _rows(session, _STORED_SAMPLE_MODELS_SQL)


_SAMPLE_GRID_RUNS_SQL = """
SELECT DISTINCT ON (r.model_id) r.model_id, r.id AS run_id, m.name || '@' || m.version AS model_ref,
       m.architecture, r.summary ->> 'out' AS out
FROM runs r JOIN models m ON m.id = r.model_id
WHERE r.kind = 'sample' AND r.status = 'succeeded' AND r.summary ->> 'out' ILIKE '%.png'
ORDER BY r.model_id, r.started_at DESC, r.id DESC
"""


def sample_grid_runs(session: Session) -> list[dict[str, Any]]:
    """Per model, its latest succeeded sample run that wrote a PNG grid."""
    return _rows(session, _SAMPLE_GRID_RUNS_SQL)


_SYNTHETIC_IMAGES_SQL = """
SELECT payload, shape, dtype, label FROM items
WHERE model_id = :m AND origin = 'synthetic' AND modality = 'image'
  AND run_id IS NOT DISTINCT FROM :r ORDER BY id LIMIT :n
"""


def synthetic_images(session: Session, *, m: int, r: int | None, n: int) -> list[dict[str, Any]]:
    """Up to :n synthetic images of model :m from run :r."""
    return _rows(session, _SYNTHETIC_IMAGES_SQL, m=m, r=r, n=n)


_LEADERBOARDS_SQL = """
SELECT dataset_ref, metric, rank, model_ref, value, higher_is_better, run_id
FROM v_leaderboard ORDER BY dataset_ref, metric, rank, model_ref
"""


def leaderboards(session: Session) -> list[dict[str, Any]]:
    """Every leaderboard row (v_leaderboard)."""
    return _rows(session, _LEADERBOARDS_SQL)


_DATASET_VERSIONS_SQL = """
SELECT ref, real, synthetic, augmented, items, parent, models_sampled_in
FROM v_dataset_versions ORDER BY dataset, version LIMIT 40
"""


def dataset_versions(session: Session) -> list[dict[str, Any]]:
    """The first 40 dataset versions with real/synthetic counts (v_dataset_versions)."""
    return _rows(session, _DATASET_VERSIONS_SQL)


_DATABASE_NAME_SQL = "SELECT current_database() AS name"


def database_name(session: Session) -> str:
    """The database's name (the page's title)."""
    return str(_rows(session, _DATABASE_NAME_SQL)[0]["name"])
