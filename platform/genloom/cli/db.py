"""`genloom db …`: where the database is, its versions, migrations, start and stop."""

from __future__ import annotations

from pathlib import Path

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
        if key == "replicas":
            value = "\n".join(_replica_line(r) for r in value)
        elif key == "cluster":
            value = "\n".join(f"{n['node']}: {n['state']} ({n['dir']})" for n in value)
        table.add_row(f"[bold]{key}[/bold]", str(value))
    console.print(table)


def _replica_line(replica: dict) -> str:
    lag = "?" if replica["lag_s"] is None else f"{replica['lag_s']:.3f} s"
    note = f" ({replica['note']})" if replica["note"] else ""
    return f"{replica['state']}, lag {lag}: {replica['url']}{note}"


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
    distributed = migrations.upgrade(engine, revision)
    after = migrations.current_revision(engine)
    if json_out:
        print_json({"from": before, "to": after, **({"citus": distributed} if distributed else {})})
    else:
        info(f"schema revision: {before or 'empty'} → {after}")
        if distributed.get("tenant") or distributed.get("reference"):
            info(
                f"citus: {len(distributed['tenant'])} tables distributed by tenant (co-located with collections), "
                f"{len(distributed['reference'])} reference tables"
            )


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


replica_app = typer.Typer(
    help="Streaming replicas of the embedded server (reads go to them: docs/architecture.md#scaling-out).",
    no_args_is_help=True,
)
app.add_typer(replica_app, name="replica")


@replica_app.command("create")
def replica_create(
    folder: Path = typer.Argument(..., help="A new, empty folder for the replica's data."), json_out: JsonOption = False
) -> None:
    """Copy the embedded server with pg_basebackup (replication slot) and start it as a streaming standby."""
    from genloom.db import replicas
    from genloom.db.engine import get_engine

    get_engine()  # the store exists and is migrated before it is copied
    made = replicas.create(folder, progress=info)
    if json_out:
        print_json(made)
    else:
        info(f"replica streaming in {made['dir']} (slot {made['slot']}); reads now go to it")


@replica_app.command("start")
def replica_start(folder: Path = typer.Argument(..., help="The replica's folder.")) -> None:
    """Start a replica made by `genloom db replica create`."""
    from genloom.db import replicas

    replicas.start(folder)
    info(f"replica in {folder} started")


@replica_app.command("stop")
def replica_stop(folder: Path = typer.Argument(..., help="The replica's folder.")) -> None:
    """Stop a replica (reads fall back to the primary; its slot keeps the WAL it will need)."""
    from genloom.db import replicas

    info(f"replica in {folder} stopped" if replicas.stop(folder) else f"replica in {folder} was not running")


@replica_app.command("remove")
def replica_remove(folder: Path = typer.Argument(..., help="The replica's folder.")) -> None:
    """Stop a replica, drop its replication slot and forget it (its folder is left for you to delete)."""
    from genloom.db import replicas

    replicas.remove(folder)
    info(f"replica in {folder} removed (slot dropped); delete the folder when you no longer need it")


cluster_app = typer.Typer(
    help="A Citus 14 cluster on this machine: a coordinator and N workers (docs/architecture.md#scaling-out).",
    no_args_is_help=True,
)
app.add_typer(cluster_app, name="cluster")


@cluster_app.command("init")
def cluster_init(
    workers: int = typer.Option(2, "--workers", help="How many worker nodes."), json_out: JsonOption = False
) -> None:
    """Build Citus from the vendored source (once, cached), start a coordinator and workers, use the coordinator."""
    from genloom.db import cluster

    made = cluster.init(workers, progress=info)
    if json_out:
        print_json(made)
    else:
        info(f"Citus cluster ready: coordinator + {made['workers']} workers; genloom now uses {made['coordinator']}")


@cluster_app.command("build")
def cluster_build() -> None:
    """Build Citus from the vendored source into the cache (init does it too; CI runs this once)."""
    from genloom.db import cluster

    info(f"Citus ready in {cluster.build(progress=info)}")


@cluster_app.command("start")
def cluster_start() -> None:
    """Start the cluster's nodes (genloom also starts them on first use)."""
    from genloom.db import cluster

    cluster.start()
    info(f"{len(cluster.nodes())} Citus nodes running")


@cluster_app.command("stop")
def cluster_stop() -> None:
    """Stop the cluster's nodes."""
    from genloom.db import cluster

    info(f"stopped {cluster.stop()} Citus nodes")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="db")
