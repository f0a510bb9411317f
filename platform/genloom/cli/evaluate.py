"""`genloom eval …`: one group, commands from three modules (retrieval; models, utility, text; rag)."""

from __future__ import annotations

import importlib

import typer

eval_app = typer.Typer(
    help="Evaluate retrieval, RAG answers, models, synthetic-data utility and text.", no_args_is_help=True
)

# Each module adds its commands to eval_app when imported.
EVAL_MODULES = ["genloom.cli.eval_retrieval", "genloom.cli.eval_models", "genloom.cli.eval_rag"]


def register(app: typer.Typer) -> None:
    for module_name in EVAL_MODULES:
        try:
            importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
    app.add_typer(eval_app, name="eval")
