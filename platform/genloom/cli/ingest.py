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

PLAIN_PROGRESS_EVERY_S = 5.0  # stderr not a terminal: one progress line this often


def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files and folders (walked recursively).", show_default=False)],
    collection: Annotated[str, typer.Option("--collection", "-c", help="Collection to ingest into (created if new).")],
    format: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            help="auto|text|markdown|html|pdf|docx|epub|jsonl|csv|beir (auto: by extension, else by content).",
        ),
    ] = "auto",
    text_field: Annotated[
        str | None,
        typer.Option("--text-field", help="JSONL/CSV field with the text (default: text, contents, body or content)."),
    ] = None,
    id_field: Annotated[
        str | None,
        typer.Option("--id-field", help="JSONL/CSV field with the document id (default: _id or id; else file:line)."),
    ] = None,
    title_field: Annotated[
        str | None, typer.Option("--title-field", help="JSONL/CSV field with the title (default: title).")
    ] = None,
    meta: Annotated[
        list[str] | None, typer.Option("--meta", help="key=value metadata added to every document (repeatable).")
    ] = None,
    chunk_tokens: Annotated[
        int | None,
        typer.Option("--chunk-tokens", help="Max tokens per chunk (default: the model's max sequence length)."),
    ] = None,
    chunk_overlap: Annotated[
        int, typer.Option("--chunk-overlap", help="Tokens repeated between consecutive chunks.")
    ] = 32,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="Embedding model: a local sentence-transformers folder (default: the bundled all-MiniLM-L6-v2).",
        ),
    ] = None,
    text_search_config: Annotated[
        str, typer.Option("--text-search-config", help="Postgres text-search config for BM25 (new collections).")
    ] = "english",
    max_bytes: Annotated[
        int, typer.Option("--max-bytes", help="Refuse files larger than this, on disk or inflated (.gz, .docx, .epub).")
    ] = 100 * 1024 * 1024,
    skip_bad: Annotated[
        bool, typer.Option("--skip-bad", help="Skip malformed JSONL/CSV records instead of failing the file.")
    ] = False,
    batch_documents: Annotated[int, typer.Option("--batch", help="Documents per transaction.")] = 256,
    hnsw_m: Annotated[int, typer.Option("--hnsw-m", help="HNSW m for a new embedding model's index.")] = 16,
    hnsw_ef_construction: Annotated[
        int, typer.Option("--hnsw-ef-construction", help="HNSW ef_construction (new index).")
    ] = 64,
    follow_symlinks: Annotated[
        bool, typer.Option("--follow-symlinks", help="Follow symbolic links that lead outside the folders given.")
    ] = False,
    include: Annotated[
        list[str] | None,
        typer.Option(
            "--include", help="Only files whose relative path or name matches this glob (repeatable), e.g. '*.md'."
        ),
    ] = None,
    exclude: Annotated[
        list[str] | None,
        typer.Option(
            "--exclude",
            help="Leave out files whose relative path or name matches this glob (repeatable), e.g. '*.min.js'.",
        ),
    ] = None,
    pii: Annotated[
        str | None,
        typer.Option(
            "--pii",
            help="off|mask|hash|encrypt personal data (emails, phones, cards, IBANs, IPs, national ids) "
            "before storing; remembered as the collection's default.",
        ),
    ] = None,
    sync: Annotated[
        bool,
        typer.Option(
            "--sync",
            help="Mirror the folders: retire documents whose files are gone (kept for past citations, no longer searchable).",
        ),
    ] = False,
    json_out: JsonOption = False,
) -> None:
    """Ingest files into a collection: idempotent by content hash; a changed file becomes a new version.

    Every file is accounted for: the report counts documents written, unchanged, skipped and
    failed (by reason); --json lists each skipped or failed path with its reason.
    """
    from genloom.retrieval.vector import HnswConfig
    from ingest.chunking import ChunkConfig
    from ingest.loaders import LoadOptions
    from ingest.pipeline import IngestOptions, ingest as run_ingest

    missing = [str(p) for p in paths if not p.exists() and not p.is_symlink()]
    if missing:  # before the progress bar starts
        raise BadInput(
            f"path not found: {missing[0]}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
        )
    if sync and not any(p.is_dir() for p in paths):
        raise BadInput("--sync mirrors folders: give at least one folder")
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
            format=format,
            text_field=text_field,
            id_field=id_field,
            title_field=title_field,
            metadata=parse_pairs(meta, "--meta"),
            max_bytes=max_bytes,
            skip_bad=skip_bad,
            follow_symlinks=follow_symlinks,
            include=list(include or []),
            exclude=list(exclude or []),
        ),
        chunking=ChunkConfig(max_tokens=chunk_tokens, overlap=chunk_overlap),
        embedding_model=model,
        text_search_config=text_search_config,
        hnsw=HnswConfig(m=hnsw_m, ef_construction=hnsw_ef_construction),
        batch_documents=batch_documents,
        pii=pii,
        sync=sync,
    )
    # Not transient unless --json: the final bar stays as a summary line.
    # On a terminal: a bar. Piped or redirected stderr (a log, CI): a plain line every few seconds.
    plain = not json_out and not err_console.is_terminal
    with RichProgress(transient=json_out, terminal_only=True) as bar:
        last_line = [time.monotonic()]
        started: list[float] = []  # when the totals became known (discovery ended): the ETA's clock

        def progress(task: str, done: int, total: int | None, status: str) -> None:  # a genloom.progress.ProgressFn
            if total is None:  # discovering
                bar(task, 0, None, status)
                return
            if not started:
                started.append(time.perf_counter())
            eta = _eta(done, total, time.perf_counter() - started[0])
            status += f" · ETA {_duration(eta)}" if eta is not None else ""
            bar(task, done, max(total, 1), status)
            if plain and time.monotonic() - last_line[0] >= PLAIN_PROGRESS_EVERY_S:
                last_line[0] = time.monotonic()
                err_console.print(f"{task}: {status}", markup=False, highlight=False, soft_wrap=True)

        result = run_ingest(paths, options, progress=progress)
    if json_out:
        print_json(result.to_json())
    else:
        problems = [p for p in result.problems if p.reason != "hidden"]
        for problem in problems[:20]:
            err_console.print(f"[yellow]{problem.status} ({problem.reason}):[/yellow] ", end="")
            err_console.print(one_line(problem.detail), markup=False, highlight=False, soft_wrap=True)
        if len(problems) > 20:
            info(f"… and {len(problems) - 20} more (each with its path and reason in --json)")
        err_console.print(one_line(result.summary_line()), markup=False, soft_wrap=True, highlight=False)
    if result.documents == 0 and result.unchanged == 0 and result.retired == 0 and result.problems:
        first = next((p for p in result.problems if p.reason != "hidden"), result.problems[0])
        if not json_out:
            raise BadInput(f"nothing ingested: {first.detail}")
        raise typer.Exit(code=1)


