"""Near-duplicate chunks of an ingested collection, flagged so search can collapse them.

`genloom dedup --collection NAME` looks at the chunks of the collection's current
document versions, oldest document first, and flags every chunk that duplicates an
earlier one: exact/normalised text, MinHash (Jaccard ≥ 0.8 on 5-char shingles), and
semantic (cosine ≥ 0.95 between the chunk embeddings ingestion already stored, found
through the collection's HNSW index on `embeddings`). Flags go to `chunk_duplicates`
(chunk, duplicate_of, method, similarity, run), replacing the collection's previous
flags in the same transaction as the run's success. Retrieval collapses them with

    ... LEFT JOIN chunk_duplicates d ON d.chunk_id = c.id WHERE d.chunk_id IS NULL

Chunks are never deleted: past answers cite them.
"""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa

from genloom.dedup import Decision
from genloom.dedup.job import DedupOptions, stages
from genloom.errors import BadInput
from genloom.progress import ProgressFn
from genloom.retrieval.collections import get_collection


def collection_job(
    name: str, opts: DedupOptions | None = None, *, progress: ProgressFn | None = None
) -> dict[str, Any]:
    from genloom.db.engine import session_scope
    from genloom.db.models import ChunkDuplicate, EmbeddingModel
    from genloom.db.queries.dedup import current_chunk_texts
    from genloom.dedup import semantic
    from genloom.dedup.exact import exact_duplicates, text_key
    from genloom.dedup.minhash import MinHashConfig, minhash_duplicates
    from genloom.runs import log_metrics, tracked_run

    opts = opts or DedupOptions()
    opts.check()
    methods = opts.methods("text")
    started = time.perf_counter()
    with session_scope() as s:
        coll = get_collection(s, name)
        coll_id, model_id = coll.id, coll.embedding_model_id
    with tracked_run(
        "dedup",
        params={"collection": name, "methods": methods, "threshold": opts.threshold, "dry_run": opts.dry_run},
        collection_id=coll_id,
    ) as run:
        stage = stages(progress, f"dedup collection {name}")
        with session_scope() as s:
            rows = current_chunk_texts(s, coll_id)
            if not rows:
                raise BadInput(f"collection {name!r} has no chunks to compare")
            alive = list(rows)
            decisions: list[Decision] = []
            details: dict[str, Any] = {}
            for method in methods:
                if stage:
                    stage(method, 0, len(alive))
                if method == "exact":
                    found = exact_duplicates(((i, text_key(t)) for i, t in alive), method="normalized")
                elif method == "minhash":
                    minhash = MinHashConfig(
                        threshold=opts.threshold or 0.8, num_perm=opts.num_perm, ngram=opts.ngram, unit=opts.unit
                    )
                    found = minhash_duplicates(alive, minhash)
                else:
                    if model_id is None:
                        details["semantic"] = "skipped: the collection has no embedding model"
                        continue
                    dim = s.scalars(sa.select(EmbeddingModel.dim).where(EmbeddingModel.id == model_id)).one()
                    space = semantic.VectorSpace("embeddings", "chunk_id", "embedding_model_id", int(model_id), dim)
                    cfg = semantic.SemanticConfig(threshold=opts.threshold or semantic.DEFAULT_THRESHOLDS["text"])
                    found = semantic.semantic_duplicates(s, space, [i for i, _ in alive], cfg)
                    details["cosine_threshold"] = cfg.threshold
                decisions.extend(found)
                gone = {d.dropped for d in found}
                alive = [(i, t) for i, t in alive if i not in gone]
            by_method: dict[str, int] = {m: 0 for m in methods}
            for d in decisions:
                key = "exact" if d.method == "normalized" else d.method
                by_method[key] = by_method.get(key, 0) + 1
            if not opts.dry_run:
                s.execute(sa.delete(ChunkDuplicate).where(ChunkDuplicate.collection_id == coll_id))
                if decisions:
                    s.execute(
                        sa.insert(ChunkDuplicate),
                        [
                            {
                                "chunk_id": d.dropped,
                                "duplicate_of_chunk_id": d.kept,
                                "collection_id": coll_id,
                                "method": d.method,
                                "similarity": d.similarity,
                                "run_id": run.id,
                            }
                            for d in decisions
                        ],
                    )
            metrics = {
                "dedup_items": len(rows),
                "dedup_kept": len(rows) - len(decisions),
                "dedup_dropped": len(decisions),
                **{f"dedup_dropped_{m}": n for m, n in by_method.items()},
                "dedup_seconds": time.perf_counter() - started,
            }
            log_metrics(s, run.id, metrics)
            report = {
                "collection": name,
                "chunks": len(rows),
                "flagged": len(decisions),
                "by_method": by_method,
                "dry_run": opts.dry_run,
                "methods": methods,
                **details,
            }
            run.finish(session=s, summary=report)
    return {"run_id": run.id, **report}
