"""The ingest pipeline: files → documents → chunks → embeddings + BM25 postings.

    result = ingest([Path("docs/")], IngestOptions(collection="demo"))

Per batch of whole documents: skip the ones whose content hash is already current
(no embedding, no write), chunk and embed the rest outside any transaction, then write
them in ONE transaction (binary COPY) that also supersedes older versions and updates
the BM25 statistics. So Ctrl-C or a crash leaves only whole documents behind, and a
re-run continues where the last one stopped: the committed documents hash as unchanged.
"""

from __future__ import annotations

import contextvars
import dataclasses
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from genloom.db.engine import session_scope
from genloom.errors import BadInput
from genloom.pii import check_mode, record_findings, redact
from genloom.retrieval import bm25
from genloom.retrieval.collections import ensure_collection, validate_name
from genloom.retrieval.vector import HnswConfig, ensure_embedding_model
from ingest.chunking import Chunk, ChunkConfig, Chunker, embedding_text
from ingest.loaders import FORMATS, LoadError, LoadOptions, SourceDocument, discover, load_file
from ingest.writer import PreparedDocument, write_documents

ProgressFn = Callable[[int, int | None, int], None]  # (documents done, documents known, chunks written)


@dataclasses.dataclass
class IngestOptions:
    collection: str
    load: LoadOptions = dataclasses.field(default_factory=LoadOptions)
    chunking: ChunkConfig = dataclasses.field(default_factory=ChunkConfig)
    embedding_model: str | None = None  # None: the bundled all-MiniLM-L6-v2
    text_search_config: str = "english"  # only used when the collection is created
    hnsw: HnswConfig = dataclasses.field(default_factory=HnswConfig)
    batch_documents: int = 256  # documents per transaction (and per embedding call)
    embed_batch_size: int = 64  # sentence-transformers' encode batch
    pii: str | None = None  # off|mask|hash|encrypt (genloom.pii); None: the collection's default, else off


@dataclasses.dataclass
class IngestResult:
    collection: str
    documents: int = 0  # documents written (new, or a new version of a changed one)
    new_versions: int = 0  # of those, how many superseded an older version
    chunks: int = 0
    skipped: int = 0  # unchanged documents: nothing written
    errors: list[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    embed_seconds: float = 0.0
    write_seconds: float = 0.0
    run_id: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "documents": self.documents,
            "chunks": self.chunks,
            "skipped": self.skipped,
            "errors": self.errors,
            "seconds": round(self.seconds, 3),
            "new_versions": self.new_versions,
            "collection": self.collection,
            "run_id": self.run_id,
        }


def ingest(
    paths: Iterable[str | Path],
    options: IngestOptions,
    *,
    progress: ProgressFn | None = None,
    engine: Engine | None = None,
) -> IngestResult:
    """Ingest files and folders into a collection; see the module docstring for the guarantees."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise BadInput("nothing to ingest: give at least one file or folder")
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise BadInput(f"path not found: {missing[0]}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    if options.load.format not in FORMATS:
        raise BadInput(f"unknown format {options.load.format!r}; use one of: {', '.join(FORMATS)}")
    result = IngestResult(collection=options.collection)

    def documents() -> Iterator[SourceDocument | int]:
        try:
            sources = list(discover(paths, options.load.format, follow_symlinks=options.load.follow_symlinks,
                                    skipped=result.errors))
        except LoadError as exc:
            raise BadInput(str(exc)) from None
        for path, fmt in sources:
            try:
                loaded = load_file(path, fmt, options.load)
            except LoadError as exc:
                result.errors.append(str(exc))
                continue
            result.errors.extend(loaded.skipped_lines)
            yield len(loaded.documents)  # tells the progress bar how many are coming
            yield from loaded.documents

    return ingest_documents(documents(), options, progress=progress, engine=engine, result=result)


def ingest_documents(
    docs: Iterable[SourceDocument | int],
    options: IngestOptions,
    *,
    progress: ProgressFn | None = None,
    engine: Engine | None = None,
    result: IngestResult | None = None,
) -> IngestResult:
    """Ingest SourceDocuments (ints in the stream announce how many documents follow)."""
    from genloom import embeddings
    from genloom.runs import tracked_run

    started = time.perf_counter()
    validate_name(options.collection)
    result = result or IngestResult(collection=options.collection)
    try:
        model = embeddings.get_embedder(options.embedding_model)
    except embeddings.EmbeddingModelError as exc:
        raise BadInput(str(exc)) from None
    model_name = embeddings.model_name(options.embedding_model)
    try:
        chunker = Chunker(model.tokenizer, int(model.max_seq_length), options.chunking)
    except ValueError as exc:
        raise BadInput(str(exc)) from None

    with session_scope(engine) as s:
        emb_model = ensure_embedding_model(s, model_name, embeddings.embedding_dim(options.embedding_model), hnsw=options.hnsw)
        collection = ensure_collection(
            s, options.collection, text_search_config=options.text_search_config, embedding_model_id=emb_model.id
        )
        collection_id, ts_config, model_id = collection.id, collection.text_search_config, emb_model.id
        pii_mode = _pii_mode(s, collection_id, options.pii)
    pii_found: dict[str, dict[str, list]] = {}  # external id → field → findings (for pii_findings)

    params = {
        "collection": options.collection,
        "format": options.load.format,
        "embedding_model": model_name,
        "chunk_tokens": chunker.limit,
        "chunk_overlap": options.chunking.overlap,
        "text_search_config": ts_config,
        "metadata": options.load.metadata,
    }
    with tracked_run("ingest", params=params, collection_id=collection_id) as run:
        result.run_id = run.id
        run.committed = lambda: {"documents": result.documents, "chunks": result.chunks}  # each batch commits whole
        known = 0  # documents announced by the loaders so far
        passed = 0  # documents dealt with: written, unchanged, or rejected (empty, duplicate)
        seen: set[str] = set()
        batch: list[SourceDocument] = []
        # One writer thread: batch i is written while batch i+1 is embedded, so the
        # database work hides behind the model (torch and psycopg both release the GIL).
        writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="genloom-ingest-writer")
        pending: Future | None = None

        def report() -> None:
            if progress:
                progress(passed, max(known, passed), result.chunks)

        def wait_for_writer() -> None:
            nonlocal pending, passed
            if pending is not None:
                written = pending.result()  # re-raises the writer's error here
                pending = None
                passed += written
                report()

        def flush() -> None:
            nonlocal pending, passed
            if not batch:
                return
            prepared = _prepare_batch(list(batch), collection_id, chunker, options, result, engine)
            batch.clear()
            wait_for_writer()
            if prepared.todo:
                # copy_context: the writer thread works for the caller's tenant (genloom.db.tenancy)
                prepared.pii = {d.external_id: pii_found.pop(d.external_id) for d in prepared.todo
                                if d.external_id in pii_found}
                prepared.pii_mode = pii_mode
                pending = writer.submit(contextvars.copy_context().run, _write_batch, prepared, collection_id, ts_config,
                                        model_id, result, engine)
            else:
                passed += prepared.size
                report()

        try:
            for doc in docs:
                if isinstance(doc, int):
                    known += doc
                    report()
                    continue
                if pii_mode != "off":  # before hashing and chunking: the clear value never reaches a table
                    doc, pii_found[doc.external_id] = _redact(doc, pii_mode)
                if not doc.text.strip():
                    result.errors.append(f"{doc.external_id}: empty document, skipped")
                    passed += 1
                    continue
                if doc.external_id in seen:
                    result.errors.append(f"{doc.external_id}: duplicate id in this input, first occurrence kept")
                    passed += 1
                    continue
                seen.add(doc.external_id)
                batch.append(doc)
                if len(batch) >= options.batch_documents:
                    flush()
            flush()
            wait_for_writer()
        finally:
            # On Ctrl-C or an error the batch being written still commits or rolls back whole.
            writer.shutdown(wait=True)
        result.seconds = time.perf_counter() - started
        summary = result.to_json() | {
            "embed_seconds": round(result.embed_seconds, 3),
            "write_seconds": round(result.write_seconds, 3),
            "chunks_per_second": round(result.chunks / result.seconds, 2) if result.seconds else None,
            "errors": result.errors[:100],
        }
        run.finish(summary=summary)
    return result


def _pii_mode(session, collection_id: int, explicit: str | None) -> str:
    """--pii, remembered as the collection's default when it has none; else that default; else off."""
    if explicit is not None:
        mode = check_mode(explicit)
        session.execute(sa.text("UPDATE collections SET pii_mode = :m WHERE id = :c AND pii_mode IS NULL"),
                        {"m": mode, "c": collection_id})
        return mode
    return check_mode(session.scalar(sa.text("SELECT pii_mode FROM collections WHERE id = :c"), {"c": collection_id}))


