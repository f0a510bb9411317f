"""The one-screen analytics summary: what `genloom demo` ends with.

Every figure comes from the analytics views, so the summary doubles as a smoke test
of them, and it times each view (server-side execution, EXPLAIN ANALYZE) so the
numbers a person sees say how the views cope with the data at hand. The CLI draws it
(cli/summary_render.py).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from genloom.analytics.views import VIEWS
from genloom.db.queries import analytics as queries
from genloom.errors import BadInput


def time_view(session: Session, view: str, *, timeout_ms: int = 10_000) -> float | None:
    """Server-side planning + execution time of `SELECT * FROM view`, in ms (None on timeout)."""
    if view not in VIEWS:
        raise ValueError(f"unknown view {view}")
    try:
        plan = queries.explain_view(session, view, timeout_ms=timeout_ms)
    except sa.exc.OperationalError:
        return None
    if plan is None:
        return None
    return round(plan[0]["Planning Time"] + plan[0]["Execution Time"], 2)


def collect_summary(session: Session, *, time_views: bool = True) -> dict[str, Any]:
    figures = queries.summary_figures(session)
    view_ms = {name: time_view(session, name) for name in VIEWS} if time_views else {}
    return figures | {"view_ms": view_ms}


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
