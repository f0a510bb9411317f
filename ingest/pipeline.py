"""The ingest pipeline: files → documents → chunks → embeddings + BM25 postings.

    result = ingest([Path("docs/")], IngestOptions(collection="demo"))

Per batch of whole documents: skip the ones whose content hash is already current
(no embedding, no write), chunk and embed the rest outside any transaction, then write
them in ONE transaction (binary COPY) that also supersedes older versions and updates
the BM25 statistics. So Ctrl-C or a crash leaves only whole documents behind, and a
re-run continues where the last one stopped: the committed documents hash as unchanged.

A large document (streamed by its loader) is written alone, a bounded slice per transaction,
under a row marked incomplete that becomes current only when the last slice is in; a re-run
resumes it from its last slice (`_write_streamed`). Discovery runs to the end first, so progress has final
totals; every file ends up written, unchanged, skipped or failed with a reason (`IngestResult`).
Progress goes through the shared `genloom.progress.ProgressFn` as ("ingest COLLECTION", bytes done,
bytes total or None while discovering, "N chunks embedded · R chunks/s · F/T files · D documents");
see `_Tally`.
With `sync`, documents whose files are gone from the given folders are retired at the end.
"""

from __future__ import annotations

import bisect
import contextlib
import contextvars
import dataclasses
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from genloom.db.bulk import PreparedDocument, append_chunks, write_documents
from genloom.db.engine import session_scope
from genloom.db.errors import is_foreign_key_violation
from genloom.db.queries import documents as queries
from genloom.errors import BadInput, NotFound
from genloom.pii import check_mode, record_findings, redact
from genloom.progress import ProgressFn, report as report_progress
from genloom.retrieval import bm25
from genloom.retrieval.collections import ensure_collection, validate_name
from genloom.retrieval.vector import HnswConfig, ensure_embedding_model
from ingest.chunking import Chunk, ChunkConfig, Chunker, embedding_text
from ingest.loaders import (
    FORMATS,
    LoadError,
    LoadOptions,
    Skipped,
    SourceDocument,
    discover,
    load_file,
    path_metadata,
    selected,
    show,
)


@dataclasses.dataclass
class _Tally:
    """What ingest counts as it goes, reported through the shared `genloom.progress.ProgressFn`
    as (task "ingest COLLECTION", bytes done, bytes total or None, a status line of the counts).
    Totals are final once `discovering` is False and `sized` (`ingest` sizes the files first;
    `ingest_documents` alone gets an iterable of unknown size, so its total stays None)."""

    discovering: bool = True
    sized: bool = False
    files_total: int = 0  # files found (to load, or skipped/failed at discovery)
    files_done: int = 0
    bytes_total: int = 0  # bytes of the files to load: the bar's (and the ETA's) denominator
    bytes_done: int = 0
    documents_done: int = 0  # written, unchanged or rejected
    chunks: int = 0  # chunks embedded and written (the real work)
    # The batch being embedded now, counted chunk by chunk (a batch of 256 documents can take
    # minutes): its chunks embedded so far, of how many, and the bytes of its documents.
    embedding_done: int = 0
    embedding_total: int = 0
    embedding_bytes: int = 0
    started: float = dataclasses.field(default_factory=time.perf_counter)  # when discovery ended

    @property
    def chunks_embedded(self) -> int:
        """Chunks written plus those of the batch in hand already embedded."""
        return self.chunks + self.embedding_done

    def rate(self) -> float:
        """Chunks embedded per second since discovery ended."""
        elapsed = time.perf_counter() - self.started
        return self.chunks_embedded / elapsed if elapsed > 0 else 0.0

    def done(self) -> int:
        """Bytes done, the batch in hand counted by its share of chunks embedded."""
        in_hand = self.embedding_bytes * self.embedding_done // self.embedding_total if self.embedding_total else 0
        return self.bytes_done + in_hand

    def status(self) -> str:
        if self.discovering:
            return f"discovering: {self.files_total} files"
        files = f" · {self.files_done}/{self.files_total} files" if self.sized else ""
        return (
            f"{self.chunks_embedded:,} chunks embedded · {self.rate():.1f} chunks/s{files}"
            f" · {self.documents_done:,} documents"
        )

    def send(self, progress: ProgressFn | None, task: str) -> None:
        total = self.bytes_total if self.sized and not self.discovering else None
        report_progress(progress, task, 0 if self.discovering else self.done(), total, self.status())


