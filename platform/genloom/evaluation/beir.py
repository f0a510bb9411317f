"""The BEIR evaluation job: ingest a BEIR corpus (once), run its queries per search mode, store an evaluate run.

An evaluation job, not part of retrieval: it drives ingestion (the `ingest` package) and
search (`genloom.retrieval`), so retrieval itself never imports the ingestion pipeline.
Reading BEIR files and the metrics live in genloom.retrieval.beir.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from genloom.errors import BadInput
from genloom.progress import ProgressFn
from genloom.retrieval.beir import beir_paths, read_qrels, read_queries, score_run


def evaluate(
    folder: Path,
    *,
    split: str = "test",
    collection: str | None = None,
    modes: Sequence[str] = ("bm25", "vector", "hybrid"),
    ingest_progress: ProgressFn | None = None,
    search_progress: ProgressFn | None = None,
    **search_options,
) -> dict:
    """Ingest the corpus if needed (idempotent), run the split's queries per mode, store an evaluate run.

    Returns {"collection", "split", "queries", "run_id", "modes": {mode: {metric: value}}}.
    """
    import time

    from genloom.db.engine import session_scope
    from genloom.retrieval.collections import get_collection
    from genloom.retrieval.search import MODES, search_many
    from genloom.runs import log_metrics, tracked_run
    from ingest.loaders import LoadOptions
    from ingest.pipeline import IngestOptions, ingest

    folder = Path(folder)
    for mode in modes:
        if mode not in MODES:
            raise BadInput(f"unknown mode {mode!r}; use some of: {', '.join(MODES)}")
    queries_path, qrels_path = beir_paths(folder, split)
    qrels = read_qrels(qrels_path)
    queries = [(q, text) for q, text in read_queries(queries_path) if q in qrels]
    if not queries:
        raise BadInput(f"{queries_path}: none of the queries has judgements in {qrels_path.name}")
    collection = collection or f"beir-{folder.resolve().name}"

    ingested = ingest(
        [folder], IngestOptions(collection=collection, load=LoadOptions(format="beir")), progress=ingest_progress
    )
    with session_scope() as s:
        collection_id = get_collection(s, collection).id

    k = max(100, int(search_options.pop("k", 100)))
    params = {
        "beir": str(folder.resolve()),
        "split": split,
        "collection": collection,
        "modes": list(modes),
        "k": k,
        **{key: v for key, v in search_options.items() if v is not None},
    }
    report: dict = {"collection": collection, "split": split, "queries": len(queries), "modes": {}}
    with tracked_run(
        "evaluate", name=f"beir:{folder.resolve().name}:{split}", params=params, collection_id=collection_id
    ) as run:
        for mode in modes:
            started = time.perf_counter()
            ranking: dict[str, list[str]] = {}
            # Evaluation reads go to a replica, except right after this call's own ingest wrote the
            # corpus: a replica might not have replayed it yet (read-your-writes stays on the primary).
            with session_scope(purpose="write" if ingested.documents or ingested.retired else "read") as s:
                for qid, hits in search_many(
                    s,
                    queries,
                    collection=collection,
                    mode=mode,
                    k=k,
                    by_document=True,
                    progress=search_progress,
                    **search_options,
                ):
                    ranking[qid] = [h.doc_id for h in hits]
            metrics = score_run(ranking, qrels)
            seconds = time.perf_counter() - started
            report["modes"][mode] = {
                **{n: round(v, 4) for n, v in metrics.items()},
                "ms_per_query": round(1000 * seconds / len(queries), 2),
            }
            with session_scope() as s:
                log_metrics(s, run.id, {f"{mode}/{name}": value for name, value in metrics.items()})
        report["run_id"] = run.id
        report["ingest"] = {"written": ingested.documents, "unchanged": ingested.unchanged, "chunks": ingested.chunks}
        run.finish(summary=report)
    return report
