"""`genloom eval retrieval --beir DIR`: nDCG@10, Recall@100, MRR@10 per search mode, stored as a run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from genloom.cli.evaluate import eval_app
from genloom.cli.output import JsonOption, console, print_json
from genloom.cli.progress import RichProgress
from genloom.errors import BadInput, GateFailed
from genloom.retrieval.hybrid import DEFAULT_BM25_WEIGHT, DEFAULT_FUSION, DEFAULT_RRF_K


@eval_app.command("retrieval")
def retrieval(
    beir: Annotated[
        Path | None, typer.Option("--beir", help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv.")
    ] = None,
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
    compare: Annotated[
        tuple[str, str] | None,
        typer.Option(
            "--compare",
            help="Two configurations A B on --collection/--queries/--qrels: 'default' or KEY=VALUE,… "
            "(mode, embedding, fusion, bm25_weight, rerank, depth); paired bootstrap CIs of B − A.",
        ),
    ] = None,
    queries: Annotated[Path | None, typer.Option("--queries", help="With --compare: queries.jsonl.")] = None,
    qrels: Annotated[Path | None, typer.Option("--qrels", help="With --compare: qrels TSV.")] = None,
    require_better: Annotated[
        bool,
        typer.Option("--require-better", help="With --compare: exit 1 unless B beats A (nDCG@10 CI above 0)."),
    ] = False,
    json_out: JsonOption = False,
) -> None:
    """Evaluate retrieval on a BEIR dataset (ingesting its corpus first if the collection lacks it),
    or gate a change: --compare A B on a collection's judged queries."""
    if compare is not None:
        _compare(collection, queries, qrels, compare, require_better, json_out)
        return
    if beir is None:
        raise BadInput("give --beir DIR, or --compare A B with --collection, --queries and --qrels")
    from genloom.evaluation.beir import evaluate
    from genloom.retrieval.beir import beir_paths

    beir_paths(beir, split)  # a wrong folder or split fails here, before any progress bar
    mode_list = [m.strip() for m in modes.split(",") if m.strip()]
    if not mode_list:
        raise BadInput("--modes is empty; use e.g. bm25,vector,hybrid")
    with RichProgress() as bar:

        def on_ingest(task: str, done: int, total: int | None, status: str) -> None:  # a genloom.progress.ProgressFn
            if total is not None:  # not while discovering
                bar("ingest corpus", done, max(total, 1))

        report = evaluate(
            beir,
            split=split,
            collection=collection,
            modes=mode_list,
            ingest_progress=on_ingest,
            search_progress=bar,  # a genloom.progress.ProgressFn
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


def _compare(collection, queries, qrels, configs, require_better: bool, json_out: bool) -> None:
    from rich.table import Table

    from genloom.evaluation.compare import METRICS, compare_configs, parse_config
    from genloom.retrieval.beir import read_qrels, read_queries

    if collection is None or queries is None or qrels is None:
        raise BadInput("--compare needs --collection, --queries and --qrels")
    a, b = (parse_config(c) for c in configs)
    judged = read_qrels(qrels)
    with RichProgress() as bar:
        report = compare_configs(
            collection,
            read_queries(queries),
            judged,
            a,
            b,
            source={"queries": str(queries.resolve()), "qrels": str(qrels.resolve())},
            progress=bar,  # a genloom.progress.ProgressFn: "config A", then "config B"
        )
    if json_out:
        print_json(report)
    else:
        table = Table(
            title=f"{collection} · {report['queries']} queries · A run {report['A']['run_id']}, "
            f"B run {report['B']['run_id']}"
        )
        for column in ("metric", "A", "B", "B − A", "95 % CI", "W/L/T"):  # W/L/T: queries B wins, loses, ties
            table.add_column(column, justify="left" if column == "metric" else "right")
        for m in METRICS:
            d = report["delta"][m]
            table.add_row(
                m,
                f"{report['A'][m]:.4f}",
                f"{report['B'][m]:.4f}",
                f"{d['mean']:+.4f}",
                f"[{d['ci_low']:+.4f}, {d['ci_high']:+.4f}]",
                f"{d['wins']}/{d['losses']}/{d['ties']}",
            )
        console.print(f"A: {report['A']['config']}\nB: {report['B']['config']}")
        console.print(table)
        console.print(
            f"rerank ms/query: A {report['A']['rerank_ms_per_query']}, B {report['B']['rerank_ms_per_query']}; "
            + (
                "B is better (nDCG@10 CI above 0)"
                if report["better"]
                else "B is not shown better (nDCG@10 CI not above 0)"
            )
        )
    if require_better and not report["better"]:
        d = report["delta"]["ndcg@10"]
        raise GateFailed(
            f"B is not better than A: nDCG@10 {d['mean']:+.4f}, 95 % CI [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}] "
            f"(eval runs {report['A']['run_id']}, {report['B']['run_id']})"
        )
