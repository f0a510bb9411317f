"""`genloom search`: one query (a table, or --json), or a file of queries (--queries → JSONL)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from genloom.cli.output import WHERE_HELP, WHERE_JSON_HELP, JsonOption, console, dumps, err_console, print_json
from genloom.cli.progress import RichProgress
from genloom.errors import BadInput
from genloom.retrieval.hybrid import DEFAULT_BM25_WEIGHT, DEFAULT_FUSION, DEFAULT_RRF_K


def search(
    query: Annotated[
        str | None, typer.Argument(help="What to search for (or use --queries FILE).", show_default=False)
    ] = None,
    # `...`: typer's marker for a required option (it cannot go without a default after QUERY's)
    collection: Annotated[str, typer.Option("--collection", "-c", help="Collection to search.")] = ...,  # type: ignore[assignment]
    mode: Annotated[str, typer.Option("--mode", "-m", help="hybrid | bm25 | vector.")] = "hybrid",
    k: Annotated[int, typer.Option("-k", "--k", help="Number of results.")] = 10,
    where: Annotated[list[str] | None, typer.Option("--where", help=WHERE_HELP)] = None,
    where_json: Annotated[str | None, typer.Option("--where-json", help=WHERE_JSON_HELP)] = None,
    embedding_model: Annotated[
        str | None,
        typer.Option("--embedding-model", help="Search with another model that has vectors here (see genloom embed)."),
    ] = None,
    by_document: Annotated[
        bool, typer.Option("--by-document", help="One result per document (its best chunk).")
    ] = False,
    include_superseded: Annotated[
        bool, typer.Option("--include-superseded", help="Also search old document versions.")
    ] = False,
    fusion: Annotated[
        str, typer.Option("--fusion", help="weighted (min-max normalised scores) | rrf (reciprocal rank fusion).")
    ] = DEFAULT_FUSION,
    rrf_k: Annotated[int, typer.Option("--rrf-k", help="RRF constant.")] = DEFAULT_RRF_K,
    bm25_weight: Annotated[
        float, typer.Option("--bm25-weight", help="Weighted fusion: share of the BM25 score.")
    ] = DEFAULT_BM25_WEIGHT,
    depth: Annotated[
        int | None,
        typer.Option("--depth", help="Candidates per branch (default: max(100, k), tripled with --by-document)."),
    ] = None,
    ef_search: Annotated[
        int | None, typer.Option("--ef-search", help="HNSW ef_search for this query (default: 100).")
    ] = None,
    queries: Annotated[
        Path | None,
        typer.Option("--queries", help="Batch mode: BEIR queries.jsonl (_id, text) or JSONL with id/query."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Batch mode: write the JSONL here instead of stdout.")
    ] = None,
    rerank: Annotated[
        str | None,
        typer.Option("--rerank", help="Rerank the top hits with this reranker NAME[@V] (genloom train reranker)."),
    ] = None,
    rerank_depth: Annotated[
        int | None, typer.Option("--rerank-depth", help="How many of the top hits the reranker rescores (default 50).")
    ] = None,
    no_rerank: Annotated[bool, typer.Option("--no-rerank", help="Skip the collection's default reranker.")] = False,
    json_out: JsonOption = False,
) -> None:
    """Search a collection: BM25 and vectors fused in SQL (or one branch with --mode).

    With `genloom serve` running on the same store, its already-loaded model embeds the query.
    """
    from genloom.api.local import ServerGone, find_server
    from genloom.db.engine import run_read
    from genloom.retrieval.filters import combine, parse_where, parse_where_json
    from genloom.retrieval.rerank import search_reranked

    filters = combine(parse_where(where), parse_where_json(where_json))
    options: dict[str, Any] = dict(
        collection=collection,
        mode=mode,
        k=k,
        where=filters or None,
        by_document=by_document,
        include_superseded=include_superseded,
        fusion=fusion,
        rrf_k=rrf_k,
        bm25_weight=bm25_weight,
        depth=depth,
        ef_search=ef_search,
        embedding_model=embedding_model,
    )
    if no_rerank and rerank:
        raise BadInput("give either --rerank MODEL or --no-rerank, not both")
    options.update(rerank_model=rerank, rerank_depth=rerank_depth, use_default=not no_rerank)
    if queries is not None:
        if query is not None:
            raise BadInput("give either a QUERY or --queries FILE, not both")
        _batch(queries, out, options)
        return
    if query is None:
        raise BadInput('missing query: genloom search "QUERY" --collection NAME (or --queries FILE)')
    server = find_server()
    # run_read: on a replica when one is fresh enough; a replica failing mid-search is retried on the primary.
    try:
        hits, timing = run_read(
            lambda session: search_reranked(session, query, embedder=server.embed if server else None, **options)
        )
    except ServerGone:  # it stopped since it advertised itself: embed here instead
        hits, timing = run_read(lambda session: search_reranked(session, query, **options))
    if json_out:
        if timing["rerank_ms"] is None:
            print_json([_hit_json(h) for h in hits])
        else:  # reranked: the hits with the time each stage took
            print_json(
                {
                    "hits": [_hit_json(h) for h in hits],
                    "reranker": timing["reranker"],
                    "rerank_depth": timing["rerank_depth"],
                    "timings_ms": {"search": round(timing["search_ms"], 2), "rerank": round(timing["rerank_ms"], 2)},
                }
            )
        return
    if not hits:
        err_console.print("no results")
        return
    from rich.markup import escape

    # One block per hit (not a table): readable at any terminal width, and in logs.
    for rank, hit in enumerate(hits, 1):
        doc = hit.metadata.get("path") or (Path(hit.doc_id).name if hit.doc_id.startswith("/") else hit.doc_id)
        branches = f"bm25 #{hit.bm25_rank or '-'} · vector #{hit.vector_rank or '-'}"
        if hit.rerank_score is not None:
            branches += f" · rerank {hit.rerank_score:.3f}"
        version = f" v{hit.document_version}" if hit.document_version > 1 else ""
        console.print(
            f"[bold]{rank:>2}[/bold]  {hit.score:.4f}  [cyan]{escape(doc)}{version}[/cyan]  "
            f"{escape(hit.location)}  [dim]({branches})[/dim]",
            soft_wrap=True,
            highlight=False,
        )
        snippet = " ".join(hit.text.split())
        console.print("    " + escape(snippet[:240] + ("…" if len(snippet) > 240 else "")), highlight=False)


def _hit_json(hit) -> dict:
    from genloom.retrieval.locations import location_fields

    return {
        "doc_id": hit.doc_id,
        "chunk_id": hit.chunk_id,
        "document_id": hit.document_id,
        "document_version": hit.document_version,
        "title": hit.title,
        "text": hit.text,
        "score": hit.score,
        "bm25_rank": hit.bm25_rank,
        "bm25_score": hit.bm25_score,
        "vector_rank": hit.vector_rank,
        "vector_score": hit.vector_score,
        "rerank_score": hit.rerank_score,
        "metadata": hit.metadata,
        **location_fields(hit.metadata),
        "location": hit.location,
    }


def _batch(path: Path, out: Path | None, options: dict) -> None:
    from genloom.db.engine import session_scope
    from genloom.retrieval.beir import read_queries
    from genloom.retrieval.rerank import search_many_reranked

    items = read_queries(path)
    sink = out.open("w", encoding="utf-8") if out else sys.stdout
    try:
        with RichProgress() as bar, session_scope(purpose="read") as session:
            for query_id, hits, timing in search_many_reranked(
                session, items, progress=lambda _task, done, total, _status: bar("search", done, total), **options
            ):
                line: dict = {"query_id": query_id}
                results = [{"doc_id": h.doc_id, "chunk_id": h.chunk_id, "score": h.score} for h in hits]
                if timing["rerank_ms"] is not None:  # reranked: each hit's reranker score, and the time it took
                    for result, hit in zip(results, hits):
                        result["rerank_score"] = hit.rerank_score
                    line.update(reranker=timing["reranker"], rerank_ms=round(timing["rerank_ms"], 2))
                line["results"] = results
                sink.write(dumps(line) + "\n")
    finally:
        if out:
            sink.close()
    if out:
        err_console.print(f"{len(items)} queries → {out}")


def register(app: typer.Typer) -> None:
    app.command()(search)