@dataclasses.dataclass
class IngestOptions:
    collection: str
    load: LoadOptions = dataclasses.field(default_factory=LoadOptions)
    chunking: ChunkConfig = dataclasses.field(default_factory=ChunkConfig)
    embedding_model: str | None = None  # None: the bundled all-MiniLM-L6-v2
    text_search_config: str = "english"  # only used when the collection is created
    hnsw: HnswConfig = dataclasses.field(default_factory=HnswConfig)
    batch_documents: int = 256  # documents per transaction (and per embedding call)
    batch_bytes: int = 16 * 1024 * 1024  # ... or fewer, so a batch never holds more text than this
    stream_batch_chunks: int = 512  # a streamed (large) document is embedded and written this many chunks at a time
    embed_batch_size: int = 64  # sentence-transformers' encode batch
    pii: str | None = None  # off|mask|hash|encrypt (genloom.pii); None: the collection's default, else off
    sync: bool = False  # retire documents whose files are gone from the given folders


@dataclasses.dataclass
class IngestResult:
    """The report: every file and record is written, unchanged, skipped or failed, with a reason."""

    collection: str
    documents: int = 0  # documents written (new, or a new version of a changed one)
    new_versions: int = 0  # of those, how many superseded an older version
    chunks: int = 0
    unchanged: int = 0  # documents whose content hash is current: nothing written
    metadata_updated: int = 0  # of the unchanged, those whose metadata alone changed (--meta): updated in place
    retired: int = 0  # --sync: documents whose files are gone, no longer searchable
    skipped: Counter = dataclasses.field(default_factory=Counter)  # reason -> count (deliberately not ingested)
    failed: Counter = dataclasses.field(default_factory=Counter)  # reason -> count (could not be ingested)
    problems: list[Skipped] = dataclasses.field(default_factory=list)
    retired_ids: list[str] = dataclasses.field(default_factory=list)
    resumed: int = 0  # large documents an interrupted ingest had begun: this run went on from its last slice
    excluded: int = 0  # files left out by --include/--exclude
    incomplete_chunks: int = 0  # chunks of the large document being written, committed but not current yet
    seconds: float = 0.0
    embed_seconds: float = 0.0
    write_seconds: float = 0.0
    run_id: int | None = None

    @property
    def written(self) -> int:
        return self.documents

    @property
    def errors(self) -> list[str]:
        """One line per problem worth reading (hidden files are counted, not listed)."""
        return [p.detail for p in self.problems if p.reason != "hidden"]

    def note(self, problem: Skipped) -> None:
        (self.failed if problem.status == "failed" else self.skipped)[problem.reason] += 1
        self.problems.append(problem)

    def to_json(self, *, limit: int | None = None) -> dict[str, Any]:
        problems = self.problems if limit is None else self.problems[:limit]
        return {
            "collection": self.collection,
            "written": self.documents,
            "new_versions": self.new_versions,
            "unchanged": self.unchanged,
            "metadata_updated": self.metadata_updated,
            "retired": self.retired,
            "resumed": self.resumed,
            "excluded": self.excluded,
            "skipped": {"total": sum(self.skipped.values()), "by_reason": dict(sorted(self.skipped.items()))},
            "failed": {"total": sum(self.failed.values()), "by_reason": dict(sorted(self.failed.items()))},
            "chunks": self.chunks,
            "seconds": round(self.seconds, 3),
            "run_id": self.run_id,
            "problems": [
                {"path": p.path, "status": p.status, "reason": p.reason, "detail": p.detail} for p in problems
            ],
            "retired_documents": self.retired_ids if limit is None else self.retired_ids[:limit],
        }

    def summary_line(self) -> str:
        """The same words as --json: written, unchanged, retired, skipped (by reason), failed (by reason)."""

        def by_reason(counts: Counter) -> str:
            total = sum(counts.values())
            if not total:
                return "0"
            return f"{total} (" + ", ".join(f"{reason} {n}" for reason, n in sorted(counts.items())) + ")"

        versions = f" ({self.new_versions} new versions)" if self.new_versions else ""
        retired = f", {self.retired} retired" if self.retired else ""
        resumed = f", {self.resumed} resumed" if self.resumed else ""
        excluded = f", {self.excluded} excluded" if self.excluded else ""
        meta = f" ({self.metadata_updated} with new metadata)" if self.metadata_updated else ""
        return (
            f"{self.collection}: {self.documents} written{versions}{resumed}, {self.unchanged} unchanged{meta}"
            f"{retired}{excluded}, "
            f"skipped {by_reason(self.skipped)}, failed {by_reason(self.failed)}; "
            f"{self.chunks} chunks in {self.seconds:.1f}s (run {self.run_id})"
        )


