"""`genloom runs …`: the job records, and marking runs whose process died."""

from __future__ import annotations

import typer

from genloom.cli.output import JsonOption, info, print_json

app = typer.Typer(
    help="Job records: list, show and compare them; mark runs whose process disappeared as failed.",
    no_args_is_help=True,
)


@app.command()
def reconcile(json_out: JsonOption = False) -> None:
    """Mark this host's `running` runs whose process no longer exists as failed.

    Every genloom command does this once on start-up; this command does it on demand.
    """
    from genloom.db.engine import session_scope
    from genloom.db.stale_runs import reconcile_stale_runs

    with session_scope() as session:
        failed = reconcile_stale_runs(session)
    if json_out:
        print_json({"marked_failed": failed})
    else:
        info(f"marked {len(failed)} run(s) failed: {', '.join(map(str, failed))}" if failed else "no stale runs")


@app.command("list")
def list_runs(
    status: str = typer.Option(None, "--status", help="Only runs with this status (running, failed, ...)."),
    limit: int = typer.Option(20, "--limit", min=1, help="At most this many, newest first."),
    json_out: JsonOption = False,
) -> None:
    """The newest runs: id, kind, status, host, pid, start time and error."""
    import sqlalchemy as sa
    from rich.table import Table

    from genloom.cli.output import console
    from genloom.db.engine import session_scope
    from genloom.db.models import Run

    query = sa.select(Run).order_by(Run.id.desc()).limit(limit)
    if status:
        query = query.where(Run.status == status)
    with session_scope() as session:
        runs = session.scalars(query).all()
    rows = [
        {
            "id": r.id,
            "kind": r.kind,
            "status": r.status,
            "host": r.host,
            "pid": r.pid,
            "started_at": r.started_at.isoformat() if r.started_at else None,
            "error": r.error,
        }
        for r in runs
    ]
    if json_out:
        print_json(rows)
        return
    table = Table("id", "kind", "status", "host", "pid", "started", "error")
    for r in rows:
        table.add_row(*(str(r[k] or "") for k in ("id", "kind", "status", "host", "pid", "started_at", "error")))
    console.print(table)


@app.command("show")
def show_run(
    run_id: int = typer.Argument(..., help="Run id (see genloom runs list)."), json_out: JsonOption = False
) -> None:
    """One run: kind, status, timing, parameters, summary and metrics."""
    from genloom.cli.output import console, dumps
    from genloom.db.engine import session_scope
    from genloom.runs import run_detail

    with session_scope() as session:
        detail = run_detail(session, run_id)
    if json_out:
        print_json(detail)
        return
    for key, value in detail.items():
        if key in ("params", "summary", "metrics", "steps") or value is None:
            continue
        console.print(f"{key}: {value}", markup=False, highlight=False)
    for section in ("params", "summary", "metrics"):
        if detail[section]:
            console.print(f"{section}:", markup=False, highlight=False)
            for key, value in detail[section].items():
                shown = (
                    f"{value:.6g}"
                    if isinstance(value, float)
                    else dumps(value)
                    if isinstance(value, (dict, list))
                    else value
                )
                console.print(f"  {key}: {shown}", markup=False, highlight=False)


@app.command("compare")
def compare(
    run_ids: list[int] = typer.Argument(..., help="Two or more run ids."),
    all_rows: bool = typer.Option(False, "--all", help="Also show rows whose values are the same in every run."),
    json_out: JsonOption = False,
) -> None:
    """Runs side by side: the parameters, summary values and metrics that differ (--all: every one)."""
    from rich.table import Table

    from genloom.cli.output import console
    from genloom.db.engine import session_scope
    from genloom.errors import BadInput
    from genloom.runs import compare_runs

    if len(run_ids) < 2:
        raise BadInput("runs compare needs two or more run ids (e.g. genloom runs compare 3 5)")
    with session_scope() as session:
        result = compare_runs(session, run_ids)
    if json_out:
        print_json(result)
        return
    table = Table("", *(f"run {i} ({kind})" for i, kind in zip(result["runs"], result["kinds"])))
    for key, values in result["rows"].items():
        if all_rows or key in result["differs"]:
            table.add_row(key, *("-" if v is None else f"{v:.6g}" if isinstance(v, float) else str(v) for v in values))
    console.print(table)
    if not all_rows:
        same = len(result["rows"]) - len(result["differs"])
        info(f"{same} rows equal in every run not shown (--all shows them)")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="runs")
