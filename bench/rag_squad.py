"""RAG answer quality on SQuAD v1.1 dev through `genloom eval rag`, written as a result file.

Ingests the 2,067 dev paragraphs (one document each, titled with the article; idempotent)
into a collection, asks a seeded sample of questions through the full logged call with
the given backend, and records the run's metrics (see genloom.evaluation.rag) with the
machine, load average, versions and git sha:

    python bench/rag_squad.py --data ../shared/data/squad/dev-v1.1.json --limit 300 --seed 0 \\
        --label extractive --out bench/results/rag_squad.json

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
import platform as host_platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT / "platform", ROOT):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "squad" / "dev-v1.1.json"


def machine() -> dict:
    import torch
    import transformers

    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    # Tracked files only: an uncommitted result file is not a change to the code measured.
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                                capture_output=True, text=True).stdout.strip())
    return {
        # What re-runs this entry; bench/check_results.py requires it with a clean git_sha.
        "command": " ".join(["python", *sys.argv]),
        "machine": f"{host_platform.machine()}, {os.cpu_count()} cores, "
                   f"{'CUDA ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'}",
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "versions": {"python": host_platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__},
        "git_sha": sha + ("-dirty" if dirty else ""),
    }


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
    parser.add_argument("--no-ingest", action="store_true",
                        help="ask against --collection as it is (e.g. documents that cannot answer SQuAD: "
                             "then the abstention rate is the share of unanswerable questions refused)")
    parser.add_argument("--label", default=None, help="name of this entry (default: the model)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "rag_squad.json")
    args = parser.parse_args()

    from genloom.evaluation.rag import EvalRagOptions, eval_rag_job

    before = machine()
    started = time.perf_counter()
    report = eval_rag_job(args.data, EvalRagOptions(
        collection=args.collection, model=args.model, limit=args.limit, seed=args.seed, repeats=args.repeats,
        k=args.k, max_new_tokens=args.max_new_tokens, ingest_contexts=not args.no_ingest,
    ), progress=lambda done, total: print(f"\r{done}/{total}", end="", file=sys.stderr))
    print(file=sys.stderr)
    entry = {**report, "wall_seconds": round(time.perf_counter() - started, 1), **before,
             "load_average_end": [round(x, 2) for x in os.getloadavg()]}
    out = json.loads(args.out.read_text()) if args.out.exists() else {
        "benchmark": "rag_squad",
        "data": "SQuAD v1.1 dev: 2,067 paragraphs ingested as one document each (title = article); "
                "a seeded sample of questions asked through the full logged call (hybrid retrieval)",
        "runs": {},
    }
    out["runs"][args.label or args.model] = entry
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(entry, indent=2))


if __name__ == "__main__":
    main()