def ingest(
    paths: Iterable[str | Path],
    options: IngestOptions,
    *,
    progress: ProgressFn | None = None,
    engine: Engine | None = None,
) -> IngestResult:
    """Ingest files and folders into a collection; see the module docstring for the guarantees."""
    given = [Path(p) for p in paths]
    if not given:
        raise BadInput("nothing to ingest: give at least one file or folder")
    missing = [show(p) for p in given if not p.exists() and not p.is_symlink()]
    if missing:
        raise BadInput(
            f"path not found: {missing[0]}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
        )
    if options.load.format not in FORMATS:
        raise BadInput(f"unknown format {options.load.format!r}; use one of: {', '.join(FORMATS)}")
    if options.sync and not any(p.is_dir() for p in given):
        raise BadInput("--sync mirrors folders: give at least one folder")
    result = IngestResult(collection=options.collection)
    state = _Tally(sized=True)

    # 1. Discovery, to the end, before any work: the totals of the progress bar never grow.
    sources = []
    try:
        for source in discover(given, options.load.format, follow_symlinks=options.load.follow_symlinks):
            if (options.load.include or options.load.exclude) and not selected(
                path_metadata(Path(source.path), given)["path"], options.load.include, options.load.exclude
            ):
                result.excluded += 1  # not a problem: the user asked for it
                continue
            state.files_total += 1
            if source.problem is not None:
                result.note(source.problem)
                state.files_done += 1
            else:
                sources.append(source)
                state.bytes_total += source.size
            if state.files_total % 200 == 0:
                state.send(progress, _task(options))
    except LoadError as exc:
        raise BadInput(str(exc)) from None
    state.discovering = False
    state.started = time.perf_counter()
    state.send(progress, _task(options))  # the totals, final now; the renderer's clock starts here
    # Files that exist, loadable or not: --sync retires only documents whose file is not among them.
    seen_paths = {os.path.realpath(s.path) for s in sources} | {
        os.path.realpath(p.path) for p in result.problems if p.reason != "hidden"
    }

    def documents() -> Iterator[SourceDocument]:
        for source in sources:
            try:
                assert source.format is not None  # discovery gives every source without a problem a format
                loaded = load_file(source.path, source.format, options.load)
            except LoadError as exc:
                result.note(Skipped(str(source.path), exc.reason, str(exc), exc.status))
                state.bytes_done += source.size
                state.files_done += 1
                continue
            for problem in loaded.skipped_lines:
                result.note(problem)
            state.files_done += 1
            where = path_metadata(Path(source.path), given)
            for doc in loaded.documents:
                doc.metadata = {**where, **doc.metadata}  # a record's own path/folder/ext wins
            if not loaded.documents:
                state.bytes_done += source.size
            else:
                share = source.size // len(loaded.documents)
                for doc in loaded.documents:
                    doc.size = share
                loaded.documents[-1].size += source.size - share * len(loaded.documents)  # no byte lost
            yield from loaded.documents

    roots = [p for p in given if p.is_dir()] if options.sync else []
    return ingest_documents(
        documents(),
        options,
        progress=progress,
        engine=engine,
        result=result,
        state=state,
        sync_roots=roots,
        sync_seen=seen_paths,
    )


