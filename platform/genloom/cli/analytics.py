"""`genloom sql`, `genloom report`, `genloom analytics summary|views`, `genloom retention`."""

from __future__ import annotations

import csv
import datetime as dt
import json
import sys
import textwrap
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from genloom.cli.output import JsonOption, _default, console, err_console, info, print_json

analytics_app = typer.Typer(help="Analytics: the one-screen summary and the list of views.", no_args_is_help=True)


def _cell(value: Any, width: int = 60) -> str:
    if value is None:
        return "∅"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (dict, list)):
        text = json.dumps(value, default=_default, ensure_ascii=False)
    elif isinstance(value, (bytes, memoryview)):
        text = f"<{len(value)} bytes>"
    else:
        text = str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=_default, ensure_ascii=False)
    if isinstance(value, (bytes, memoryview)):
        return "\\x" + bytes(value).hex()
    return value


def sql(
    query: Annotated[
        Optional[str], typer.Argument(help='One SQL statement, e.g. "SELECT * FROM v_model_stats".')
    ] = None,
    file: Annotated[Optional[Path], typer.Option("--file", "-f", help="Read the statement from this file.")] = None,
    json_out: JsonOption = False,
    csv_out: Annotated[bool, typer.Option("--csv", help="Print CSV (header + rows) on stdout.")] = False,
    limit: Annotated[
        int, typer.Option("--limit", "-n", help="Keep at most this many rows; says so when rows were cut.")
    ] = 1000,
    timeout: Annotated[float, typer.Option("--timeout", help="Statement timeout in seconds.")] = 30.0,
    vertical: Annotated[
        Optional[bool],
        typer.Option(
            "--vertical/--table",
            "-x",
            help="One 'column | value' block per row (psql's \\x), or a table; default: vertical when a table would not fit.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run read-only SQL as the genloom_reader role (a write is refused by Postgres itself).

    The analytics views (v_model_stats, v_daily, v_feedback_explained, ... : `genloom analytics views`)
    make the common questions one SELECT away; docs/analytics.md has an example for each.
    """
    from genloom.analytics.sql import run_sql
    from genloom.errors import BadInput

    if json_out and csv_out:
        raise BadInput("choose one of --json and --csv")
    if (query is None) == (file is None):
        raise BadInput(
            'give the query either as an argument or with --file (e.g. genloom sql "SELECT * FROM v_model_stats")'
        )
    if file is not None:
        try:
            query = file.read_text()
        except OSError as exc:
            raise BadInput(f"cannot read {file}: {exc.strerror or exc}") from None
    result = run_sql(query or "", limit=limit, timeout_s=timeout)
    cut_note = (
        f"rows cut at --limit {result.limit}: the query returned more (raise --limit, or add ORDER BY … LIMIT)"
        if result.truncated
        else None
    )
    if json_out:
        print_json(
            {
                "columns": result.columns,
                "rows": result.as_dicts(),
                "row_count": len(result.rows),
                "truncated": result.truncated,
                "limit": result.limit,
                "status": result.status,
                "elapsed_ms": round(result.elapsed_ms, 1),
            }
        )
    elif csv_out:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        if result.columns:
            writer.writerow(result.columns)
        for row in result.rows:
            writer.writerow([_csv_value(v) for v in row])
        sys.stdout.flush()
    else:
        if result.columns:
            _print_rows(result.columns, result.rows, vertical=vertical)
        info(
            f"[dim]{len(result.rows)} row{'s' if len(result.rows) != 1 else ''}"
            + (f" · {result.status}" if result.status and not result.columns else "")
            + f" · {result.elapsed_ms:.0f} ms[/dim]"
        )
    if cut_note:
        err_console.print(f"[yellow]note:[/yellow] {cut_note}", markup=True, highlight=False, soft_wrap=True)


def _print_rows(columns: list[str], rows: list[tuple], *, vertical: bool | None) -> None:
    """A table when it fits the terminal (or vertical=False); otherwise psql's expanded display:
    one block per row, a column per line, long values wrapped under their value column."""
    from rich.table import Table

    table = Table(show_lines=False, header_style="bold cyan")
    for name in columns:
        table.add_column(name, overflow="fold")
    for row in rows:
        table.add_row(*(_cell(v) for v in row))
    if vertical is None:
        natural = console.measure(table, options=console.options.update_width(100_000)).maximum  # unclamped
        vertical = natural > console.width
    if not vertical:
        console.print(table)
        return
    label_width = max(len(name) for name in columns)
    value_width = max(console.width - label_width - 3, 20)
    for number, row in enumerate(rows, 1):
        console.print(f"-[ RECORD {number} ]".ljust(min(console.width, 40), "-"), markup=False, highlight=False)
        for name, value in zip(columns, row):
            text = _cell(value, width=4 * value_width)
            lines = textwrap.wrap(text, value_width, break_long_words=True, replace_whitespace=False) or [""]
            for i, line in enumerate(lines):
                label = name if i == 0 else ""
                console.print(f"{label.ljust(label_width)} | {line}", markup=False, highlight=False, soft_wrap=True)


def _parse_since(since: str | None) -> dt.datetime | None:
    from genloom.errors import BadInput

    if since is None:
        return None
    try:
        value = dt.datetime.fromisoformat(since)
    except ValueError:
        raise BadInput(f"--since must be a date like 2026-11-01 (got {since!r})") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def report(
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the HTML page.")] = Path("report.html"),
    since: Annotated[
        Optional[str], typer.Option("--since", help="Only generations and feedback from this date on (YYYY-MM-DD).")
    ] = None,
    json_out: JsonOption = False,
) -> None:
    """Write a self-contained HTML report (plots embedded): usage, feedback, latency, training, samples, datasets."""
    from genloom.analytics.report import build_report
    from genloom.db.engine import session_scope

    since_at = _parse_since(since)
    with session_scope(purpose="read") as session:
        result = build_report(session, since=since_at)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(result.html, encoding="utf-8")
    except OSError as exc:
        from genloom.errors import BadInput

        raise BadInput(f"cannot write {out}: {exc.strerror or exc}") from None
    size = len(result.html.encode())
    payload = {
        "out": str(out.resolve()),
        "bytes": size,
        "plots": result.plots,
        "missing": result.missing,
    }
    if json_out:
        print_json(payload)
    else:
        info(f"wrote [bold]{out}[/bold] ({size / 1024:.0f} KiB, {len(result.plots)} plots)")
        for section, why in result.missing.items():
            info(f"  [dim]{section}: {why}[/dim]")


@analytics_app.command("summary")
def summary_cmd(json_out: JsonOption = False) -> None:
    """One screen: volume, quality, latency per model, datasets, runs, and how long each view takes."""
    from genloom.analytics.summary import collect_summary
    from genloom.cli.summary_render import render_summary
    from genloom.db.engine import session_scope

    with session_scope(purpose="read") as session:
        data = collect_summary(session)
    if json_out:
        print_json(data)
    else:
        render_summary(data, console)


@analytics_app.command("views")
def views_cmd(json_out: JsonOption = False) -> None:
    """List the analytics views with what each answers (docs/analytics.md has example queries)."""
    from rich.table import Table

    from genloom.analytics.views import VIEWS

    if json_out:
        print_json([{"view": k, "description": v} for k, v in VIEWS.items()])
        return
    table = Table(header_style="bold cyan")
    table.add_column("view")
    table.add_column("what it answers")
    for name, description in VIEWS.items():
        table.add_row(name, description)
    console.print(table)


def retention(
    older_than: Annotated[
        str, typer.Option("--older-than", help="Age cut-off: 90d, 12w, 6m (30-day months), 1y, or a date YYYY-MM-DD.")
    ],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count what would go; delete nothing.")] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Generations per transaction.")] = 10_000,
    all_tenants: Annotated[
        bool,
        typer.Option("--all-tenants", help="Every tenant's log, not only this tenant's: whole months are dropped."),
    ] = False,
    metrics_older_than: Annotated[
        Optional[str],
        typer.Option("--metrics-older-than", help="Also drop whole months of run metrics older than this."),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    json_out: JsonOption = False,
) -> None:
    """Remove the generation log (sources and feedback with it), then emptied prompts and sessions, older than a cut-off.

    On a partitioned store (the default since migration 0023) whole months are detached and
    dropped and only the month holding the cut-off is cleaned by DELETE; when other tenants have
    rows in those months, only this tenant's rows are deleted unless --all-tenants is given.
    """
    from genloom.analytics.retention import (
        apply_retention,
        can_drop_partitions,
        count_expired,
        drop_expired_partitions,
        parse_cutoff,
    )
    from genloom.db.engine import get_engine, session_scope

    cutoff = parse_cutoff(older_than)
    metrics_cutoff = parse_cutoff(metrics_older_than) if metrics_older_than else None
    engine = get_engine()
    by_partition = can_drop_partitions(engine, cutoff, all_tenants=all_tenants)
    if not by_partition and metrics_cutoff:
        from genloom.errors import BadInput

        raise BadInput("--metrics-older-than drops whole months: it needs --all-tenants here")
    with session_scope() as session:
        counts = count_expired(session, cutoff)
    planned = (
        drop_expired_partitions(engine, cutoff, metrics_cutoff=metrics_cutoff, dry_run=True) if by_partition else None
    )
    nothing = not any(counts[k] for k in ("generations", "prompts", "sessions")) and not (
        planned and planned["dropped_partitions"]
    )
    if dry_run or nothing:
        key = "would_delete" if dry_run else "deleted"
        values = counts if dry_run else {"generations": 0, "prompts": 0, "sessions": 0}
        if json_out:
            print_json({"cutoff": cutoff.isoformat(), "dry_run": dry_run, key: values, "partitions": planned})
        else:
            verb = "would delete" if dry_run else "nothing to delete:"
            info(
                f"{verb} {counts['generations']} generations, {counts['feedback']} feedback, {counts['prompts']} prompts, "
                f"{counts['sessions']} sessions older than {cutoff:%Y-%m-%d %H:%M} UTC"
            )
            if dry_run and planned and planned["dropped_partitions"]:
                info(f"would drop partitions: {', '.join(planned['dropped_partitions'])}")
        return
    if not yes and not json_out:
        if not sys.stdin.isatty():
            from genloom.errors import BadInput

            raise BadInput("retention deletes data: pass --yes to confirm when not running interactively")
        typer.confirm(
            f"Delete {counts['generations']} generations ({counts['feedback']} feedback) older than {cutoff:%Y-%m-%d}?",
            abort=True,
            err=True,
        )
    if not by_partition:
        from genloom.db import partitions

        with engine.connect() as conn:
            if partitions.is_partitioned(conn):
                info(
                    "other tenants have rows in these months: deleting this tenant's rows (--all-tenants drops months)"
                )
    dropped = None
    if by_partition:
        dropped = drop_expired_partitions(engine, cutoff, metrics_cutoff=metrics_cutoff)
    from genloom.cli.progress import RichProgress

    done = [0]

    def on_batch(n: int) -> None:
        done[0] += n
        progress("deleting generations", done[0], counts["generations"])

    with RichProgress(enabled=not json_out) as progress:
        deleted = apply_retention(get_engine(), cutoff, batch_size=batch_size, on_batch=on_batch)
    if dropped is not None:
        deleted["generations"] += dropped["rows_in_dropped_partitions"].get("generations", 0)
        deleted["generations"] += dropped["deleted_in_boundary"].get("generations", 0)
    if json_out:
        print_json({"cutoff": cutoff.isoformat(), "dry_run": False, "deleted": deleted, "partitions": dropped})
    else:
        if dropped and dropped["dropped_partitions"]:
            info(f"dropped {len(dropped['dropped_partitions'])} partitions: {', '.join(dropped['dropped_partitions'])}")
        info(
            f"deleted {deleted['generations']} generations, {deleted['prompts']} prompts, {deleted['sessions']} sessions "
            f"older than {cutoff:%Y-%m-%d %H:%M} UTC (sources and feedback went with their generations)"
        )


def register(app: typer.Typer) -> None:
    app.command("sql")(sql)
    app.command("report")(report)
    app.command("retention")(retention)
    app.add_typer(analytics_app, name="analytics")
