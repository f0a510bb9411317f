"""The `genloom` command: a thin Typer app over the library.

Each command group lives in its own module with a `register(app)` function; this
file only wires them together and turns errors into one line and an exit code.
"""

from __future__ import annotations

import importlib
import sys
from typing import Annotated

import click
import typer

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
    "genloom.cli.ask",  # ask, generate, feedback, generations, sessions, templates
    "genloom.cli.serve",  # serve
    "genloom.cli.datasets",  # datasets import|list|show|diff|export
    "genloom.cli.train",  # train, sample, score, models
    "genloom.cli.evaluate",  # eval retrieval|model|utility|text
    "genloom.cli.dedup",  # dedup
    "genloom.cli.analytics",  # sql, report
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
) -> None:
    _state["debug"] = debug


def _register_all() -> None:
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:  # group not built yet
                continue
            raise
        module.register(app)


_register_all()


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _error(message: str) -> None:
    # soft_wrap: one line whatever the terminal width; markup off: messages may hold [brackets].
    err_console.print("[red]error:[/red] ", end="")
    err_console.print(message, markup=False, highlight=False, soft_wrap=True)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit code. Errors become one line on stderr."""
    import sqlalchemy.exc

    from genloom.errors import GenloomError

    command = typer.main.get_command(app)
    _state["debug"] = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        result = command.main(args=argv, prog_name="genloom", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt):
        err_console.print("interrupted")
        return 130
    except GenloomError as exc:
        if _state["debug"]:
            raise
        hint = getattr(exc, "cli_hint", None)
        _error(_one_line(exc) + (f" ({hint})" if hint else ""))
        return exc.exit_code
    except sqlalchemy.exc.DBAPIError as exc:
        if _state["debug"]:
            raise
        _error(f"database: {_one_line(getattr(exc, 'orig', exc))}")
        return 1
    except Exception as exc:  # a bug: still one line unless --debug
        if _state["debug"]:
            raise
        _error(f"{type(exc).__name__}: {_one_line(exc)} (run with --debug for the traceback)")
        return 1


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