def ingest_documents(
    docs: Iterable[SourceDocument],
    options: IngestOptions,
    *,
    progress: ProgressFn | None = None,
    engine: Engine | None = None,
    result: IngestResult | None = None,
    state: _Tally | None = None,
    sync_roots: list[Path] | None = None,
    sync_seen: set[str] | None = None,
) -> IngestResult:
    """Ingest SourceDocuments (written, unchanged, or reported); optionally retire what --sync says is gone."""
    from genloom import embeddings
    from genloom.runs import tracked_run

    started = time.perf_counter()
    validate_name(options.collection)
    result = result or IngestResult(collection=options.collection)
    state = state or _Tally(discovering=False)
    task = _task(options)
    try:
        model = embeddings.get_embedder(options.embedding_model)
    except embeddings.EmbeddingModelError as exc:
        raise BadInput(str(exc)) from None
    model_name = embeddings.model_name(options.embedding_model)
    try:
        chunker = Chunker(model.tokenizer, int(model.max_seq_length), options.chunking)
    except ValueError as exc:
        raise BadInput(str(exc)) from None

    params = {
        "collection": options.collection,
        "format": options.load.format,
        "embedding_model": model_name,
        "chunk_tokens": chunker.limit,
        "chunk_overlap": options.chunking.overlap,
        "metadata": options.load.metadata,
        "sync": options.sync,
    }
    # The run is committed before the first write of the ingest (the collection's), so a write
    # that fails there (a full disk) leaves a failed run with its cause, not nothing.
    with tracked_run("ingest", params=params) as run:
        result.run_id = run.id
        with session_scope(engine) as s:
            emb_model = ensure_embedding_model(
                s, model_name, embeddings.embedding_dim(options.embedding_model), hnsw=options.hnsw
            )
            collection = ensure_collection(
                s, options.collection, text_search_config=options.text_search_config, embedding_model_id=emb_model.id
            )
            collection_id, ts_config, model_id = collection.id, collection.text_search_config, emb_model.id
            pii_mode = _pii_mode(s, collection_id, options.pii)
            queries.record_run_collection(s, run.id, collection_id, ts_config)
        pii_found: dict[str, dict[str, list]] = {}  # external id → field → findings (for pii_findings)
        # Each batch commits whole; a large document commits slice by slice, current once whole.
        run.committed = lambda: (
            {"documents": result.documents, "chunks": result.chunks}
            | ({"chunks of an unfinished large document": result.incomplete_chunks} if result.incomplete_chunks else {})
        )
        run.resume_hint = (
            "run the same ingest again: written documents are skipped, a large one goes on where it stopped"
        )
        seen: set[str] = set()
        batch: list[SourceDocument] = []
        batch_bytes = 0
        # One writer thread: batch i is written while batch i+1 is embedded, so the
        # database work hides behind the model (torch and psycopg both release the GIL).
        writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="genloom-ingest-writer")
        pending: Future | None = None

        def report(in_flight: int = 0) -> None:
            state.chunks = result.chunks + in_flight  # in_flight: chunks of a streamed document so far
            state.send(progress, task)

        def passed(docs: list[SourceDocument]) -> None:
            state.documents_done += len(docs)
            state.bytes_done += sum(d.size for d in docs)
            report()

        def wait_for_writer() -> None:
            nonlocal pending
            if pending is not None:
                written = pending.result()  # re-raises the writer's error here
                pending = None
                passed(written)

        def flush() -> None:
            nonlocal pending, batch_bytes
            if not batch:
                return
            docs = list(batch)

            def embedding(done: int, total: int, todo_bytes: int) -> None:
                state.embedding_done, state.embedding_total, state.embedding_bytes = done, total, todo_bytes
                state.send(progress, task)

            prepared = _prepare_batch(docs, collection_id, chunker, options, result, engine, on_embedded=embedding)
            state.embedding_done = state.embedding_total = state.embedding_bytes = 0
            batch.clear()
            batch_bytes = 0
            wait_for_writer()
            if prepared.todo:
                # copy_context: the writer thread works for the caller's tenant (genloom.db.tenancy)
                prepared.pii = {
                    d.external_id: pii_found.pop(d.external_id) for d in prepared.todo if d.external_id in pii_found
                }
                prepared.pii_mode = pii_mode
                pending = writer.submit(
                    contextvars.copy_context().run,
                    _write_batch,
                    prepared,
                    collection_id,
                    ts_config,
                    model_id,
                    result,
                    engine,
                )
            else:
                passed(docs)

        try:
            for doc in docs:
                if pii_mode != "off":  # before hashing and chunking: the clear value never reaches a table
                    if doc.stream is not None:
                        result.note(
                            Skipped(
                                doc.external_id,
                                "pii on a large file",
                                f"{show(doc.external_id)}: too large to redact in memory; split it, or ingest it without --pii",
                                "failed",
                            )
                        )
                        passed([doc])
                        continue
                    doc, pii_found[doc.external_id] = _redact(doc, pii_mode)
                if doc.stream is None and not doc.text.strip():
                    result.note(Skipped(doc.external_id, "empty", f"{show(doc.external_id)}: empty document, skipped"))
                    passed([doc])
                    continue
                if doc.external_id in seen:
                    result.note(
                        Skipped(
                            doc.external_id,
                            "duplicate id",
                            f"{show(doc.external_id)}: duplicate id in this input, first occurrence kept",
                        )
                    )
                    passed([doc])
                    continue
                seen.add(doc.external_id)
                if doc.stream is not None:
                    # A large document: alone, in bounded slices (see _write_streamed).
                    flush()
                    wait_for_writer()
                    try:
                        _write_streamed(
                            doc, collection_id, ts_config, model_id, chunker, options, result, state, report, engine
                        )
                    except LoadError as exc:  # a bad file: nothing of it stays (see _write_streamed)
                        result.note(Skipped(doc.external_id, exc.reason, str(exc), exc.status))
                    state.documents_done += 1
                    report()
                    continue
                batch.append(doc)
                batch_bytes += len(doc.text)
                if len(batch) >= options.batch_documents or batch_bytes >= options.batch_bytes:
                    flush()
            flush()
            wait_for_writer()
        except sa.exc.IntegrityError as exc:
            _raise_if_collection_deleted(exc, options.collection, collection_id, engine)
            raise
        finally:
            # On Ctrl-C or an error the batch being written still commits or rolls back whole.
            writer.shutdown(wait=True)
        if sync_roots:
            _retire_missing(collection_id, sync_roots, sync_seen or set(), result, engine)
        result.seconds = time.perf_counter() - started
        summary = result.to_json(limit=100) | {
            "embed_seconds": round(result.embed_seconds, 3),
            "write_seconds": round(result.write_seconds, 3),
            "chunks_per_second": round(result.chunks / result.seconds, 2) if result.seconds else None,
        }
        run.finish(summary=summary)
    return result


