"""The `genloom` command: a thin Typer app over the library.

Each command group lives in its own module with a `register(app)` function; this
file only wires them together and turns errors into one line and an exit code.
"""

from __future__ import annotations

import importlib
import sys
from typing import Annotated, Any, Optional

import typer
from typer._click.core import Context
from typer._click.exceptions import UsageError  # Typer >= 0.22 vendors Click: its errors are not click's
from typer.exceptions import TyperException

from genloom import __version__
from genloom.cli.output import err_console

app = typer.Typer(
    name="genloom",
    help="genloom: one PostgreSQL + pgvector database for RAG, datasets, training, evaluation and analytics.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

# One module per command group, in data-flow order. Each defines register(app).
COMMAND_MODULES = [
    "genloom.cli.db",  # db status|url|migrate|start|stop
    "genloom.cli.demo",  # demo
    "genloom.cli.ingest",  # ingest
    "genloom.cli.search",  # search
    "genloom.cli.store",  # collections list|show|rename|delete, documents list|show|delete|set-meta
    "genloom.cli.ask",  # ask, generate, feedback, generations, sessions, templates
    "genloom.cli.serve",  # serve (with the web UI at /ui and MCP at /mcp)
    "genloom.cli.mcp",  # mcp (stdio)
    "genloom.cli.datasets",  # datasets import|list|show|diff|export
    "genloom.cli.train",  # train, sample, score, models
    "genloom.cli.evaluate",  # eval retrieval|model|utility|text
    "genloom.cli.dedup",  # dedup
    "genloom.cli.analytics",  # sql, report
    "genloom.cli.runs",  # runs list|reconcile
    "genloom.cli.keys",  # keys create|list|revoke, audit list
]

_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"genloom {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    tenant: Annotated[
        Optional[str], typer.Option("--tenant", help="Work as this tenant (default: $GENLOOM_TENANT, else 'default').")
    ] = None,
) -> None:
    _state["debug"] = debug
    if tenant is not None:
        import os

        from genloom.db.tenancy import TENANT_ENV, validate_tenant

        os.environ[TENANT_ENV] = validate_tenant(tenant)  # subprocesses (torchrun ranks) inherit it


def _register_all() -> None:
    # A module that fails to import fails the whole CLI, loudly: a silently missing
    # command would hide the bug.
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(app)


_register_all()


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _crash_or(exc: BaseException, message: str) -> str:
    """A connection cut by a crashing embedded server is explained from its log."""
    if "connection" not in message and "recovery" not in message:
        return message  # not a cut connection: no need to import the database layer
    from genloom.db.engine import crash_message

    return crash_message(exc) or message


def _error(message: str) -> None:
    # soft_wrap: one line whatever the terminal width; markup off: messages may hold [brackets].
    err_console.print("[red]error:[/red] ", end="")
    from genloom.errors import one_line

    err_console.print(one_line(message), markup=False, highlight=False, soft_wrap=True)


def _without_flag_placeholders(command: Any) -> Any:
    """A flag takes no value: its help shows none (Typer prints `<bool>` beside every flag)."""
    help_option = command.get_help_option(Context(command))  # made (and cached) on first use
    for param in [*command.params, *([help_option] if help_option else [])]:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    for sub in getattr(command, "commands", {}).values():
        _without_flag_placeholders(sub)
    return command


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit code. Errors become one line on stderr."""
    import os

    tenant_before = os.environ.get("GENLOOM_TENANT")
    try:
        return _main(argv)
    finally:  # --tenant holds for this command only (tests run many in one process)
        if tenant_before is None:
            os.environ.pop("GENLOOM_TENANT", None)
        else:
            os.environ["GENLOOM_TENANT"] = tenant_before


def _main(argv: list[str] | None) -> int:
    from genloom.errors import GenloomError, JobInterrupted

    command = _without_flag_placeholders(typer.main.get_command(app))
    _state["debug"] = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        result = command.main(args=argv, prog_name="genloom", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except typer.Exit as exc:
        return exc.exit_code
    except UsageError as exc:  # a mistyped command line: one plain line and where to look
        _error(f"{exc.format_message()} (see: {exc.ctx.command_path if exc.ctx else 'genloom'} --help)")
        return exc.exit_code
    except TyperException as exc:
        _error(exc.format_message())
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("interrupted")
        return 130
    except JobInterrupted as exc:  # a job that stopped at a safe point says what it kept
        err_console.print(f"interrupted: {exc}", markup=False, highlight=False, soft_wrap=True)
        return exc.exit_code
    except GenloomError as exc:
        if _state["debug"]:
            raise
        hint = getattr(exc, "cli_hint", None)
        _error(_crash_or(exc, _one_line(exc) + (f" ({hint})" if hint else "")))
        return exc.exit_code
    except Exception as exc:
        if _state["debug"]:
            raise
        # Only a process that imported SQLAlchemy can raise its errors: `--help` never pays for importing it.
        sa_exc = sys.modules.get("sqlalchemy.exc")
        if sa_exc is not None and isinstance(exc, sa_exc.DBAPIError):
            _error(_crash_or(exc, f"database: {_one_line(getattr(exc, 'orig', exc))}"))
            return 1
        # a bug: still one line unless --debug
        _error(_crash_or(exc, f"{type(exc).__name__}: {_one_line(exc)} (run with --debug for the traceback)"))
        return 1


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
