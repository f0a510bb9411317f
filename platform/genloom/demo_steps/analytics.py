"""Demo step 7 (last): the one-screen analytics summary, and the HTML report in ctx.out_dir."""

from __future__ import annotations

from genloom.analytics.report import build_report
from genloom.analytics.summary import collect_summary
from genloom.db.engine import session_scope

TITLE = "analytics: SQL views over everything above, genloom sql, the HTML report"


def run(ctx) -> dict:
    # Read-only over what the earlier steps wrote; rewriting the report makes re-runs safe.
    with session_scope() as session:
        summary = collect_summary(session)
        report = build_report(session)
    path = ctx.out_dir / "report.html"
    path.write_text(report.html, encoding="utf-8")
    return {
        "report": str(path),
        "plots": len(report.plots),
        "sections_without_data": sorted(report.missing),
        "summary": summary,
    }
