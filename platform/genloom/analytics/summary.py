"""The one-screen analytics summary: what `genloom demo` ends with.

Every figure comes from the analytics views, so the summary doubles as a smoke test
of them, and it times each view (server-side execution, EXPLAIN ANALYZE) so the
numbers a person sees say how the views cope with the data at hand.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from genloom.analytics.views import VIEWS


def _rows(session: Session, query: str, **params: Any) -> list[dict[str, Any]]:
    return [dict(r._mapping) for r in session.execute(sa.text(query), params)]


def time_view(session: Session, view: str, *, timeout_ms: int = 10_000) -> float | None:
    """Server-side planning + execution time of `SELECT * FROM view`, in ms (None on timeout)."""
    if view not in VIEWS:
        raise ValueError(f"unknown view {view}")
    try:
        with session.begin_nested():
            session.execute(sa.text(f"SET LOCAL statement_timeout = {int(timeout_ms)}"))
            plan = session.execute(
                sa.text(f"EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) SELECT * FROM {view}")
            ).scalar()
            session.execute(sa.text("SET LOCAL statement_timeout = 0"))
    except sa.exc.OperationalError:
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


def _fmt(value: Any, spec: str = ".3g", none: str = "–") -> str:
    if value is None:
        return none
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


def render_summary(data: dict[str, Any], console) -> None:
    """Rich rendering that fits one screen (about 40 lines at 100 columns)."""
    from rich.columns import Columns
    from rich.panel import Panel
    from rich.table import Table

    t = data["totals"]
    error_rate = t["errors"] / t["generations"] if t["generations"] else None
    headline = (
        f"[bold]{t['generations']}[/bold] generations in [bold]{t['sessions']}[/bold] sessions · "
        f"errors {_fmt(error_rate, '.1%')} · [bold]{t['feedback']}[/bold] feedback, mean score {_fmt(t['mean_score'], '.2f')} · "
        f"{t['documents']} documents ({t['documents_never_cited']} never cited) · "
        f"{t['datasets']} datasets · {t['models']} models · {t['runs']} runs"
    )
    console.print(Panel(headline, title="genloom analytics", expand=False))

    if data["models"]:
        table = Table(title="per model (v_model_stats)", header_style="bold cyan", title_justify="left")
        for name in ("model", "gens", "err", "rated", "score", "up", "p50 ms", "p95 ms", "tok/s"):
            if name == "model":
                table.add_column(name, min_width=12, overflow="fold")
            else:
                table.add_column(name, justify="right")
        for m in data["models"]:
            table.add_row(
                m["model"], str(m["generations"]), _fmt(m["error_rate"], ".1%"), _fmt(m["feedback_rate"], ".0%"),
                _fmt(m["mean_score"], ".2f"), _fmt(m["thumbs_up_share"], ".0%"), _fmt(m["total_ms_p50"], ".0f"),
                _fmt(m["total_ms_p95"], ".0f"), _fmt(m["tokens_per_s"], ".0f"),
            )
        console.print(table)
    else:
        console.print("[dim]no generations yet: `genloom ask \"…\" --collection demo` logs one[/dim]")

    side = []
    if data["top_documents"]:
        docs = Table(title="most cited documents", header_style="bold cyan", title_justify="left")
        for name in ("document", "cited", "score"):
            docs.add_column(name, justify="left" if name == "document" else "right")
        for d in data["top_documents"]:
            docs.add_row(f"{d['collection']}/{(d['title'] or d['external_id'])[:28]}", str(d["citations"]),
                         _fmt(d["mean_feedback_score"], ".2f"))
        side.append(docs)
    if data["datasets"]:
        ds = Table(title="datasets (latest version)", header_style="bold cyan", title_justify="left")
        for name in ("dataset", "real", "synthetic"):
            ds.add_column(name, justify="left" if name == "dataset" else "right")
        for d in data["datasets"][:6]:
            ds.add_row(d["ref"], str(d["real"]), str(d["synthetic"]))
        side.append(ds)
    if data["leaders"]:
        lb = Table(title="leaders (v_leaderboard)", header_style="bold cyan", title_justify="left")
        for name in ("dataset · metric", "model", "value"):
            lb.add_column(name, justify="right" if name == "value" else "left")
        for r in data["leaders"]:
            arrow = "↑" if r["higher_is_better"] else "↓"
            lb.add_row(f"{r['dataset_ref']} · {r['metric']} {arrow}", r["model_ref"], _fmt(r["value"], ".4g"))
        side.append(lb)
    if side:
        console.print(Columns(side, padding=(0, 3)))
    if data["runs"]:
        console.print("runs: " + ", ".join(f"{r['kind']} {r['status']} ×{r['runs']}" for r in data["runs"]))
    if data["view_ms"]:
        parts = [f"{name.removeprefix('v_')} {_fmt(ms, '.1f', 'timeout')}" for name, ms in data["view_ms"].items()]
        console.print("[dim]view latency (ms, server-side): " + " · ".join(parts) + "[/dim]")