def _raise_if_collection_deleted(exc: sa.exc.IntegrityError, name: str, collection_id: int, engine) -> None:
    """A `collections delete` racing the ingest makes its next write break a foreign key (documents
    → collections, or chunks → a cascaded document): if the collection is gone, say that in one line."""
    if not is_foreign_key_violation(exc):
        return
    with session_scope(engine) as s:
        gone = not queries.collection_exists(s, collection_id)
    if gone:
        raise NotFound(f"collection {name!r} was deleted while ingesting") from None


def _task(options: IngestOptions) -> str:
    """The name ingest reports its progress under (a bar's label in the CLI)."""
    return f"ingest {options.collection}"


def _pii_mode(session, collection_id: int, explicit: str | None) -> str:
    """--pii, remembered as the collection's default when it has none; else that default; else off."""
    if explicit is not None:
        mode = check_mode(explicit)
        queries.remember_pii_mode(session, collection_id, mode)
        return mode
    return check_mode(queries.collection_pii_mode(session, collection_id))


def _redact(doc: SourceDocument, mode: str) -> tuple[SourceDocument, dict[str, list]]:
    text, in_text = redact(doc.text, mode)
    title, in_title = redact(doc.title, mode)
    found = {k: v for k, v in (("text", in_text), ("title", in_title)) if v}
    return dataclasses.replace(doc, text=text or "", title=title), found


def _retire_missing(collection_id: int, roots: list[Path], seen: set[str], result: IngestResult, engine) -> None:
    """--sync: one transaction retires every current document whose file is gone."""
    from genloom.retrieval.documents import retire_documents

    with session_scope(engine) as s:
        bm25.lock_collection_stats(s, collection_id)
        gone: list[tuple[int, str]] = []
        for root in roots:
            prefix = str(root.resolve()).rstrip(os.sep) + os.sep
            gone += queries.gone_documents(s, collection_id, prefix, seen)
        ids = sorted({doc_id for doc_id, _ in gone})
        retire_documents(s, collection_id, ids, run_id=result.run_id)
        # A large file whose interrupted ingest was never finished, and that is gone now.
        for root in roots:
            prefix = str(root.resolve()).rstrip(os.sep) + os.sep
            queries.delete_gone_incomplete(s, collection_id, prefix, seen)
    result.retired = len(ids)
    result.retired_ids = sorted({external for _, external in gone})


BM25_SLICE = 4096  # chunks of a streamed document indexed for BM25 per statement


