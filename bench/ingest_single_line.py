"""A single line of words (no newline, no sentence end) at several sizes, in one run: is memory flat
and the rate steady at every size, below and above the 4 MB streaming threshold?

    python bench/ingest_single_line.py [--mb 1 6 50] [--model tiny|minilm] [--control-mb 1]

Each size is ingested by a fresh child process (`genloom ingest`'s library path), which reports its
own peak RSS (getrusage RUSAGE_SELF) and ingest time; a 1 kB file first gives the baseline (the
interpreter, torch, the model, the driver). --model tiny (default) embeds with the random 1-layer
BERT of genloom.embeddings.build_random_embedder on the bundled tokenizer, so the figures are
genloom's own cost (reading, decoding, chunking, tokenising, COPY, BM25), not MiniLM's matrix
products. The figures to read are the ratios to the 1 MB run: extra RSS over the baseline, and
chunks per second. The result file is rewritten after each size, so a stopped run keeps what it
measured. Writes bench/results/ingest_single_line/<model>.json (command, git sha, versions, load).

--control-mb SIZES also ingests those sizes with the encoder's token budget off (the count-bound
batches of before issue 30: genloom.embeddings.CPU_TOKEN_BUDGET = None in that child), in the same
run, each just before its budgeted run: `budget_vs_count` is the before/after of peak RSS (extra
over the baseline) and chunks/s. With --model minilm that is the 1.2 GB case of issue 30.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "platform"))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from benchlib import environment, write_result  # noqa: E402
from ingest_large import _drop_bench_collections  # noqa: E402  (one home for the cleanup)

WORDS = ("data model vector index query token chunk search rank score table row column page heading "
         "offset stream segment batch commit memory bound widget sorter frobnicator lighthouse").split()


def write_single_line(path: Path, mb: float, seed: int = 0) -> int:
    """MB megabytes of random words separated by single spaces: no newline, no sentence end."""
    rng = random.Random(seed)
    target = int(mb * 1024 * 1024)
    written = 0
    with path.open("w") as f:
        while written < target:
            block = " ".join(rng.choice(WORDS) for _ in range(10_000)) + " "
            block = block[: target - written]
            f.write(block)
            written += len(block)
    return written


def child(path: str, model: str, collection: str, warm_up: str, budget_off: bool = False) -> None:
    """Ingest WARM_UP (imports, model, connection, schema: paid once), then time one file; print its
    figures and this process's own peak RSS as JSON."""
    from ingest.loaders import LoadOptions
    from ingest.pipeline import IngestOptions, ingest

    if budget_off:  # the control: batches bound by count alone, as before issue 30
        import genloom.embeddings

        genloom.embeddings.CPU_TOKEN_BUDGET = None

    options = {"embedding_model": model or None, "load": LoadOptions(max_bytes=2_000_000_000)}
    ingest([Path(warm_up)], IngestOptions(collection=collection + "-warm", **options))
    started = time.perf_counter()
    result = ingest([Path(path)], IngestOptions(collection=collection, **options))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({
        "documents": result.documents, "chunks": result.chunks, "failed": dict(result.failed),
        "ingest_seconds": round(result.seconds, 2), "embed_seconds": round(result.embed_seconds, 2),
        "write_seconds": round(result.write_seconds, 2), "wall_seconds_in_child": round(time.perf_counter() - started, 2),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
    }))


def run_child(path: Path, model: str, collection: str, warm_up: Path, budget_off: bool = False) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", str(path), "--model-path", model,
                           "--collection", collection, "--warm-up", str(warm_up)]
                          + (["--budget-off"] if budget_off else []), capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"child failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, nargs="+", default=[1, 6, 50])
    parser.add_argument("--model", choices=("tiny", "minilm"), default="tiny")
    parser.add_argument("--control-mb", type=float, nargs="*", default=[],
                        help="sizes also run with the encoder's token budget off (before/after in one run)")
    parser.add_argument("--budget-off", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--model-path", default="", help=argparse.SUPPRESS)
    parser.add_argument("--collection", help=argparse.SUPPRESS)
    parser.add_argument("--warm-up", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.model_path, args.collection, args.warm_up, args.budget_off)
        return

    prefix = f"bench-single-{uuid.uuid4().hex[:8]}-"
    tmp = Path(tempfile.mkdtemp(prefix="genloom-single-line-"))
    from genloom.embeddings import CPU_TOKEN_BUDGET

    data = {"environment": environment(), "bench": "ingest_single_line", "model": args.model,
            "cpu_token_budget": CPU_TOKEN_BUDGET, "control_mb": args.control_mb,
            "model_note": ("random 1-layer, 32-wide BERT on the bundled tokenizer: genloom's own cost"
                           if args.model == "tiny" else "bundled all-MiniLM-L6-v2"),
            "sizes_mb": args.mb, "runs": {}}
    try:
        model = ""
        if args.model == "tiny":
            from genloom.embeddings import build_random_embedder

            model = str(build_random_embedder(tmp / "model"))
        small = tmp / "small.txt"
        small.write_text("A one kilobyte file. " * 50)
        warm = tmp / "warm.txt"
        warm.write_text("Warming up. " * 80)
        data["baseline_1kb"] = run_child(small, model, prefix + "base", warm)
        base_rss = data["baseline_1kb"]["peak_rss_mb"]
        for mb in sorted(args.mb):
            big = tmp / f"line-{mb}mb.txt"
            size = write_single_line(big, mb)
            if mb in args.control_mb:
                control = run_child(big, model, f"{prefix}{mb}-control", warm, budget_off=True)
                control["bytes"] = size
                control["chunks_per_s"] = round(control["chunks"] / control["ingest_seconds"], 1)
                control["extra_rss_mb"] = round(control["peak_rss_mb"] - base_rss, 1)
                data.setdefault("control_budget_off", {})[f"{mb:g}mb"] = control
                print(f"{mb:g} MB, budget off: {json.dumps(control)}", flush=True)
            run = run_child(big, model, f"{prefix}{mb}", warm)
            big.unlink()
            run["bytes"] = size
            run["chunks_per_s"] = round(run["chunks"] / run["ingest_seconds"], 1)
            run["extra_rss_mb"] = round(run["peak_rss_mb"] - base_rss, 1)
            data["runs"][f"{mb:g}mb"] = run
            if mb in args.control_mb:
                before = data["control_budget_off"][f"{mb:g}mb"]
                data.setdefault("budget_vs_count", {})[f"{mb:g}mb"] = {
                    "peak_rss": round(run["peak_rss_mb"] / before["peak_rss_mb"], 3),
                    "extra_rss": round(run["extra_rss_mb"] / before["extra_rss_mb"], 3),
                    "chunks_per_s": round(run["chunks_per_s"] / before["chunks_per_s"], 3),
                }
            first = data["runs"][f"{sorted(args.mb)[0]:g}mb"]
            data["ratios_to_smallest"] = {
                key: {"peak_rss": round(r["peak_rss_mb"] / first["peak_rss_mb"], 3),
                      "chunks_per_s": round(r["chunks_per_s"] / first["chunks_per_s"], 3)}
                for key, r in data["runs"].items()
            }
            data["environment_at_end"] = {"load_average": environment()["load_average"]}
            path = write_result(f"ingest_single_line/{args.model}.json", data)
            print(f"{mb:g} MB: {json.dumps(run)}", flush=True)
        print(f"wrote {path}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        _drop_bench_collections(prefix)


if __name__ == "__main__":
    main()
