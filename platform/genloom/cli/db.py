"""`genloom db …`: where the database is, its versions, migrations, start and stop."""

from __future__ import annotations

import typer
from rich.table import Table

from genloom.cli.output import JsonOption, console, info, print_json

app = typer.Typer(help="The database: status, URL, migrations, embedded server start/stop.", no_args_is_help=True)


@app.command()
def status(
    json_out: JsonOption = False,
    start: bool = typer.Option(False, "--start", help="Start the embedded server if it is stopped."),
) -> None:
    """Show which server genloom uses, its versions, the schema revision and a pgvector self-check."""
    from genloom.db.status import database_status

    report = database_status(start=start)
    if json_out:
        print_json(report)
        return
    table = Table(show_header=False, box=None)
    for key, value in report.items():
        table.add_row(f"[bold]{key}[/bold]", str(value))
    console.print(table)


@app.command()
def url() -> None:
    """Print a libpq URL for the database (psql "$(genloom db url)")."""
    from genloom.db.engine import libpq_url

    typer.echo(libpq_url())


@app.command()
def migrate(
    revision: str = typer.Argument("head", help="Target revision (head, or an id from migrations/versions)."),
    json_out: JsonOption = False,
) -> None:
    """Bring the schema to a revision (done automatically on first use)."""
    from genloom.db import migrate as migrations
    from genloom.db.engine import get_engine

    engine = get_engine(migrate=False)
    before = migrations.current_revision(engine)
    migrations.upgrade(engine, revision)
    after = migrations.current_revision(engine)
    if json_out:
        print_json({"from": before, "to": after})
    else:
        info(f"schema revision: {before or 'empty'} → {after}")


@app.command()
def start(json_out: JsonOption = False) -> None:
    """Start the embedded server (no-op when DATABASE_URL points elsewhere)."""
    from genloom.db import embedded
    from genloom.db.engine import get_engine, is_embedded

    if not is_embedded():
        info("DATABASE_URL is set: genloom uses that server and starts none of its own")
        if json_out:
            print_json({"embedded": False, "started": False})
        return
    was_running = embedded.is_running()
    get_engine()
    if json_out:
        print_json({"embedded": True, "started": not was_running, "data_dir": str(embedded.data_dir())})
    else:
        info("embedded server already running" if was_running else f"embedded server started in {embedded.data_dir()}")


@app.command()
def stop(json_out: JsonOption = False) -> None:
    """Stop the embedded server."""
    from genloom.db import embedded
    from genloom.db.engine import is_embedded

    if not is_embedded():
        info("DATABASE_URL is set: there is no embedded server to stop")
        stopped = False
    else:
        stopped = embedded.stop()
        info("embedded server stopped" if stopped else "embedded server was not running")
    if json_out:
        print_json({"stopped": stopped})


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="db")
