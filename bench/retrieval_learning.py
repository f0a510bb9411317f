"""SciFact or SQuAD: fine-tuned embedder and reranker (train qrels) vs the frozen MiniLM, gated on test queries.

    nice -n 19 python bench/retrieval_learning.py [--dataset scifact|squad] [--distractors N] [--epochs E]
        [--rerank-depth D] [--reranker-steps N] [--reranker-lr LR] [--test-queries N] [--train-queries N]
        [--articles N] [--onnx] [--no-reranker]

Drives the CLI as a user would (`python cli.py …`, one embedded server under a scratch
GENLOOM_HOME): ingest → `datasets import qrels` (train split) → `train embedder` → `embed` →
`train reranker` → `eval retrieval --compare` on the 300 *test* queries (never used for training
or tuning). Writes bench/results/retrieval/learning_scifact.json after every stage, so a run cut
short still says what it measured.

Scale: the corpus is every document judged in train or test plus N random distractors (seed 0)
when --distractors is given — a smaller haystack than the full 5,183, stated in the file; the
frozen baselines are measured on the same subset in the same run, so the deltas are paired.

SQuAD-as-retrieval (`--dataset squad`): every paragraph of the v1.1 dev set is a document; the 48
articles are split in two by a seeded shuffle (24 train, 24 test), so no test question's article
was seen in training; --train-queries/--test-queries sample the questions of each side (seed 0).

Every comparison runs with `--require-better` (the gate); its exit code is recorded beside the
figures (0: B beats A with the nDCG@10 interval above 0; 1: it does not). `--onnx` also exports the
shipped MiniLM to int8 ONNX, embeds the collection with it and compares it with torch (vector mode).
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
from benchlib import environment, write_result  # noqa: E402

SCIFACT = ROOT.parent / "shared" / "data" / "scifact"
SQUAD = ROOT.parent / "shared" / "data" / "squad" / "dev-v1.1.json"


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


def sample_test(folder: Path, n: int | None) -> int:
    """Keep N seeded test queries' judgements in qrels/test.tsv (all when N is None); return the count."""
    path = folder / "qrels" / "test.tsv"
    header, *rows = path.read_text().splitlines()
    ids = sorted({r.split("\t")[0] for r in rows})
    if n is not None and n < len(ids):
        keep = set(random.Random(0).sample(ids, n))
        rows = [r for r in rows if r.split("\t")[0] in keep]
        ids = sorted(keep)
    path.write_text("\n".join([header, *rows]) + "\n")
    return len(ids)


def squad_beir(
    folder: Path, train_n: int | None, test_n: int | None, n_articles: int | None = None, source: Path = SQUAD
) -> tuple[Path, int, dict]:
    """SQuAD dev as a BEIR folder: paragraphs as documents, questions split into train/test by article
    (N_ARTICLES seeded articles when given, else all 48; half of them train, half test)."""
    articles = json.loads(source.read_text())["data"]
    order = list(range(len(articles)))
    random.Random(0).shuffle(order)
    order = order[:n_articles] if n_articles else order
    train_articles = set(order[: len(order) // 2])
    corpus, queries, split_rows = [], [], {"train": [], "test": []}
    for a, article in enumerate(articles):
        if a not in order:
            continue
        side = "train" if a in train_articles else "test"
        for p, paragraph in enumerate(article["paragraphs"]):
            doc = f"{a}-{p}"
            corpus.append(
                json.dumps({"_id": doc, "title": article["title"].replace("_", " "), "text": paragraph["context"]})
            )
            for qa in paragraph["qas"]:
                queries.append(json.dumps({"_id": qa["id"], "text": qa["question"]}))
                split_rows[side].append(f"{qa['id']}\t{doc}\t1")
    sizes = {}
    for side, n in (("train", train_n), ("test", test_n)):
        rows = split_rows[side]
        sizes[f"{side}_questions_available"] = len(rows)
        if n is not None and n < len(rows):
            rows = random.Random(0).sample(rows, n)
        split_rows[side] = rows
        sizes[f"{side}_questions_used"] = len(rows)
    folder.mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("\n".join(corpus) + "\n")
    (folder / "queries.jsonl").write_text("\n".join(queries) + "\n")
    (folder / "qrels").mkdir()
    for side, rows in split_rows.items():
        (folder / "qrels" / f"{side}.tsv").write_text("\n".join(["query-id\tcorpus-id\tscore", *rows]) + "\n")
    sizes["articles"] = {"train": len(train_articles), "test": len(order) - len(train_articles), "of": len(articles)}
    return folder, len(corpus), sizes


def summarise(report: dict, exit_code: int) -> dict:
    """The figures docs/benchmarks.md cites from one `eval retrieval --compare --require-better` report."""
    d = report["delta"]["ndcg@10"]
    return {
        "A": report["A"]["config"],
        "B": report["B"]["config"],
        "queries": report["queries"],
        "A_ndcg10": round(report["A"]["ndcg@10"], 4),
        "B_ndcg10": round(report["B"]["ndcg@10"], 4),
        "delta_ndcg10": round(d["mean"], 4),
        "ci_low": round(d["ci_low"], 4),
        "ci_high": round(d["ci_high"], 4),
        "wins_losses_ties": [d["wins"], d["losses"], d["ties"]],
        "A_recall100": round(report["A"]["recall@100"], 4),
        "B_recall100": round(report["B"]["recall@100"], 4),
        "A_mrr10": round(report["A"]["mrr@10"], 4),
        "B_mrr10": round(report["B"]["mrr@10"], 4),
        "B_rerank_ms_per_query": report["B"].get("rerank_ms_per_query"),
        "better": report["better"],
        "require_better_exit": exit_code,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", choices=("scifact", "squad"), default="scifact")
    parser.add_argument("--data", type=Path, default=None, help="the SciFact BEIR folder or SQuAD dev JSON")
    parser.add_argument("--test-queries", type=int, default=None, help="seeded sample of test queries (default all)")
    parser.add_argument("--train-queries", type=int, default=None, help="SQuAD: seeded sample of train questions")
    parser.add_argument("--articles", type=int, default=None, help="SQuAD: only N seeded articles (default all 48)")
    parser.add_argument("--onnx", action="store_true", help="also measure the int8 ONNX encoder's nDCG@10 delta")
    parser.add_argument("--distractors", type=int, default=None, help="random unjudged documents (default: all)")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--reranker-steps", type=int, default=None)
    parser.add_argument("--reranker-lr", type=float, default=None, help="peak learning rate (default: the CLI's)")
    parser.add_argument("--rerank-depth", type=int, default=20)
    parser.add_argument("--no-reranker", action="store_true", help="stop after the embedder's gates")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="genloom-learn-"))
    home = work / "home"
    name = args.dataset
    result_file = f"retrieval/learning_{name}.json"
    if name == "scifact":
        beir, n_docs = subset(work / name, args.distractors, args.data or SCIFACT)
        scale: dict = {
            "documents": n_docs,
            "of": 5183,
            "subset": "judged (train+test) documents + random distractors (seed 0)"
            if args.distractors is not None
            else "full corpus",
            "train_queries": "qrels/train.tsv (809 queries, 919 pairs)",
        }
    else:
        beir, n_docs, sizes = squad_beir(
            work / name, args.train_queries, args.test_queries, args.articles, args.data or SQUAD
        )
        every = "every paragraph of SQuAD v1.1 dev"
        subset_text = (
            f"every paragraph of {args.articles} seeded articles of SQuAD v1.1 dev" if args.articles else every
        )
        scale = {"documents": n_docs, "of": 2067, "subset": subset_text, **sizes}
    scale["test_queries"] = sample_test(beir, args.test_queries)
    scale["test_queries_note"] = "seeded sample of the test split, used only for the final comparisons"
    result: dict = {
        # Taken once, at the start: later writes would see this very file modified (a "-dirty" sha).
        "environment": environment(),
        "command": " ".join(sys.argv),
        "dataset": name,
        "scale": scale,
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "1"),
        "stages": {},
        "gates": {},
    }

    def stage(name: str, *cmd, gate: bool = False) -> dict:
        out = cli(*cmd, home=home)
        out["load_average_after"] = [round(x, 2) for x in os.getloadavg()]  # the shared machine's load
        result["stages"][name] = out
        if gate:
            result["gates"][name] = summarise(out["out"], out["exit"])
        write_result(result_file, result, env={**os.environ, "GENLOOM_HOME": str(home)})
        print(name, out["seconds"], "s", file=sys.stderr, flush=True)
        return out["out"]

    try:
        run_stages(args, name, beir, stage)
    finally:  # the scratch home's embedded server goes with the run
        cli("db", "stop", home=home)


