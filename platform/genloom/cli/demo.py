"""`genloom demo`: the tour of the main job on whatever database genloom is configured for."""

from __future__ import annotations

import importlib
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.panel import Panel

from genloom.cli.output import JsonOption, err_console, print_json
from genloom.cli.progress import RichProgress


def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder for files the demo writes (sample grids, report).")] = Path(
        "genloom-demo"
    ),
    quick: Annotated[bool, typer.Option("--quick", help="Smallest budgets (used by the tests).")] = False,
    json_out: JsonOption = False,
) -> None:
    """Run the tour: store → ingest and search → grounded answer → train and sample → evaluate → analytics."""
    from genloom.cli.demo_render import RENDERERS
    from genloom.demo_steps import STEP_MODULES, DemoContext

    out.mkdir(parents=True, exist_ok=True)
    ctx = DemoContext(out_dir=out.resolve(), quick=quick)
    for name in STEP_MODULES:
        step = importlib.import_module(f"genloom.demo_steps.{name}")
        started = time.perf_counter()
        err_console.rule(f"[bold]{step.TITLE}")
        with RichProgress() as progress:
            ctx.progress = progress
            result = step.run(ctx)
        result["seconds"] = round(time.perf_counter() - started, 2)
        ctx.results[name] = result
        if not json_out:
            summary = RENDERERS.get(name)
            if summary is not None:
                summary(result)
            else:
                err_console.print(Panel.fit("\n".join(f"{k}: {v}" for k, v in result.items() if k != "rows")))
    if json_out:
        print_json(ctx.results)
    else:
        err_console.rule("[bold green]demo finished")


def register(app: typer.Typer) -> None:
    app.command()(demo)
