"""SciFact: fine-tuned embedder and reranker (train qrels) vs the frozen MiniLM, gated on the test queries.

    nice -n 19 python bench/retrieval_learning.py [--distractors N] [--epochs E] [--rerank-depth D]

Drives the CLI as a user would (`python cli.py …`, one embedded server under a scratch
GENLOOM_HOME): ingest → `datasets import qrels` (train split) → `train embedder` → `embed` →
`train reranker` → `eval retrieval --compare` on the 300 *test* queries (never used for training
or tuning). Writes bench/results/retrieval/learning_scifact.json after every stage, so a run cut
short still says what it measured.

Scale: the corpus is every document judged in train or test plus N random distractors (seed 0)
when --distractors is given — a smaller haystack than the full 5,183, stated in the file; the
frozen baselines are measured on the same subset in the same run, so the deltas are paired.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from benchlib import write_result  # noqa: E402

SCIFACT = ROOT.parent / "shared" / "data" / "scifact"
RESULT = "retrieval/learning_scifact.json"


def cli(*args, home: Path) -> dict:
    env = {**os.environ, "GENLOOM_HOME": str(home), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), *map(str, args), "--json"], capture_output=True, text=True, env=env
    )
    seconds = time.perf_counter() - started
    if proc.returncode not in (0, 1) or (proc.returncode == 1 and not proc.stdout.strip()):
        raise SystemExit(f"{' '.join(map(str, args))} failed: {proc.stderr.strip()[-2000:]}")
    out = json.loads(proc.stdout) if proc.stdout.strip() else {}
    return {"out": out, "seconds": round(seconds, 1), "exit": proc.returncode}


def subset(folder: Path, distractors: int | None, source: Path = SCIFACT) -> tuple[Path, int]:
    """A BEIR folder with the judged documents and N random others (all of them when N is None)."""
    judged = set()
    for split in ("train", "test"):
        for line in (source / "qrels" / f"{split}.tsv").read_text().splitlines()[1:]:
            judged.add(line.split("\t")[1])
    lines = (source / "corpus.jsonl").read_text().splitlines()
    keep = [ln for ln in lines if json.loads(ln)["_id"] in judged]
    others = [ln for ln in lines if json.loads(ln)["_id"] not in judged]
    if distractors is not None:
        others = random.Random(0).sample(others, min(distractors, len(others)))
    keep += others
    folder.mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("\n".join(keep) + "\n")
    (folder / "queries.jsonl").write_text((source / "queries.jsonl").read_text())
    (folder / "qrels").mkdir()
    for split in ("train", "test"):
        (folder / "qrels" / f"{split}.tsv").write_text((source / "qrels" / f"{split}.tsv").read_text())
    return folder, len(keep)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=SCIFACT, help="the SciFact BEIR folder")
    parser.add_argument("--distractors", type=int, default=None, help="random unjudged documents (default: all)")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--reranker-steps", type=int, default=None)
    parser.add_argument("--rerank-depth", type=int, default=20)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="genloom-learn-"))
    home = work / "home"
    beir, n_docs = subset(work / "scifact", args.distractors, args.data)
    qrels, test, queries = beir / "qrels" / "train.tsv", beir / "qrels" / "test.tsv", beir / "queries.jsonl"
    result: dict = {
        "command": " ".join(sys.argv),
        "scale": {
            "documents": n_docs,
            "of": 5183,
            "subset": "judged (train+test) documents + random distractors (seed 0)"
            if args.distractors is not None
            else "full corpus",
            "train_queries": "qrels/train.tsv (809 queries, 919 pairs)",
            "test_queries": "qrels/test.tsv (300 queries), used only for the final comparisons",
        },
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "1"),
        "stages": {},
    }

    def stage(name: str, *cmd) -> dict:
        out = cli(*cmd, home=home)
        result["stages"][name] = out
        write_result(RESULT, result)
        print(name, out["seconds"], "s", file=sys.stderr, flush=True)
        return out["out"]

    stage("ingest", "ingest", beir, "-c", "scifact", "--format", "beir")
    stage("import_qrels", "datasets", "import", "qrels", qrels, "-c", "scifact", "--negatives", "3", "--val", "0")
    train = ("-d", "scifact-train-pairs", "--epochs", args.epochs, "--batch-size", args.batch_size)
    length = ("--set", f"max_length={args.max_length}")
    stage("train_embedder", "train", "embedder", *train, *length, "--set", "negatives=1", "--name", "sci-emb")
    stage("embed", "embed", "-c", "scifact", "--model", "sci-emb@1")
    steps = ("--steps", args.reranker_steps) if args.reranker_steps else ()
    stage("train_reranker", "train", "reranker", *train, *steps, *length, "--set", "negatives=3", "--name", "sci-rr")
    gate = ("eval", "retrieval", "-c", "scifact", "--queries", queries, "--qrels", test, "--compare")
    depth = args.rerank_depth
    comparisons = {
        "vector_finetuned_vs_frozen": ("mode=vector", "mode=vector,embedding=sci-emb@1"),
        "hybrid_finetuned_vs_default": ("default", "embedding=sci-emb@1"),
        "hybrid_rerank_vs_default": ("default", f"rerank=sci-rr@1,depth={depth}"),
        "hybrid_finetuned_rerank_vs_default": ("default", f"embedding=sci-emb@1,rerank=sci-rr@1,depth={depth}"),
    }
    for name, (a, b) in comparisons.items():
        stage(name, *gate, a, b)


if __name__ == "__main__":
    main()