def run_stages(args, name: str, beir: Path, stage) -> None:
    work = beir.parent
    qrels, test, queries = beir / "qrels" / "train.tsv", beir / "qrels" / "test.tsv", beir / "queries.jsonl"
    stage("ingest", "ingest", beir, "-c", name, "--format", "beir")
    stage("import_qrels", "datasets", "import", "qrels", qrels, "-c", name, "--negatives", "3", "--val", "0")
    if args.onnx:
        folder = work / "minilm-int8"
        stage("export_onnx_int8", "models", "export-onnx", "--out", folder, "--quantize", "int8")
        stage("embed_onnx_int8", "embed", "-c", name, "--model", folder)
    train = ("-d", f"{name}-train-pairs", "--epochs", args.epochs, "--batch-size", args.batch_size)
    length = ("--set", f"max_length={args.max_length}")
    stage("train_embedder", "train", "embedder", *train, *length, "--set", "negatives=1", "--name", "sci-emb")
    stage("embed", "embed", "-c", name, "--model", "sci-emb@1")
    gate = ("eval", "retrieval", "-c", name, "--queries", queries, "--qrels", test, "--require-better", "--compare")
    # The embedder's gates come before the reranker is trained, so a run cut short still has them.
    comparisons = {
        "vector_finetuned_vs_frozen": ("mode=vector", "mode=vector,embedding=sci-emb@1"),
        "hybrid_finetuned_vs_default": ("default", "embedding=sci-emb@1"),
    }
    if args.onnx:
        int8 = f"embedding={work / 'minilm-int8'}"
        comparisons = {"vector_onnx_int8_vs_torch": ("mode=vector", f"mode=vector,{int8}"), **comparisons}
    for label, (a, b) in comparisons.items():
        stage(label, *gate, a, b, gate=True)
    if args.no_reranker:
        return
    steps = ("--steps", args.reranker_steps) if args.reranker_steps else ()
    lr = ("--lr", args.reranker_lr) if args.reranker_lr else ()
    stage(
        "train_reranker", "train", "reranker", *train, *steps, *lr, *length, "--set", "negatives=3", "--name", "sci-rr"
    )
    depth = args.rerank_depth
    comparisons = {
        "hybrid_rerank_vs_default": ("default", f"rerank=sci-rr@1,depth={depth}"),
        "hybrid_finetuned_rerank_vs_default": ("default", f"embedding=sci-emb@1,rerank=sci-rr@1,depth={depth}"),
    }
    for label, (a, b) in comparisons.items():
        stage(label, *gate, a, b, gate=True)


if __name__ == "__main__":
    main()