def _redact(doc: SourceDocument, mode: str) -> tuple[SourceDocument, dict[str, list]]:
    text, in_text = redact(doc.text, mode)
    title, in_title = redact(doc.title, mode)
    found = {k: v for k, v in (("text", in_text), ("title", in_title)) if v}
    return dataclasses.replace(doc, text=text, title=title), found


_CURRENT_SQL = """
SELECT external_id,
       max(version) AS last_version,
       max(id) FILTER (WHERE superseded_at IS NULL) AS current_id,
       max(sha256) FILTER (WHERE superseded_at IS NULL) AS current_sha256
FROM documents
WHERE collection_id = :c AND external_id = ANY(:ids)
GROUP BY external_id
"""


def _current(session, collection_id: int, docs: list[SourceDocument]) -> dict[str, Any]:
    rows = session.execute(sa.text(_CURRENT_SQL), {"c": collection_id, "ids": [d.external_id for d in docs]})
    return {row.external_id: row for row in rows}


@dataclasses.dataclass
class _PreparedBatch:
    size: int  # documents in the batch, unchanged ones included
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
) -> _PreparedBatch:
    from genloom.embeddings import embed

    # 1. Unchanged documents cost one query and nothing else.
    with session_scope(engine) as s:
        current = _current(s, collection_id, batch)
    todo = [d for d in batch if not (d.external_id in current and current[d.external_id].current_sha256 == d.sha256)]
    result.skipped += len(batch) - len(todo)
    if not todo:
        return _PreparedBatch(len(batch), [], [], None)

    # 2. Chunk and embed outside any transaction (the slow part holds no locks).
    t0 = time.perf_counter()
    chunked = [chunker.chunk(d.text, d.title) for d in todo]
    texts = [embedding_text(d.title, c.text) for d, chunks in zip(todo, chunked) for c in chunks]
    vectors = embed(texts, name=options.embedding_model, batch_size=options.embed_batch_size)
    result.embed_seconds += time.perf_counter() - t0
    return _PreparedBatch(len(batch), todo, chunked, vectors)


def _write_batch(
    prepared: _PreparedBatch,
    collection_id: int,
    ts_config: str,
    model_id: int,
    result: IngestResult,
    engine: Engine | None,
) -> int:
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
                result.skipped += 1
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
                    chunk_texts=[c.text for c in chunks],
                    token_counts=[c.token_count for c in chunks],
                    vectors=rows,
                )
            )
        if superseded:
            s.execute(
                sa.text("UPDATE documents SET superseded_at = now() WHERE id = ANY(:ids)"), {"ids": superseded}
            )
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
    return prepared.size