def chunk_locations(doc: SourceDocument, chunks: list[Chunk]) -> list[dict[str, Any]]:
    """Per chunk, where it came from: character offsets, the PDF page(s), the heading path."""
    page_starts = [offset for offset, _ in doc.pages]
    heading_starts = [offset for offset, _ in doc.headings]
    out = []
    for c in chunks:
        meta: dict[str, Any] = {"start": c.start, "end": c.end}
        if page_starts:
            first = doc.pages[max(bisect.bisect_right(page_starts, c.start) - 1, 0)][1]
            last = doc.pages[max(bisect.bisect_right(page_starts, max(c.end - 1, c.start)) - 1, 0)][1]
            meta["page"] = first
            if last != first:
                meta["page_range"] = [first, last]
        if heading_starts:
            at = bisect.bisect_right(heading_starts, c.start) - 1
            if at >= 0:
                meta["heading"] = doc.headings[at][1]
        out.append(meta)
    return out


def _current(session, collection_id: int, docs: list[SourceDocument]) -> dict[str, Any]:
    return queries.current_versions(session, collection_id, [d.external_id for d in docs])


def _metadata_only_change(doc: SourceDocument, row: Any) -> bool:
    """Whether DOC differs from its current stored version in metadata alone: the stored hash is
    what DOC would hash to with the stored metadata (less the set-meta keys, stored beside it)."""
    if row.current_id is None or row.current_metadata is None or doc.content_sha256 is not None:
        return False
    user = row.user_metadata or {}
    stored = {k: v for k, v in row.current_metadata.items() if k not in user}
    return dataclasses.replace(doc, metadata=stored).sha256 == row.current_sha256


@dataclasses.dataclass
class _PreparedBatch:
    docs: list[SourceDocument]  # the whole batch, unchanged ones included
    todo: list[SourceDocument]  # the ones to write
    chunked: list[list[Chunk]]
    vectors: Any  # (total chunks, dim) float32
    pii: dict[str, dict[str, list]] = dataclasses.field(default_factory=dict)  # external id → field → findings
    pii_mode: str = "off"


def _prepare_batch(
    batch: list[SourceDocument],
    collection_id: int,
    chunker: Chunker,
    options: IngestOptions,
    result: IngestResult,
    engine: Engine | None,
    *,
    on_embedded: Callable[[int, int, int], None] | None = None,
) -> _PreparedBatch:
    """Hash, chunk and embed a batch; on_embedded(chunks done, chunks in the batch, its bytes)
    after every embedding slice, so progress moves by chunks, not by batches."""
    import numpy as np

    from genloom.embeddings import embed

    # 1. Unchanged documents cost one query and nothing else.
    with session_scope(engine) as s:
        current = _current(s, collection_id, batch)
    todo = [d for d in batch if not (d.external_id in current and current[d.external_id].current_sha256 == d.sha256)]
    # 1b. Same title and text, other metadata (`--meta` changed): update the current version's
    # metadata in place; its chunks and vectors stay, nothing is embedded again.
    meta_only = [d for d in todo if d.external_id in current and _metadata_only_change(d, current[d.external_id])]
    if meta_only:
        from genloom.db.queries import update_document_metadata

        with session_scope(engine) as s:
            for d in meta_only:
                row = current[d.external_id]
                user = row.user_metadata or {}
                update_document_metadata(s, row.current_id, {**d.metadata, **user}, d.sha256)
        result.metadata_updated += len(meta_only)
        todo = [d for d in todo if d not in meta_only]
    result.unchanged += len(batch) - len(todo)
    if not todo:
        return _PreparedBatch(batch, [], [], None)

    # 2. Chunk and embed outside any transaction (the slow part holds no locks).
    t0 = time.perf_counter()
    chunked = [chunker.chunk(d.text, d.title) for d in todo]
    texts = [embedding_text(d.title, c.text) for d, chunks in zip(todo, chunked) for c in chunks]
    todo_bytes = sum(d.size for d in todo)
    step = options.embed_batch_size * 4  # a few encode batches per report: moves every few seconds on a CPU
    parts = []
    for start in range(0, len(texts), step):
        parts.append(
            embed(texts[start : start + step], name=options.embedding_model, batch_size=options.embed_batch_size)
        )
        if on_embedded:
            on_embedded(min(start + step, len(texts)), len(texts), todo_bytes)
    vectors = np.concatenate(parts) if parts else embed(texts, name=options.embedding_model)
    result.embed_seconds += time.perf_counter() - t0
    return _PreparedBatch(batch, todo, chunked, vectors)


