"""The gate: evaluate two retrieval configurations on the same judged queries, paired.

    report = compare_configs("scifact", queries, qrels, parse_config("default"),
                             parse_config("embedding=sci-emb@1,rerank=sci-rr@1,depth=50"))
    report["delta"]["ndcg@10"]  # {"mean", "ci_low", "ci_high", "wins", "losses", "ties"}

A configuration is KEY=VALUE pairs: mode (hybrid|bm25|vector), embedding (a model with vectors in
the collection), fusion, bm25_weight, rerank (a reranker NAME[@V]) and depth (how many hits it
rescores). Each is one `evaluate` run (its means as metrics, its per-query scores in the summary);
the comparison is stored in B's run. The confidence interval is a paired bootstrap over queries
(Efron & Tibshirani 1993; as in Sakai 2006 for IR): resample the queries with replacement, take the
mean of B − A per resample, and report the 2.5th and 97.5th percentiles. "B is better" means the
whole interval for nDCG@10 lies above 0.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np

from genloom.errors import BadInput
from genloom.progress import ProgressFn
from genloom.retrieval.beir import Qrels, mrr_at, ndcg_at, recall_at

METRICS = ("ndcg@10", "recall@100", "mrr@10")
CONFIG_KEYS = {"mode": str, "embedding": str, "fusion": str, "bm25_weight": float, "rerank": str, "depth": int}
GATE_METRIC = "ndcg@10"


def parse_config(text: str) -> dict:
    """'default' or 'embedding=X,rerank=Y,depth=50' → {key: value} (validated)."""
    config: dict = {}
    if text.strip() in ("", "default"):
        return config
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in CONFIG_KEYS:
            raise BadInput(
                f"bad configuration {text!r}: use 'default' or KEY=VALUE pairs separated by commas, "
                f"keys: {', '.join(CONFIG_KEYS)}"
            )
        try:
            config[key] = CONFIG_KEYS[key](value.strip())
        except ValueError:
            raise BadInput(f"bad configuration {text!r}: {key} expects a number") from None
    if "depth" in config and "rerank" not in config:
        raise BadInput(f"bad configuration {text!r}: depth is the reranker's depth; give rerank=MODEL too")
    return config


def label(config: Mapping) -> str:
    return ",".join(f"{k}={v}" for k, v in config.items()) or "default"


def run_config(
    collection: str, queries: list[tuple[str, str]], config: Mapping, progress: ProgressFn | None = None
) -> tuple[dict[str, list[str]], float, float]:
    """(query id → ranked document ids, seconds searching, seconds reranking) for one configuration."""
    from genloom.db.engine import session_scope
    from genloom.retrieval.rerank import DEFAULT_DEPTH, rerank
    from genloom.retrieval.search import search_many

    depth = int(config.get("depth", DEFAULT_DEPTH))
    options = {key: config[key] for key in ("fusion", "bm25_weight") if key in config}
    ranking: dict[str, list[str]] = {}
    texts = dict(queries)
    rerank_s = 0.0
    started = time.perf_counter()
    with session_scope(purpose="read") as s:  # evaluation reads may be served by a replica
        for qid, hits in search_many(
            s,
            queries,
            collection=collection,
            mode=config.get("mode", "hybrid"),
            k=max(100, depth),
            by_document=True,
            embedding_model=config.get("embedding"),
            progress=progress,
            **options,
        ):
            if config.get("rerank"):
                result = rerank(s, texts[qid], hits, config["rerank"], depth=depth)
                hits, rerank_s = result.hits, rerank_s + result.ms / 1000.0
            ranking[qid] = [h.doc_id for h in hits]
    return ranking, time.perf_counter() - started - rerank_s, rerank_s


def per_query(ranking: Mapping[str, list[str]], qrels: Qrels) -> dict[str, dict[str, float]]:
    """metric → {query id: value}, over the judged queries (unanswered ones score 0)."""
    judged = sorted(q for q, rels in qrels.items() if any(r > 0 for r in rels.values()))
    return {
        "ndcg@10": {q: ndcg_at(ranking.get(q, []), qrels[q], 10) for q in judged},
        "recall@100": {q: recall_at(ranking.get(q, []), qrels[q], 100) for q in judged},
        "mrr@10": {q: mrr_at(ranking.get(q, []), qrels[q], 10) for q in judged},
    }


def paired_bootstrap(a: list[float], b: list[float], *, resamples: int = 2000, seed: int = 0) -> dict:
    """Mean of B − A with its 95 % interval, and per-query wins/losses/ties of B."""
    diff = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    if diff.size == 0:
        raise BadInput("no judged queries to compare")
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, diff.size, size=(resamples, diff.size))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {
        "mean": round(float(diff.mean()), 4),
        "ci_low": round(float(low), 4),
        "ci_high": round(float(high), 4),
        "wins": int((diff > 1e-12).sum()),
        "losses": int((diff < -1e-12).sum()),
        "ties": int((np.abs(diff) <= 1e-12).sum()),
    }


def _labelled(progress: ProgressFn | None, task: str) -> ProgressFn | None:
    """The same progress, shown under TASK (one bar per compared configuration)."""
    if progress is None:
        return None

    def report(_task: str, done: int, total: int | None, status: str) -> None:
        progress(task, done, total, status)

    return report


def compare_configs(
    collection: str,
    queries: list[tuple[str, str]],
    qrels: Qrels,
    a: Mapping,
    b: Mapping,
    *,
    source: Mapping | None = None,
    progress: ProgressFn | None = None,
) -> dict:
    """Evaluate A and B (one evaluate run each) and the paired differences B − A."""
    from genloom.db.engine import session_scope
    from genloom.retrieval.collections import get_collection
    from genloom.runs import log_metrics, tracked_run

    queries = [(q, text) for q, text in queries if q in qrels]
    if not queries:
        raise BadInput("none of the queries has judgements in the qrels")
    with session_scope() as s:
        collection_id = get_collection(s, collection).id
    sides: dict[str, dict] = {}
    delta: dict[str, dict] = {}
    for side, config in (("A", a), ("B", b)):
        params = {"collection": collection, "config": dict(config), "label": label(config), **(source or {})}
        with tracked_run(
            "evaluate", name=f"retrieval:{collection}:{label(config)}", params=params, collection_id=collection_id
        ) as run:
            ranking, search_s, rerank_s = run_config(collection, queries, config, _labelled(progress, f"config {side}"))
            scores = per_query(ranking, qrels)
            means = {m: round(float(np.mean(list(v.values()))), 4) for m, v in scores.items()}
            timing = {
                "search_ms_per_query": round(1000 * search_s / len(queries), 2),
                "rerank_ms_per_query": round(1000 * rerank_s / len(queries), 2),
            }
            sides[side] = {"run_id": run.id, "config": label(config), **means, **timing, "per_query": scores}
            with session_scope() as s:
                log_metrics(s, run.id, means)
                summary = {"queries": len(queries), **means, **timing, "per_query": scores}
                if side == "B":  # per_query dicts share one sorted order of query ids: the pairs line up
                    delta = {
                        m: paired_bootstrap(list(sides["A"]["per_query"][m].values()), list(scores[m].values()))
                        for m in METRICS
                    }
                    summary["compared_with_run"] = sides["A"]["run_id"]
                    summary["delta"] = delta
                    summary["better"] = delta[GATE_METRIC]["ci_low"] > 0
                run.finish(session=s, summary=summary)
    return {
        "collection": collection,
        "queries": len(queries),
        "A": {k: v for k, v in sides["A"].items() if k != "per_query"},
        "B": {k: v for k, v in sides["B"].items() if k != "per_query"},
        "delta": delta,
        "better": delta[GATE_METRIC]["ci_low"] > 0,
        "gate_metric": GATE_METRIC,
    }
