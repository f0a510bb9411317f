"""`genloom eval retrieval --beir DIR`: nDCG@10, Recall@100, MRR@10 per search mode, stored as a run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from genloom.cli.evaluate import eval_app
from genloom.cli.output import JsonOption, console, print_json
from genloom.cli.progress import RichProgress
from genloom.errors import BadInput
from genloom.retrieval.hybrid import DEFAULT_BM25_WEIGHT, DEFAULT_FUSION, DEFAULT_RRF_K


@eval_app.command("retrieval")
def retrieval(
    beir: Annotated[Path, typer.Option("--beir", help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv.")],
    split: Annotated[str, typer.Option("--split", help="Which qrels to score (test, train, dev).")] = "test",
    collection: Annotated[
        str | None, typer.Option("--collection", "-c", help="Collection (default: beir-FOLDERNAME).")
    ] = None,
    modes: Annotated[str, typer.Option("--modes", help="Comma-separated: bm25,vector,hybrid.")] = "bm25,vector,hybrid",
    fusion: Annotated[str, typer.Option("--fusion", help="weighted | rrf.")] = DEFAULT_FUSION,
    rrf_k: Annotated[int, typer.Option("--rrf-k", help="RRF constant.")] = DEFAULT_RRF_K,
    bm25_weight: Annotated[
        float, typer.Option("--bm25-weight", help="Weighted fusion: share of BM25.")
    ] = DEFAULT_BM25_WEIGHT,
    depth: Annotated[
        int | None,
        typer.Option("--depth", help="Candidates per branch (default: 300; evaluation searches by document)."),
    ] = None,
    embedding_model: Annotated[
        str | None,
        typer.Option("--embedding-model", help="Vector branch with another model (genloom embed), to compare models."),
    ] = None,
    json_out: JsonOption = False,
) -> None:
    """Evaluate retrieval on a BEIR dataset (ingesting its corpus first if the collection lacks it)."""
    from genloom.evaluation.beir import evaluate
    from genloom.retrieval.beir import beir_paths

    beir_paths(beir, split)  # a wrong folder or split fails here, before any progress bar
    mode_list = [m.strip() for m in modes.split(",") if m.strip()]
    if not mode_list:
        raise BadInput("--modes is empty; use e.g. bm25,vector,hybrid")
    with RichProgress() as bar:

        def on_ingest(p) -> None:  # an ingest.pipeline.IngestProgress
            if not p.discovering:
                bar("ingest corpus", p.bytes_done, max(p.bytes_total, 1))

        def on_search(done: int, total: int) -> None:
            bar("queries", done, total)

        report = evaluate(
            beir,
            split=split,
            collection=collection,
            modes=mode_list,
            ingest_progress=on_ingest,
            search_progress=on_search,
            fusion=fusion,
            rrf_k=rrf_k,
            bm25_weight=bm25_weight,
            depth=depth,
            embedding_model=embedding_model,
        )
    if json_out:
        print_json(report)
        return
    from rich.table import Table

    table = Table(
        title=f"{report['collection']} · {report['split']} · {report['queries']} queries · run {report['run_id']}"
    )
    for column in ("mode", "nDCG@10", "Recall@100", "MRR@10", "ms/query"):
        table.add_column(column, justify="right" if column != "mode" else "left")
    for mode, m in report["modes"].items():
        table.add_row(
            mode, f"{m['ndcg@10']:.4f}", f"{m['recall@100']:.4f}", f"{m['mrr@10']:.4f}", f"{m['ms_per_query']:.1f}"
        )
    console.print(table)
