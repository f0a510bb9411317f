"""`genloom ingest PATH… --collection NAME`: files into documents, chunks, embeddings and BM25 postings."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from genloom.cli.output import JsonOption, err_console, info, print_json
from genloom.cli.progress import RichProgress
from genloom.errors import BadInput, one_line
from genloom.pairs import parse_pairs


def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files and folders (walked recursively).", show_default=False)],
    collection: Annotated[str, typer.Option("--collection", "-c", help="Collection to ingest into (created if new).")],
    format: Annotated[
        str, typer.Option("--format", "-f", help="auto|text|markdown|html|pdf|jsonl|csv|beir (auto: by extension).")
    ] = "auto",
    text_field: Annotated[str | None, typer.Option("--text-field", help="JSONL/CSV field with the text (default: text, contents, body or content).")] = None,
    id_field: Annotated[str | None, typer.Option("--id-field", help="JSONL/CSV field with the document id (default: _id or id; else file:line).")] = None,
    title_field: Annotated[str | None, typer.Option("--title-field", help="JSONL/CSV field with the title (default: title).")] = None,
    meta: Annotated[list[str] | None, typer.Option("--meta", help="key=value metadata added to every document (repeatable).")] = None,
    chunk_tokens: Annotated[
        int | None, typer.Option("--chunk-tokens", help="Max tokens per chunk (default: the model's max sequence length).")
    ] = None,
    chunk_overlap: Annotated[int, typer.Option("--chunk-overlap", help="Tokens repeated between consecutive chunks.")] = 32,
    model: Annotated[
        str | None, typer.Option("--model", help="Embedding model: a local sentence-transformers folder (default: the bundled all-MiniLM-L6-v2).")
    ] = None,
    text_search_config: Annotated[
        str, typer.Option("--text-search-config", help="Postgres text-search config for BM25 (new collections).")
    ] = "english",
    max_bytes: Annotated[int, typer.Option("--max-bytes", help="Skip files larger than this.")] = 100 * 1024 * 1024,
    skip_bad: Annotated[bool, typer.Option("--skip-bad", help="Skip malformed JSONL/CSV records instead of failing the file.")] = False,
    batch_documents: Annotated[int, typer.Option("--batch", help="Documents per transaction.")] = 256,
    hnsw_m: Annotated[int, typer.Option("--hnsw-m", help="HNSW m for a new embedding model's index.")] = 16,
    hnsw_ef_construction: Annotated[int, typer.Option("--hnsw-ef-construction", help="HNSW ef_construction (new index).")] = 64,
    follow_symlinks: Annotated[
        bool, typer.Option("--follow-symlinks", help="Follow symbolic links that lead outside the folders given.")
    ] = False,
    pii: Annotated[
        str | None,
        typer.Option("--pii", help="off|mask|hash|encrypt personal data (emails, phones, cards, IBANs, IPs, national ids) "
                                   "before storing; remembered as the collection's default."),
    ] = None,
    json_out: JsonOption = False,
) -> None:
    """Ingest files into a collection: idempotent by content hash; a changed file becomes a new version."""
    from genloom.retrieval.vector import HnswConfig
    from ingest.chunking import ChunkConfig
    from ingest.loaders import LoadOptions
    from ingest.pipeline import IngestOptions, ingest as run_ingest

    missing = [str(p) for p in paths if not p.exists()]
    if missing:  # before the progress bar starts
        raise BadInput(f"path not found: {missing[0]}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    if batch_documents < 1:
        raise BadInput("--batch must be at least 1")
    if pii is not None:
        from genloom.pii import check_mode

        check_mode(pii)  # before the progress bar starts
    if chunk_overlap < 0:
        raise BadInput("--chunk-overlap must be 0 or more")
    options = IngestOptions(
        collection=collection,
        load=LoadOptions(
            format=format, text_field=text_field, id_field=id_field, title_field=title_field,
            metadata=parse_pairs(meta, "--meta"), max_bytes=max_bytes, skip_bad=skip_bad,
            follow_symlinks=follow_symlinks,
        ),
        chunking=ChunkConfig(max_tokens=chunk_tokens, overlap=chunk_overlap),
        embedding_model=model,
        text_search_config=text_search_config,
        hnsw=HnswConfig(m=hnsw_m, ef_construction=hnsw_ef_construction),
        batch_documents=batch_documents,
        pii=pii,
    )
    # Not transient unless --json: the final bar (docs, chunks, rates) stays as a summary line.
    with RichProgress(transient=json_out) as bar:
        started = time.perf_counter()

        def progress(done: int, known: int | None, chunks: int) -> None:
            elapsed = max(time.perf_counter() - started, 1e-9)
            bar(f"ingest {collection}", done, known or None,
                f"{done / elapsed:.1f} docs/s · {chunks / elapsed:.1f} chunks/s")

        result = run_ingest(paths, options, progress=progress)
    summary = result.to_json()
    if json_out:
        print_json(summary)
    else:
        for error in result.errors[:20]:
            err_console.print("[yellow]skipped:[/yellow] ", end="")
            err_console.print(one_line(error), markup=False, highlight=False, soft_wrap=True)
        if len(result.errors) > 20:
            info(f"… and {len(result.errors) - 20} more problems (see --json)")
        info(
            f"{collection}: {result.documents} documents written ({result.new_versions} new versions), "
            f"{result.chunks} chunks, {result.skipped} unchanged, {len(result.errors)} problems "
            f"in {result.seconds:.1f}s (run {result.run_id})"
        )
    if result.errors and result.documents == 0 and result.skipped == 0:
        if not json_out:
            raise BadInput(f"nothing ingested: {result.errors[0]}")
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    app.command()(ingest)
