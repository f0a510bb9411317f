"""How the extractive backend's thresholds were chosen: a grid on a SQuAD v1.1 dev sample
disjoint from the one `genloom eval rag --limit N --seed 0` scores (so the benchmark is
not tuned on its own questions).

    python bench/extractive_tuning.py --collection squad-dev --n 300 > bench/results/extractive_tuning.json

Needs the collection ingested (`genloom eval rag ... --ingest-contexts` does it). For
each tuning question it retrieves the sources once (hybrid, k=5, as the logged call
does), embeds the candidate sentences once, then scores every setting of the grid.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform as host_platform
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT / "platform", ROOT):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "squad" / "dev-v1.1.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--collection", default="squad-dev")
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--benchmark-limit", type=int, default=300, help="the eval rag sample to stay clear of")
    parser.add_argument("-k", type=int, default=5)
    args = parser.parse_args()

    from genloom.db.engine import session_scope
    from genloom.evaluation.rag import best_over, exact_match_score, f1_score, load_qa, sample
    from genloom.generation.backend import Source
    from genloom.generation.extractive import ExtractiveBackend, candidates
    from genloom.retrieval.search import search

    qa = load_qa(args.data)
    held_out = {item.id for item in sample(qa.items, args.benchmark_limit, 0)}
    pool = [item for item in qa.items if item.id not in held_out]
    tuning = random.Random(1).sample(pool, args.n)
    backend = ExtractiveBackend()
    prepared = []
    started = time.perf_counter()
    for item in tuning:
        with session_scope() as s:
            hits = search(s, item.question, collection=args.collection, k=args.k)
        sources = [Source(n=i + 1, chunk_id=h.chunk_id, document_id=h.document_id, doc_id=h.doc_id, title=h.title,
                          text=h.text) for i, h in enumerate(hits)]
        cands = candidates(sources)
        prepared.append((item, cands, backend.similarities(item.question, cands) if cands else []))
    grid = []
    for weight, min_sim, min_cov, max_sentences in itertools.product(
        (0.0, 0.25, 0.5, 1.0), (0.0, 0.2, 0.3, 0.4), (0.0, 0.34, 0.5), (1, 2)
    ):
        b = ExtractiveBackend(lexical_weight=weight, min_similarity=min_sim, min_coverage=min_cov,
                              max_sentences=max_sentences)
        f1 = em = abstained = 0.0
        for item, cands, cosines in prepared:
            chosen = b.choose(item.question, cands, cosines)
            if not chosen:
                abstained += 1
                continue
            answer = " ".join(c.sentence for c in chosen)
            f1 += best_over(f1_score, answer, item.answers)
            em += best_over(exact_match_score, answer, item.answers)
        n = len(prepared)
        grid.append({"lexical_weight": weight, "min_similarity": min_sim, "min_coverage": min_cov,
                     "max_sentences": max_sentences, "f1": round(f1 / n, 4), "em": round(em / n, 4),
                     "abstention_rate": round(abstained / n, 4)})
    sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    import transformers

    print(json.dumps({
        "benchmark": "extractive_tuning",
        "data": "SQuAD v1.1 dev; tuning sample disjoint from the eval rag --seed 0 sample",
        "questions": len(prepared), "k": args.k,
        "defaults": {"lexical_weight": ExtractiveBackend().lexical_weight,
                     "min_similarity": ExtractiveBackend().min_similarity,
                     "min_coverage": ExtractiveBackend().min_coverage,
                     "max_sentences": ExtractiveBackend().max_sentences},
        "grid": sorted(grid, key=lambda g: -g["f1"]),
        "seconds": round(time.perf_counter() - started, 1),
        "machine": f"{host_platform.machine()}, {os.cpu_count()} cores, no GPU",
        "load_average": os.getloadavg(),
        "versions": {"python": host_platform.python_version(), "transformers": transformers.__version__},
        "git_sha": sha,
    }, indent=2))


if __name__ == "__main__":
    main()
