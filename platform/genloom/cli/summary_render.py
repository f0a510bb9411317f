"""How the CLI draws the analytics summary (`genloom analytics summary`, the end of `genloom demo`).

The figures come from genloom.analytics.summary.collect_summary; this module only renders them.
"""

from __future__ import annotations

from typing import Any

from rich.columns import Columns
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table


def _fmt(value: Any, spec: str = ".3g", none: str = "–") -> str:
    if value is None:
        return none
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


def _headline(t: dict[str, Any], console) -> None:
    error_rate = t["errors"] / t["generations"] if t["generations"] else None
    headline = (
        f"[bold]{t['generations']}[/bold] generations in [bold]{t['sessions']}[/bold] sessions · "
        f"errors {_fmt(error_rate, '.1%')} · [bold]{t['feedback']}[/bold] feedback, mean score {_fmt(t['mean_score'], '.2f')} · "
        f"{t['documents']} documents ({t['documents_never_cited']} never cited) · "
        f"{t['datasets']} datasets · {t['models']} models · {t['runs']} runs"
    )
    console.print(Panel(headline, title="genloom analytics", expand=False))


def render_summary(data: dict[str, Any], console) -> None:
    """Rich rendering that fits one screen (about 40 lines at 100 columns); a figure or view that
    failed is one red line with the server's message (data["errors"])."""
    errors = data.get("errors", {})
    for name, message in errors.items():
        if not name.startswith("v_"):
            console.print(f"[red]{name}: failed: {escape(message)}[/red]")
    if data["totals"] is not None:
        _headline(data["totals"], console)

    if data["models"]:
        table = Table(title="per model (v_model_stats)", header_style="bold cyan", title_justify="left")
        for name in ("model", "gens", "err", "rated", "score", "up", "p50 ms", "p95 ms", "tok/s"):
            if name == "model":
                table.add_column(name, min_width=12, overflow="fold")
            else:
                table.add_column(name, justify="right")
        for m in data["models"]:
            table.add_row(
                m["model"],
                str(m["generations"]),
                _fmt(m["error_rate"], ".1%"),
                _fmt(m["feedback_rate"], ".0%"),
                _fmt(m["mean_score"], ".2f"),
                _fmt(m["thumbs_up_share"], ".0%"),
                _fmt(m["total_ms_p50"], ".0f"),
                _fmt(m["total_ms_p95"], ".0f"),
                _fmt(m["tokens_per_s"], ".0f"),
            )
        console.print(table)
    elif "models" not in errors:
        console.print('[dim]no generations yet: `genloom ask "…" --collection demo` logs one[/dim]')

    side = []
    if data["top_documents"]:
        docs = Table(title="most cited documents", header_style="bold cyan", title_justify="left")
        for name in ("document", "cited", "score"):
            docs.add_column(name, justify="left" if name == "document" else "right")
        for d in data["top_documents"]:
            docs.add_row(
                f"{d['collection']}/{(d['title'] or d['external_id'])[:28]}",
                str(d["citations"]),
                _fmt(d["mean_feedback_score"], ".2f"),
            )
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
        parts = [
            f"{name.removeprefix('v_')} {_fmt(ms, '.1f', 'error' if name in errors else 'timeout')}"
            for name, ms in data["view_ms"].items()
        ]
        console.print("[dim]view latency (ms, server-side): " + " · ".join(parts) + "[/dim]")
    for name, message in errors.items():
        if name.startswith("v_"):
            console.print(f"[red]{name}: failed: {escape(message)}[/red]")
