"""`genloom datasets import|list|show|diff|export`: parsing and rendering only."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from genloom.cli.output import JsonOption, console, info, print_json

datasets_app = typer.Typer(help="Versioned datasets: import, list, show, diff, export.", no_args_is_help=True)
import_app = typer.Typer(help="Import a source as a new sealed dataset version.", no_args_is_help=True)
datasets_app.add_typer(import_app, name="import")

ValOption = Annotated[float, typer.Option("--val", help="Fraction of items for the val split (seeded).")]
TestOption = Annotated[float, typer.Option("--test", help="Fraction of items for the test split (seeded).")]
SeedOption = Annotated[int, typer.Option("--seed", help="Seed of the split.")]


def _report(result, json_out: bool) -> None:
    payload = {
        "run_id": result.run_id,
        "dataset": result.dataset,
        "items": result.items,
        "new_items": result.new_items,
        "by_split": result.by_split,
        "unchanged": result.unchanged,
    }
    if json_out:
        print_json(payload)
    elif result.unchanged:
        info(f"{result.dataset} already holds exactly this content ({result.items} items): nothing changed")
    else:
        splits = ", ".join(f"{k} {v}" for k, v in result.by_split.items())
        info(
            f"imported {result.dataset}: {result.items} items ({splits}); {result.new_items} new to the store (run {result.run_id})"
        )


@import_app.command("digits")
def import_digits_cmd(
    name: Annotated[str, typer.Option("--name", help="Dataset name.")] = "digits",
    val: ValOption = 0.1,
    test: TestOption = 0.1,
    seed: SeedOption = 0,
    json_out: JsonOption = False,
) -> None:
    """scikit-learn's bundled 8×8 digits (1,797 images): works with no files."""
    from genloom.datasets.importers import SplitFractions, import_digits

    _report(import_digits(name, fractions=SplitFractions(val=val, test=test, seed=seed)), json_out)


@import_app.command("mnist")
def import_mnist_cmd(
    directory: Annotated[Path, typer.Argument(help="Folder with the four MNIST IDX .gz files.")],
    name: Annotated[str, typer.Option("--name", help="Dataset name.")] = "mnist",
    val: Annotated[float, typer.Option("--val", help="Fraction of MNIST's train set held out as val.")] = 5000 / 60000,
    seed: SeedOption = 0,
    limit: Annotated[
        Optional[int], typer.Option("--limit", help="Only the first N of each file (quick tries).")
    ] = None,
    json_out: JsonOption = False,
) -> None:
    """MNIST from its IDX files (its own train/test split; val carved from train)."""
    from genloom.datasets.importers import import_mnist

    _report(import_mnist(directory, name, val_fraction=val, seed=seed, limit=limit), json_out)


@import_app.command("images")
def import_images_cmd(
    directory: Annotated[Path, typer.Argument(help="Folder of PNG/JPEG images; label = sub-folder.")],
    name: Annotated[str, typer.Option("--name", help="Dataset name.")],
    resize: Annotated[Optional[tuple[int, int]], typer.Option("--resize", help="Resize every image to H W.")] = None,
    captions: Annotated[
        Optional[Path],
        typer.Option("--captions", help="CSV or JSONL file of captions: a --file-column and a --caption-column."),
    ] = None,
    caption_column: Annotated[str, typer.Option("--caption-column", help="Column holding the caption.")] = "caption",
    file_column: Annotated[
        str, typer.Option("--file-column", help="Column naming the image (its path under DIRECTORY).")
    ] = "file",
    val: ValOption = 0.1,
    test: TestOption = 0.1,
    seed: SeedOption = 0,
    json_out: JsonOption = False,
) -> None:
    """A folder of images (all one size, or --resize H W), optionally captioned from a CSV/JSONL file."""
    from genloom.datasets.importers import SplitFractions, import_images

    _report(
        import_images(
            directory,
            name,
            resize=(resize[0], resize[1]) if resize else None,
            fractions=SplitFractions(val=val, test=test, seed=seed),
            captions=captions,
            caption_column=caption_column,
            file_column=file_column,
        ),
        json_out,
    )


@import_app.command("text")
def import_text_cmd(
    source: Annotated[Path, typer.Argument(help="A text FILE or a DIR of .txt/.md files.")],
    name: Annotated[str, typer.Option("--name", help="Dataset name.")],
    unit: Annotated[str, typer.Option("--unit", help="One item per document, paragraph or line.")] = "document",
    contiguous: Annotated[
        bool,
        typer.Option("--contiguous", help="Split in order (first units train, then val, test) instead of shuffled."),
    ] = False,
    val: ValOption = 0.1,
    test: TestOption = 0.1,
    seed: SeedOption = 0,
    json_out: JsonOption = False,
) -> None:
    """Text items from files."""
    from genloom.datasets.importers import SplitFractions, import_text

    _report(
        import_text(
            source, name, unit=unit, contiguous=contiguous, fractions=SplitFractions(val=val, test=test, seed=seed)
        ),
        json_out,
    )