def _write_batch(
    prepared: _PreparedBatch,
    collection_id: int,
    ts_config: str,
    model_id: int,
    result: IngestResult,
    engine: Engine | None,
) -> list[SourceDocument]:
    """3. One transaction: supersede old versions, write the new ones, update BM25 statistics."""
    todo, chunked, vectors = prepared.todo, prepared.chunked, prepared.vectors
    t0 = time.perf_counter()
    with session_scope(engine) as s:
        bm25.lock_collection_stats(s, collection_id)
        current = _current(s, collection_id, todo)  # again, under the lock: another ingest may have run
        rows_out: list[PreparedDocument] = []
        superseded: list[int] = []
        offset = 0
        for doc, chunks in zip(todo, chunked):
            rows = vectors[offset : offset + len(chunks)]
            offset += len(chunks)
            row = current.get(doc.external_id)
            if row is not None and row.current_sha256 == doc.sha256:
                result.unchanged += 1
                continue
            if row is not None and row.current_id is not None:
                superseded.append(row.current_id)
            rows_out.append(
                PreparedDocument(
                    external_id=doc.external_id,
                    version=(row.last_version + 1) if row is not None else 1,
                    sha256=doc.sha256,
                    title=doc.title,
                    uri=doc.uri,
                    mime_type=doc.mime_type,
                    metadata=doc.metadata,
                    user_metadata=(row.user_metadata or {}) if row is not None else {},
                    chunk_texts=[c.text for c in chunks],
                    token_counts=[c.token_count for c in chunks],
                    chunk_metadata=chunk_locations(doc, chunks),
                    vectors=rows,
                )
            )
        if superseded:
            queries.supersede_documents(s, superseded)
            bm25.retire_documents(s, collection_id, superseded)
        doc_ids, chunk_ids = write_documents(s, collection_id, model_id, rows_out)
        for row, doc_id in zip(rows_out, doc_ids):
            for field, findings in prepared.pii.get(row.external_id, {}).items():
                record_findings(s, "document", doc_id, field, findings, prepared.pii_mode)
        bm25.index_chunks(s, collection_id, ts_config, chunk_ids)
    result.write_seconds += time.perf_counter() - t0
    result.documents += len(rows_out)
    result.new_versions += len(superseded)
    result.chunks += len(chunk_ids)
    return prepared.docs