def _eta(done: int, total: int, elapsed: float) -> float | None:
    """Seconds left at the pace so far (None before any byte is done)."""
    if done <= 0 or total <= 0:
        return None
    return max(elapsed * (total - done) / done, 0.0)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def embed(
    collection: Annotated[str, typer.Option("--collection", "-c", help="Collection whose current chunks to embed.")],
    model: Annotated[
        str, typer.Option("--model", help="A local sentence-transformers folder, or a registered embedder NAME[@V].")
    ],
    batch: Annotated[
        int, typer.Option("--batch", help="Chunks per transaction (a re-run resumes after the last one).")
    ] = 256,
    json_out: JsonOption = False,
) -> None:
    """Add vectors from another embedding model to a collection (resumable; its own HNSW index)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ingest.embed_models import embed_collection

    with Progress(
        TextColumn("[bold]embed[/bold] " + collection),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=json_out,
    ) as bar:
        task = bar.add_task("embed", total=None)
        result = embed_collection(
            collection,
            model,
            batch=batch,
            progress=lambda _task, done, total, _status: bar.update(task, completed=done, total=total),
        )
    if json_out:
        print_json(result.to_json())
        return
    if result.truncation_warning:
        info(f"[yellow]note:[/yellow] {result.truncation_warning}")
    info(
        f"{collection}: {result.embedded} chunks embedded with {result.model} ({result.already} had vectors already) "
        f"in {result.seconds:.1f}s (run {result.run_id}); search with --embedding-model {model}"
    )


def register(app: typer.Typer) -> None:
    app.command()(ingest)
    app.command()(embed)
