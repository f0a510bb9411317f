"""`genloom runs …`: the job records, and marking runs whose process died."""

from __future__ import annotations

import typer

from genloom.cli.output import JsonOption, info, print_json

app = typer.Typer(help="Job records: list them; mark runs whose process disappeared as failed.", no_args_is_help=True)


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


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="runs")
