"""RAG answer quality on SQuAD v1.1 dev through `genloom eval rag`, written as a result file.

Ingests the 2,067 dev paragraphs (one document each, titled with the article; idempotent)
into a collection, asks a seeded sample of questions through the full logged call with
the given backend, and records the run's metrics (see genloom.evaluation.rag) with the
machine, load average, versions (the server's too) and git sha (bench/benchlib.py):

    python bench/rag_squad.py --data ../shared/data/squad/dev-v1.1.json --limit 300 --seed 0 \\
        --label extractive --out rag/squad.json

Each --label is one entry of the file's "runs" (an existing file keeps its other labels),
so several backends, or before/after a change, sit side by side. Unanswerable questions:
the same sample asked against a collection that cannot answer them (genloom's sample docs)

    genloom ingest platform/genloom/data/sample_docs -c sample-docs
    python bench/rag_squad.py --collection sample-docs --no-ingest --limit 100 --label "... unanswerable"
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT / "platform", ROOT, ROOT / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from benchlib import RESULTS, environment, server_versions, write_result  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "squad" / "dev-v1.1.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--collection", default="squad-dev")
    parser.add_argument("--model", default="extractive", help="extractive | a model directory | a registry NAME[@V]")
    parser.add_argument("--limit", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("-k", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument(
        "--no-ingest",
        action="store_true",
        help="ask against --collection as it is (e.g. documents that cannot answer SQuAD: "
        "then the abstention rate is the share of unanswerable questions refused)",
    )
    parser.add_argument("--label", default=None, help="name of this entry (default: the model)")
    parser.add_argument("--out", default="rag/squad.json", help="result file, relative to bench/results/")
    args = parser.parse_args()

    from genloom.evaluation.rag import EvalRagOptions, eval_rag_job

    before = environment()
    started = time.perf_counter()
    report = eval_rag_job(
        args.data,
        EvalRagOptions(
            collection=args.collection,
            model=args.model,
            limit=args.limit,
            seed=args.seed,
            repeats=args.repeats,
            k=args.k,
            max_new_tokens=args.max_new_tokens,
            ingest_contexts=not args.no_ingest,
        ),
        progress=lambda task, done, total, _status="": print(f"\r{task} {done}/{total}", end="", file=sys.stderr),
    )
    print(file=sys.stderr)
    before["versions"].update(server_versions())  # the server the questions were asked against
    entry = {
        **report,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "environment": before,
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
    }
    existing = RESULTS / args.out
    out = (
        json.loads(existing.read_text())
        if existing.exists()
        else {
            "benchmark": "rag_squad",
            "data": "SQuAD v1.1 dev: 2,067 paragraphs ingested as one document each (title = article); "
            "a seeded sample of questions asked through the full logged call (hybrid retrieval)",
            "runs": {},
        }
    )
    out["runs"][args.label or args.model] = entry
    # The latest run's environment, taken at its start: left out, write_result would take the commit and
    # dirtiness of the tree when the file is written, after edits made during a long run.
    out["environment"] = before
    write_result(args.out, out)
    print(json.dumps(entry, indent=2))


if __name__ == "__main__":
    main()