def _write_streamed(
    doc: SourceDocument,
    collection_id: int,
    ts_config: str,
    model_id: int,
    chunker: Chunker,
    options: IngestOptions,
    result: IngestResult,
    state: _Tally,
    report: Callable[[int], None],
    engine: Engine | None,
) -> None:
    """A large document, never whole in memory, committed slice by slice and resumable.

    Its segments are chunked, embedded and COPYed `stream_batch_chunks` at a time, each slice in
    a transaction of its own, under a document row marked `incomplete` (and superseded, so no
    search and no BM25 statistic sees it). Memory stays bounded by one slice, and a kill or
    Ctrl-C loses at most one slice: the next ingest of the same content finds the incomplete
    row, skips the chunks it holds (chunking is deterministic; they are not embedded again) and
    goes on. Only the last transaction, under the statistics lock, makes the new version
    current (superseding the old one) and indexes it for BM25. An incomplete row of other
    content (the file changed in between) is deleted first. One writer per document at a time.
    """
    from genloom.embeddings import embed

    with _document_writer_lock(engine, collection_id, doc.external_id):
        with session_scope(engine) as s:
            earlier = queries.incomplete_document(s, collection_id, doc.external_id)
            # Resume only what this run would write itself: the same content, cut the same way
            # (other chunk settings change the first two chunks). Else start the document afresh.
            if earlier is not None and not (
                earlier.sha256 == doc.sha256 and _starts_with(doc, chunker, list(earlier.first))
            ):
                queries.delete_document(s, earlier.id)
                earlier = None
            row = _current(s, collection_id, [doc]).get(doc.external_id)
            if row is not None and row.current_sha256 == doc.sha256:
                result.unchanged += 1
                state.bytes_done += doc.size
                return
            inherited = (row.user_metadata or {}) if row is not None else {}
        document_id: int | None = earlier.id if earlier is not None else None
        stored = int(earlier.chunks) if earlier is not None else 0  # committed by an interrupted ingest
        if stored:
            result.resumed += 1
        written = 0  # chunks this run committed
        pending: list[Chunk] = []
        chunk_no = 0  # chunks of the document seen so far, stored ones included
        size_left = doc.size
        base = 0  # offset of the current segment in the document's text

        def write_slice() -> None:
            nonlocal document_id, written
            t0 = time.perf_counter()
            vectors = embed(
                [embedding_text(doc.title, c.text) for c in pending],
                name=options.embedding_model,
                batch_size=options.embed_batch_size,
            )
            t1 = time.perf_counter()
            with session_scope(engine) as s:
                if document_id is None:
                    document_id = _insert_incomplete(s, collection_id, doc, inherited)
                append_chunks(
                    s,
                    document_id,
                    model_id,
                    stored + written,
                    [c.text for c in pending],
                    [c.token_count for c in pending],
                    vectors,
                    [{"start": c.start, "end": c.end} for c in pending],
                )
            written += len(pending)
            result.incomplete_chunks = stored + written
            result.embed_seconds += t1 - t0
            result.write_seconds += time.perf_counter() - t1
            pending.clear()
            report(stored + written)

        assert doc.stream is not None  # only a streamed document comes here
        try:
            for segment in doc.stream():
                for chunk in chunker.chunk(segment, doc.title):
                    chunk_no += 1
                    if chunk_no <= stored:  # in the database already
                        continue
                    chunk.start, chunk.end = chunk.start + base, chunk.end + base
                    pending.append(chunk)
                    if len(pending) >= options.stream_batch_chunks:
                        write_slice()
                base += len(segment) + 2  # segments read as if joined by a blank line
                step = min(len(segment.encode("utf-8", "ignore")), size_left)
                size_left -= step
                state.bytes_done += step
            if pending:
                write_slice()
        except LoadError:
            # The file itself is bad (e.g. not UTF-8 past its first megabyte): a failed file
            # leaves nothing, so its slices go too. An interruption keeps them for the resume.
            if document_id is not None:
                with session_scope(engine) as s:
                    queries.delete_document(s, document_id)
            result.incomplete_chunks = 0
            raise
        state.bytes_done += size_left
        if document_id is None:  # no chunk at all: whitespace only
            result.note(Skipped(doc.external_id, "empty", f"{show(doc.external_id)}: empty document, skipped"))
            return
        t0 = time.perf_counter()
        with session_scope(engine) as s:
            bm25.lock_collection_stats(s, collection_id)
            row = _current(s, collection_id, [doc]).get(doc.external_id)  # again, under the lock
            if row is not None and row.current_id is not None:
                queries.supersede_documents(s, [row.current_id])
                bm25.retire_documents(s, collection_id, [row.current_id])
                result.new_versions += 1
            chunk_ids = queries.make_current(s, document_id)
            # In slices: the same statistics (df and N add up), but no statement materialises the
            # lexemes of the whole document at once.
            for i in range(0, len(chunk_ids), BM25_SLICE):
                bm25.index_chunks(s, collection_id, ts_config, chunk_ids[i : i + BM25_SLICE])
        result.write_seconds += time.perf_counter() - t0
    result.incomplete_chunks = 0
    result.documents += 1
    result.chunks += len(chunk_ids)


def _starts_with(doc: SourceDocument, chunker: Chunker, texts: list[str]) -> bool:
    """Whether the document's first chunks, cut by this chunker, are TEXTS (read from its first segment)."""
    if not texts:
        return True
    assert doc.stream is not None
    first = next(iter(doc.stream()), "")
    return [c.text for c in chunker.chunk(first, doc.title)[: len(texts)]] == texts


def _insert_incomplete(session, collection_id: int, doc: SourceDocument, inherited: dict) -> int:
    """The row a streamed document's chunks hang on until it is whole: incomplete, not current."""
    return queries.insert_incomplete_document(
        session,
        collection_id,
        external_id=doc.external_id,
        uri=doc.uri,
        title=doc.title,
        mime_type=doc.mime_type,
        sha256=doc.sha256,
        metadata={**doc.metadata, **inherited},
        user_metadata=inherited,
    )


@contextlib.contextmanager
def _document_writer_lock(engine: Engine | None, collection_id: int, external_id: str) -> Iterator[None]:
    """Hold a session advisory lock on (collection, external id) on a connection of its own, so two
    ingests never append to one incomplete document; a killed process's lock goes with it."""
    from genloom.db.engine import get_engine

    key = f"genloom.ingest.{collection_id}:{external_id}"
    with (engine or get_engine()).connect() as conn:
        locked = queries.try_document_lock(conn, key)
        conn.commit()  # a session lock outlives the transaction; leave none open while the document streams
        if not locked:
            raise LoadError(
                f"{show(external_id)}: another ingest is writing this document now; run again when it is done",
                "busy",
            )
        try:
            yield
        finally:
            queries.release_document_lock(conn, key)
            conn.commit()
