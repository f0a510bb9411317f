"""Leakage check: val/test items that have an exact or near duplicate in the train split.

The same methods as dedup, but asymmetric: train items are the reference and are never
flagged; each val/test item is looked up among train items only (a hash table for
exact, an LSH index of the train texts for MinHash, an HNSW search restricted to train
items for semantic). Reports, writes no version: a `dedup` run with metrics
`leakage_val`, `leakage_test`, `leakage_rate` and the pairs in its summary.
"""

from __future__ import annotations

import time
from typing import Any

from genloom.dedup import Decision
from genloom.dedup.job import DedupOptions, Member, load_members, prepare_embedder, stages
from genloom.progress import ProgressFn


def _exact(train: list[Member], others: list[Member], modality: str) -> dict[int, Decision]:
    from genloom.dedup.exact import image_key, text_key

    key = (lambda m: text_key(m.text or "")) if modality == "text" else (lambda m: image_key(m.image))
    by_sha = {m.sha256: m.item_id for m in reversed(train)}
    by_key = {key(m): m.item_id for m in reversed(train)}
    out = {}
    for m in others:
        if m.sha256 in by_sha:
            out[m.item_id] = Decision(m.item_id, by_sha[m.sha256], "exact", 1.0)
        elif (k := key(m)) in by_key:
            out[m.item_id] = Decision(m.item_id, by_key[k], "normalized", 1.0)
    return out


def _minhash(train: list[Member], others: list[Member], opts: DedupOptions) -> dict[int, Decision]:
    from genloom.dedup.minhash import MinHashConfig, MinHasher, jaccard, lsh_index, shingle_hashes

    cfg = MinHashConfig(threshold=opts.threshold or 0.8, num_perm=opts.num_perm, ngram=opts.ngram, unit=opts.unit)
    hasher = MinHasher(cfg)
    lsh = lsh_index(cfg)
    shingles = {}
    for m in train:
        h = shingle_hashes(m.text or "", ngram=cfg.ngram, unit=cfg.unit)
        shingles[m.item_id] = h
        lsh.insert(m.item_id, hasher.signature(h), check_duplication=False)
    out = {}
    for m in others:
        h = shingle_hashes(m.text or "", ngram=cfg.ngram, unit=cfg.unit)
        best = max(((jaccard(h, shingles[c]), -c) for c in lsh.query(hasher.signature(h))), default=None)
        if best is not None and best[0] >= cfg.threshold:
            out[m.item_id] = Decision(m.item_id, -best[1], "minhash", float(best[0]))
    return out


def _semantic(
    session, train: list[Member], others: list[Member], opts: DedupOptions, info
) -> tuple[dict[int, Decision], dict]:
    from genloom.db.engine import session_scope
    from genloom.dedup import semantic

    everyone = {m.item_id: m for m in train + others}
    with session_scope() as s:
        embedder, compute, kind = prepare_embedder(s, info.modality, opts, info)
        semantic.embed_missing(s, embedder, list(everyone), lambda ids: compute([everyone[i] for i in ids]))
    with session_scope() as s:
        semantic.ensure_index(s, embedder)
    threshold = opts.threshold or semantic.DEFAULT_THRESHOLDS[kind]
    cfg = semantic.SemanticConfig(threshold=threshold)
    found = semantic.cross_neighbours(session, embedder, [m.item_id for m in others], [m.item_id for m in train], cfg)
    out = {q: Decision(q, n[0][0], "semantic", n[0][1]) for q, n in found.items() if n}
    return out, {"embedder": embedder.name, "cosine_threshold": threshold}


def leakage_job(
    dataset_ref: str, opts: DedupOptions | None = None, *, examples: int = 20, progress: ProgressFn | None = None
) -> dict[str, Any]:
    from genloom.datasets.versions import describe_version, resolve_version
    from genloom.db.engine import session_scope
    from genloom.runs import log_metrics, tracked_run

    opts = opts or DedupOptions()
    opts.check()
    with session_scope() as s:
        info = describe_version(s, resolve_version(s, dataset_ref))
    methods = opts.methods(info.modality)
    started = time.perf_counter()
    with tracked_run(
        "dedup",
        params={"dataset": info.ref, "leakage": True, "methods": methods, "threshold": opts.threshold},
        input_version_id=info.version_id,
    ) as run:
        stage = stages(progress, f"leakage {info.ref}")
        with session_scope() as s:
            members = load_members(s, info.version_id, info.modality)
            train = [m for m in members if m.split == "train"]
            others = [m for m in members if m.split in ("val", "test")]
            leaks: dict[int, Decision] = {}
            details: dict[str, Any] = {}
            for method in methods:
                if stage:
                    stage(method, 0, len(others))
                todo = [m for m in others if m.item_id not in leaks]
                if method == "exact":
                    leaks.update(_exact(train, todo, info.modality))
                elif method == "minhash":
                    leaks.update(_minhash(train, todo, opts))
                else:
                    found, extra = _semantic(s, train, todo, opts, info)
                    leaks.update(found)
                    details.update(extra)
            split_of = {m.item_id: m.split for m in others}
            by_split = {sp: sum(1 for i in leaks if split_of[i] == sp) for sp in ("val", "test")}
            sizes = {sp: sum(1 for m in others if m.split == sp) for sp in ("val", "test")}
            by_method: dict[str, int] = {m: 0 for m in methods}
            for d in leaks.values():
                key = "exact" if d.method == "normalized" else d.method
                by_method[key] = by_method.get(key, 0) + 1
            metrics = {
                "leakage_val": by_split["val"],
                "leakage_test": by_split["test"],
                "leakage_rate": len(leaks) / len(others) if others else 0.0,
                "dedup_seconds": time.perf_counter() - started,
            }
            pairs = sorted(leaks.values(), key=lambda d: (-d.similarity, d.dropped))
            report = {
                "dataset": info.ref,
                "checked": len(others),
                "leaked": len(leaks),
                "by_split": by_split,
                "split_sizes": sizes,
                "by_method": by_method,
                "methods": methods,
                **details,
                "examples": [
                    {
                        "item_id": d.dropped,
                        "split": split_of[d.dropped],
                        "train_item_id": d.kept,
                        "method": d.method,
                        "similarity": round(d.similarity, 6),
                    }
                    for d in pairs[:examples]
                ],
            }
            log_metrics(s, run.id, metrics)
            run.finish(
                session=s, summary={**report, "pairs": [[d.dropped, d.kept, d.method, d.similarity] for d in pairs]}
            )
    return {"run_id": run.id, **report, "metrics": metrics}
