"""SciFact (BEIR): nDCG@10 / Recall@100 / MRR@10 for bm25, vector, hybrid; fusion tuned on TRAIN only.

    python bench/scifact.py [--tune]           # needs ../shared/data/scifact

Without --tune this is `genloom eval retrieval --beir ../shared/data/scifact --json`
(the default fusion). With --tune it grid-searches the
fusion (RRF constant, weighted BM25 share, branch depth) on the 809 *train* queries —
each branch's ranked chunks fetched once per query through `search()`, the fusion
replayed in Python exactly as HYBRID_SQL computes it — and then evaluates the best
setting on the 300 test queries through the real SQL. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "platform"))
sys.path.insert(0, str(ROOT))

SCIFACT = ROOT.parent / "shared" / "data" / "scifact"


def replay(bm, vec, *, fusion, rrf_k=60, w=0.5, depth=100):
    """Fuse two branch lists [(chunk_id, doc_id, score)] ranked best-first, like HYBRID_SQL; best chunk per doc."""
    bm, vec = bm[:depth], vec[:depth]
    scores: dict[int, float] = {}
    docs: dict[int, str] = {}
    if fusion == "rrf":
        for branch in (bm, vec):
            for rank, (cid, doc, _) in enumerate(branch, 1):
                scores[cid] = scores.get(cid, 0.0) + 1.0 / (rrf_k + rank)
                docs[cid] = doc
    else:
        for weight, branch in ((w, bm), (1 - w, vec)):
            if not branch:
                continue
            values = [s for _, _, s in branch]
            lo, hi = min(values), max(values)
            for cid, doc, s in branch:
                norm = (s - lo) / (hi - lo) if hi > lo else 1.0
                scores[cid] = scores.get(cid, 0.0) + weight * norm
                docs[cid] = doc
    best: dict[str, float] = {}
    for cid, s in scores.items():
        best[docs[cid]] = max(best.get(docs[cid], -1e9), s)
    return [d for d, _ in sorted(best.items(), key=lambda x: -x[1])][:100]


def tune(collection: str) -> dict:
    from genloom.db.engine import session_scope
    from genloom.retrieval.beir import read_qrels, read_queries, score_run
    from genloom.retrieval.search import search_many

    qrels = read_qrels(SCIFACT / "qrels" / "train.tsv")
    queries = [(q, t) for q, t in read_queries(SCIFACT / "queries.jsonl") if q in qrels]
    branches: dict[str, dict] = {}
    with session_scope() as s:
        for mode in ("bm25", "vector"):
            for qid, hits in search_many(s, queries, collection=collection, mode=mode, k=300, depth=300):
                branches.setdefault(qid, {})[mode] = [
                    (h.chunk_id, h.doc_id, h.bm25_score if mode == "bm25" else h.vector_score) for h in hits
                ]
    grid = [{"fusion": "rrf", "rrf_k": k, "depth": d} for k in (10, 30, 60) for d in (100, 300)]
    grid += [{"fusion": "weighted", "w": w, "depth": d} for w in (0.2, 0.3, 0.4, 0.5, 0.6) for d in (100, 300)]
    results = []
    for cfg in grid:
        run = {q: replay(b.get("bm25", []), b.get("vector", []), **cfg) for q, b in branches.items()}
        results.append({**cfg, **{k: round(v, 4) for k, v in score_run(run, qrels).items()}})
    results.sort(key=lambda r: -r["ndcg@10"])
    return {"train_queries": len(queries), "grid": results}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tune", action="store_true", help="grid-search the fusion on train first")
    parser.add_argument("--collection", default="beir-scifact")
    args = parser.parse_args()
    if not SCIFACT.is_dir():
        raise SystemExit(f"{SCIFACT} is absent")
    from genloom.evaluation.beir import evaluate

    out: dict = {}
    if not args.tune:
        out["test_default"] = evaluate(SCIFACT, split="test", collection=args.collection)
    else:
        from ingest.loaders import LoadOptions
        from ingest.pipeline import IngestOptions, ingest

        ingest([SCIFACT], IngestOptions(collection=args.collection, load=LoadOptions(format="beir")))  # idempotent
        out["tuning"] = tune(args.collection)
        best = out["tuning"]["grid"][0]
        # depth: chunk candidates per branch, as in the SQL (the by-document default is 300).
        options = {"fusion": best["fusion"], "depth": best["depth"]}
        if best["fusion"] == "rrf":
            options["rrf_k"] = best["rrf_k"]
        else:
            options["bm25_weight"] = best["w"]
        out["test_tuned"] = {"config": options, **evaluate(SCIFACT, split="test", collection=args.collection,
                                                            modes=["hybrid"], **options)}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
