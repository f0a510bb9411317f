"""The one-screen analytics summary: what `genloom demo` ends with.

Every figure comes from the analytics views, so the summary doubles as a smoke test
of them, and it times each view (server-side execution, EXPLAIN ANALYZE) so the
numbers a person sees say how the views cope with the data at hand. The CLI draws it
(cli/summary_render.py).

Each figure and each timing runs in a savepoint of its own: one the server refuses (a view a
Citus cluster cannot plan, say) is reported under `errors` with the server's message, and the
others are still computed in the same, still usable, session.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from genloom.analytics.views import VIEWS
from genloom.db.queries import analytics as queries
from genloom.errors import BadInput, one_line


def time_view(session: Session, view: str, *, timeout_ms: int = 10_000) -> float | None:
    """Server-side planning + execution time of `SELECT * FROM view`, in ms (None on timeout).

    Any other refusal by the server propagates as sqlalchemy's DBAPIError (collect_summary reports it)."""
    if view not in VIEWS:
        raise ValueError(f"unknown view {view}")
    try:
        plan = queries.explain_view(session, view, timeout_ms=timeout_ms)
    except sa.exc.OperationalError:
        return None
    if plan is None:
        return None
    return round(plan[0]["Planning Time"] + plan[0]["Execution Time"], 2)


def _refusal(exc: sa.exc.DBAPIError) -> str:
    """The server's message, first line only (no SQL, no parameters)."""
    text = str(exc.orig or exc).strip()
    return one_line(text.splitlines()[0] if text else type(exc.orig).__name__)


def collect_summary(session: Session, *, time_views: bool = True) -> dict[str, Any]:
    """The figures (totals, models, top_documents, datasets, runs, leaders), view_ms, and errors:
    {figure or view: the server's message} for each one that failed (its value is then None)."""
    data: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name in queries.SUMMARY_FIGURES:
        try:
            data[name] = queries.summary_figure(session, name)
        except sa.exc.DBAPIError as exc:
            data[name], errors[name] = None, _refusal(exc)
    view_ms: dict[str, float | None] = {}
    for name in VIEWS if time_views else ():
        try:
            view_ms[name] = time_view(session, name)
        except sa.exc.DBAPIError as exc:
            view_ms[name], errors[name] = None, _refusal(exc)
    return data | {"view_ms": view_ms, "errors": errors}


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
    return queries.view_rows(session, view, key=key, after=after, limit=limit, descending=descending)