@import_app.command("collection")
def import_collection_cmd(
    collection: Annotated[str, typer.Argument(help="An ingested collection.")],
    name: Annotated[Optional[str], typer.Option("--name", help="Dataset name (default: the collection's).")] = None,
    val: ValOption = 0.1,
    test: TestOption = 0.1,
    seed: SeedOption = 0,
    json_out: JsonOption = False,
) -> None:
    """A collection's current documents as text items."""
    from genloom.datasets.importers import SplitFractions, import_collection

    _report(import_collection(collection, name, fractions=SplitFractions(val=val, test=test, seed=seed)), json_out)


@import_app.command("feedback")
def import_feedback_cmd(
    name: Annotated[str, typer.Option("--name", help="Dataset name, e.g. good-answers.")],
    min_score: Annotated[
        int, typer.Option("--min-score", help="Keep generations rated at least this (1-5; thumbs up = 5).")
    ] = 4,
    pairs: Annotated[
        bool, typer.Option("--pairs", help="Question → cited-source training pairs (needs --collection).")
    ] = False,
    collection: Annotated[Optional[str], typer.Option("--collection", "-c", help="With --pairs.")] = None,
    max_score: Annotated[
        int, typer.Option("--max-score", help="With --pairs: sources of answers rated at most this are negatives.")
    ] = 2,
    val: ValOption = 0.0,
    test: TestOption = 0.0,
    seed: SeedOption = 0,
    json_out: JsonOption = False,
) -> None:
    """Rated generations as (question, sources, answer) JSON records, with lineage to each generation.

    With --pairs --collection C: question → cited-chunk training pairs for `genloom train embedder|reranker`
    (answers rated >= --min-score give positives, <= --max-score negatives)."""
    from genloom.datasets.importers import SplitFractions, import_feedback

    fractions = SplitFractions(val=val, test=test, seed=seed)
    if pairs:
        from genloom.datasets.retrieval_pairs import import_feedback_pairs
        from genloom.errors import BadInput

        if collection is None:
            raise BadInput("--pairs needs --collection: the collection whose documents the answers cite")
        result = import_feedback_pairs(
            collection=collection, name=name, min_score=min_score, max_score=max_score, fractions=fractions
        )
    else:
        result = import_feedback(name, min_score=min_score, fractions=fractions)
    _report(result, json_out)


@import_app.command("squad")
def import_squad_cmd(
    source: Annotated[Path, typer.Argument(help="A SQuAD v1.1/v2.0 JSON file.")],
    name: Annotated[str, typer.Option("--name", help="Dataset name.")] = "squad",
    val: Annotated[
        float, typer.Option("--val", help="Share of articles held out to calibrate a reader's abstention.")
    ] = 0.1,
    test: Annotated[float, typer.Option("--test", help="Share of articles held out for evaluation.")] = 0.5,
    seed: SeedOption = 0,
    json_out: JsonOption = False,
) -> None:
    """Question/paragraph/answer records for `genloom train reader`, split by article."""
    from genloom.datasets.importers import SplitFractions
    from genloom.datasets.squad import import_squad

    _report(import_squad(source, name, fractions=SplitFractions(val=val, test=test, seed=seed)), json_out)


@import_app.command("qrels")
def import_qrels_cmd(
    qrels: Annotated[
        Path, typer.Argument(help="BEIR qrels TSV (query-id, corpus-id, score), e.g. DIR/qrels/train.tsv.")
    ],
    collection: Annotated[str, typer.Option("--collection", "-c", help="The collection holding the judged documents.")],
    queries: Annotated[
        Optional[Path], typer.Option("--queries", help="queries.jsonl (default: the one beside the qrels folder).")
    ] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="Dataset name (default COLLECTION-STEM-pairs).")] = None,
    negatives: Annotated[int, typer.Option("--negatives", help="Hard negatives mined per query.")] = 4,
    negatives_from: Annotated[
        str, typer.Option("--negatives-from", help="Mine them from: bm25, vector, hybrid or none.")
    ] = "bm25",
    limit: Annotated[Optional[int], typer.Option("--limit", help="Only the first N judged queries.")] = None,
    val: ValOption = 0.1,
    test: TestOption = 0.0,
    seed: SeedOption = 0,
    json_out: JsonOption = False,
) -> None:
    """Judged query → document pairs (with mined hard negatives) for `genloom train embedder|reranker`."""
    from genloom.datasets.importers import SplitFractions
    from genloom.datasets.retrieval_pairs import import_qrels

    result = import_qrels(
        qrels,
        collection=collection,
        queries_path=queries,
        name=name,
        negatives=negatives,
        negatives_from=negatives_from,
        fractions=SplitFractions(val=val, test=test, seed=seed),
        limit=limit,
    )
    _report(result, json_out)


