"""`genloom eval rag QA_FILE --collection NAME`: answer quality of the logged call, stored as a run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from genloom.cli.evaluate import eval_app
from genloom.cli.output import JsonOption, console, err_console, print_json


@eval_app.command("rag")
def rag(
    qa_file: Annotated[Path, typer.Argument(help="SQuAD-style JSON, or JSONL of {question, answers, doc_id?}.")],
    collection: Annotated[str, typer.Option("--collection", "-c", help="Collection to retrieve from.")],
    ingest_contexts: Annotated[
        bool, typer.Option("--ingest-contexts", help="First ingest the SQuAD file's paragraphs (one document each).")
    ] = False,
    model: Annotated[
        Optional[str],
        typer.Option("--model", "-m", help="extractive, a model directory, or a registry NAME\\[@V] (endpoints too)."),
    ] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", help="Ask a seeded sample of this many questions.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the sample (and of sampling, + repeat).")] = 0,
    repeats: Annotated[int, typer.Option("--repeats", help="Run the sample N times; report mean and spread.")] = 1,
    k: Annotated[int, typer.Option("-k", "--k", help="Sources per question.")] = 5,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="Most tokens per answer.")] = 128,
    json_out: JsonOption = False,
) -> None:
    """Ask each question through the full logged call; score EM/F1, citations, groundedness, abstention, latency."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from genloom.evaluation.rag import EvalRagOptions, eval_rag_job

    opts = EvalRagOptions(
        collection=collection,
        model=model,
        limit=limit,
        seed=seed,
        repeats=repeats,
        k=k,
        max_new_tokens=max_new_tokens,
        ingest_contexts=ingest_contexts,
    )
    # The bar starts with the first answered question: a bad input fails as one line, with no bar drawn.
    state: dict = {}

    def on_progress(task: str, done: int, total: int | None, status: str = "") -> None:
        if "bar" not in state:
            state["bar"] = Progress(
                TextColumn("[bold]questions"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=err_console,
                transient=True,
            )
            state["bar"].start()
            state["task"] = state["bar"].add_task("questions", total=total)
        state["bar"].update(state["task"], completed=done, total=total)

    try:
        report = eval_rag_job(qa_file, opts, progress=on_progress)
    finally:
        if "bar" in state:
            state["bar"].stop()
    if json_out:
        print_json(report)
        return
    from rich.table import Table

    table = Table(
        title=f"{report['model']} on {report['collection']} · {report['sampled']} questions × "
        f"{report['repeats']} · run {report['run_id']}"
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in report.items():
        if key in ("run_id", "collection", "model", "seed", "repeats", "sampled"):
            continue
        table.add_row(key, "-" if value is None else (f"{value:.4f}" if isinstance(value, float) else str(value)))
    console.print(table)
