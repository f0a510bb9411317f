"""`genloom dedup`: deduplicated dataset versions, leakage checks, collection chunk flags."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Table

from genloom.cli.output import JsonOption, console, info, print_json
from genloom.cli.progress import RichProgress


def dedup(
    dataset: Annotated[
        Optional[str], typer.Argument(help="Dataset NAME\\[@V] (default: its latest sealed version).")
    ] = None,
    collection: Annotated[
        Optional[str], typer.Option("--collection", help="Flag near-duplicate chunks of this collection instead.")
    ] = None,
    method: Annotated[str, typer.Option("--method", help="exact | minhash (text) | semantic | all.")] = "all",
    threshold: Annotated[
        Optional[float],
        typer.Option(
            "--threshold",
            help="Similarity in (0, 1]: Jaccard for minhash (default 0.8), cosine for semantic (text 0.95, pixels 0.997).",
        ),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report what would be dropped; write no version.")] = False,
    leakage: Annotated[
        bool,
        typer.Option("--leakage", help="Report val/test items with a near-duplicate in train (writes no version)."),
    ] = False,
    embedder: Annotated[
        Optional[str],
        typer.Option(
            "--embedder",
            help="Images, semantic method: pixels (aligned pixels, default) or features (the feature network).",
        ),
    ] = None,
    features: Annotated[
        Optional[str], typer.Option("--features", help="Feature network MODEL\\[@V] for --embedder features.")
    ] = None,
    num_perm: Annotated[int, typer.Option("--num-perm", help="MinHash permutations (128–256 typical).")] = 128,
    unit: Annotated[str, typer.Option("--shingle", help="MinHash shingles: char or word 5-grams.")] = "char",
    json_out: JsonOption = False,
) -> None:
    """Write a new sealed version without duplicates (parent = the input) and a decisions table."""
    from genloom.dedup.job import DedupOptions
    from genloom.errors import BadInput

    if (dataset is None) == (collection is None):
        raise BadInput("give a dataset NAME[@V] or --collection NAME (one of the two)")
    opts = DedupOptions(
        method=method,
        threshold=threshold,
        dry_run=dry_run,
        embedder=embedder,
        features=features,
        num_perm=num_perm,
        unit=unit,
    )
    if collection is not None:
        if leakage:
            raise BadInput("--leakage checks a dataset's splits; it does not apply to --collection")
        from genloom.dedup.collection import collection_job

        with RichProgress(enabled=not json_out) as progress:
            report = collection_job(collection, opts, progress=progress)
        if json_out:
            print_json(report)
        else:
            info(
                f"collection {report['collection']}: {report['flagged']} of {report['chunks']} chunks flagged as "
                f"near-duplicates ({_methods(report['by_method'])}); run {report['run_id']}"
                + (" [dry run]" if dry_run else "")
            )
        return
    assert dataset is not None  # exactly one of the two, checked above
    if leakage:
        from genloom.dedup.leakage import leakage_job

        with RichProgress(enabled=not json_out) as progress:
            report = leakage_job(dataset, opts, progress=progress)
        if json_out:
            print_json(report)
            return
        info(
            f"{report['dataset']}: {report['leaked']} of {report['checked']} val/test items have a duplicate in train "
            f"(val {report['by_split']['val']}, test {report['by_split']['test']}; {_methods(report['by_method'])})"
        )
        if report["examples"]:
            table = Table("item", "split", "train item", "method", "similarity")
            for e in report["examples"]:
                table.add_row(
                    str(e["item_id"]), e["split"], str(e["train_item_id"]), e["method"], f"{e['similarity']:.4f}"
                )
            console.print(table)
        return
    from genloom.dedup.job import dedup_job

    with RichProgress(enabled=not json_out) as progress:
        result = dedup_job(dataset, opts, progress=progress)
    if json_out:
        print_json(result.to_json())
        return
    table = Table(show_header=False, box=None)
    for key, value in [
        ("input", result.input),
        ("output", result.output),
        ("kept", result.kept),
        ("dropped", result.dropped),
        ("by method", _methods(result.by_method)),
        ("run", result.run_id),
    ]:
        table.add_row(f"[bold]{key}[/bold]", str(value))
    console.print(table)
    if not result.dropped:
        info("no duplicates: the output is the input (no new version written)")


def _methods(counts: dict[str, int]) -> str:
    return ", ".join(f"{m} {n}" for m, n in counts.items()) or "none"


def register(app: typer.Typer) -> None:
    app.command("dedup")(dedup)