@datasets_app.command("list")
def list_cmd(json_out: JsonOption = False) -> None:
    """Every dataset version."""
    from rich.table import Table

    from genloom.datasets.versions import list_versions
    from genloom.db.engine import session_scope

    with session_scope() as s:
        rows = list_versions(s)
    if json_out:
        print_json(rows)
        return
    table = Table()
    for col in ("dataset", "modality", "items", "sealed", "run", "created"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["ref"],
            r["modality"] or "-",
            str(r["items"]),
            "yes" if r["sealed"] else "no",
            str(r["created_by_run"] or "-"),
            r["created_at"].strftime("%Y-%m-%d %H:%M"),
        )
    console.print(table)


@datasets_app.command("show")
def show_cmd(
    ref: Annotated[str, typer.Argument(help="NAME\\[@VERSION] (default: latest sealed version).")],
    json_out: JsonOption = False,
) -> None:
    """Counts of one version: by split, origin (real/synthetic) and label; parent; creating run."""
    from genloom.datasets.versions import resolve_version, version_summary
    from genloom.db.engine import session_scope

    with session_scope() as s:
        summary = version_summary(s, resolve_version(s, ref))
    if json_out:
        print_json(summary)
        return
    console.print(
        f"[bold]{summary['name']}@{summary['version']}[/bold]  {summary['items']} items"
        f"  parent {summary['parent'] or '-'}  created by run {summary['created_by_run'] or '-'}"
    )
    for key in ("by_split", "by_origin", "by_label"):
        console.print(f"  {key}: " + ", ".join(f"{k}={v}" for k, v in summary[key].items()), highlight=False)


@datasets_app.command("caption")
def caption_cmd(
    ref: Annotated[str, typer.Argument(help="NAME\\[@VERSION] to caption (default: latest sealed version).")],
    template: Annotated[
        str,
        typer.Option("--template", help='e.g. "a handwritten {word}": {label}, {word} or an item metadata key.'),
    ],
    json_out: JsonOption = False,
) -> None:
    """Seal a new version whose items carry captions made from their labels/metadata (the old one is unchanged)."""
    from genloom.datasets.captions import caption_version
    from genloom.db.engine import session_scope

    with session_scope() as s:
        result = caption_version(s, ref, template)
    if json_out:
        print_json(result)
        return
    info(
        f"captioned {result['source']} as {result['dataset']}: {result['items']} items, e.g. {result['examples'][0]!r}"
    )


@datasets_app.command("diff")
def diff_cmd(
    a: Annotated[str, typer.Argument(help="NAME@A")],
    b: Annotated[str, typer.Argument(help="NAME@B")],
    json_out: JsonOption = False,
) -> None:
    """Items added, removed and moved between splits from version A to version B."""
    from genloom.datasets.versions import diff_versions, resolve_version
    from genloom.db.engine import session_scope

    with session_scope() as s:
        result = diff_versions(s, resolve_version(s, a), resolve_version(s, b))
    if json_out:
        print_json(result)
        return
    origin = ", ".join(f"{k} {v}" for k, v in result["added_by_origin"].items()) or "none"
    console.print(
        f"{result['a']} → {result['b']}: +{result['added']} −{result['removed']} items, "
        f"{result['moved_split']} moved split, {result['relabelled']} relabelled, "
        f"{result['recaptioned']} recaptioned, {result['unchanged']} unchanged "
        f"(added by origin: {origin})",
        highlight=False,
    )


@datasets_app.command("export")
def export_cmd(
    ref: Annotated[str, typer.Argument(help="NAME\\[@VERSION]")],
    directory: Annotated[Path, typer.Argument(help="Output folder (split/label/ITEM.png or .txt, manifest.json).")],
    json_out: JsonOption = False,
) -> None:
    """Write a version out as files with a manifest."""
    from genloom.datasets.export import export_version
    from genloom.datasets.versions import resolve_version
    from genloom.db.engine import session_scope

    with session_scope() as s:
        result = export_version(s, resolve_version(s, ref), directory)
    if json_out:
        print_json(result)
    else:
        info(
            f"exported {result['files']} files of {result['dataset']} to {result['dir']} (manifest: {result['manifest']})"
        )


def register(app: typer.Typer) -> None:
    app.add_typer(datasets_app, name="datasets")
