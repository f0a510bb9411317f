"""Large inputs in bounded memory and time, and --sync of an unchanged folder.

    python bench/ingest_large.py large [--mb 50] [--lines 1] [--model tiny|minilm]
    python bench/ingest_large.py sync [--files 1000]

large: a generated text file of --mb megabytes (one line by default: no sentence end, no
newline, the worst case for a chunker) is ingested in a child process; the parent reads the
child's peak RSS (getrusage). Baseline, in the same run: the same child ingesting a 1 kB file
(interpreter, torch, the model and the database driver loaded), so the figure that matters is
the extra memory the large file costs. --model tiny (default) embeds with a random 1-layer,
32-wide BERT built on the bundled MiniLM tokenizer, so the run measures genloom's own work
(reading, decoding, chunking, tokenising, COPY, BM25) rather than MiniLM's matrix products;
--model minilm uses the real model (time then scales with chunks at bench/ingest_throughput's
encode rate).

sync: --files small text files are ingested (bundled MiniLM; --model tiny for the random
model above, which leaves genloom's per-file work), then the unchanged folder is
ingested again with --sync; the ratio of the two times is the figure (target <= 0.05). The
first ingest's files per second and the process's peak RSS are recorded too (e.g. --files 100000).

Writes JSON to bench/results/ingest_large/ (machine, load average, versions, git sha).
"""

from __future__ import annotations

import argparse
import json
import os
import platform as host
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
RESULTS = ROOT / "bench" / "results" / "ingest_large"
WORDS = ("data model vector index query token chunk search rank score table row column page heading "
         "offset stream segment batch commit memory bound widget sorter frobnicator lighthouse").split()


def machine() -> dict:
    import sentence_transformers
    import torch
    import transformers

    sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    return {
        "host": host.node(), "cpus": os.cpu_count(), "python": host.python_version(),
        "torch": torch.__version__, "transformers": transformers.__version__,
        "sentence_transformers": sentence_transformers.__version__, "git_sha": sha,
        "loadavg_1_5_15_start": [round(x, 2) for x in os.getloadavg()],
    }


def write_text(path: Path, megabytes: float, lines: int) -> int:
    """Random words, `lines` lines in all, written in blocks (never held whole)."""
    import random

    rng = random.Random(0)
    target = int(megabytes * 1_000_000)
    per_line = target // lines
    written = 0
    with path.open("w") as f:
        for line in range(lines):
            size = 0
            while size < per_line:
                block = " ".join(rng.choice(WORDS) for _ in range(20_000)) + " "
                f.write(block)
                size += len(block)
            written += size
            f.write("\n")
    return written


def tiny_model(folder: Path) -> Path:
    """A random sentence-transformers model on the bundled tokenizer (tests build the same kind)."""
    from genloom.embeddings import build_random_embedder

    return build_random_embedder(folder)


def child(path: str, model: str | None, collection: str) -> None:
    """Ingest one file; print the result as JSON (the parent measures this process)."""
    from ingest.loaders import LoadOptions
    from ingest.pipeline import IngestOptions, ingest

    result = ingest([Path(path)], IngestOptions(collection=collection, embedding_model=model,
                                               load=LoadOptions(max_bytes=2_000_000_000)))
    print(json.dumps({"written": result.documents, "chunks": result.chunks, "seconds": round(result.seconds, 2),
                      "embed_seconds": round(result.embed_seconds, 2), "write_seconds": round(result.write_seconds, 2),
                      "failed": dict(result.failed)}))


def run_child(path: Path, model: str | None, collection: str) -> dict:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    before, cpu_before = usage.ru_maxrss, usage.ru_utime + usage.ru_stime
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, "child", str(path), "--model-path", model or "", "--collection", collection],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")},
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"child failed: {proc.stderr[-2000:]}")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak = usage.ru_maxrss  # KiB on Linux: max over children so far
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    # CPU seconds of the child (user + system): what the work costs, whatever the machine's load;
    # the database server's own CPU (BM25 postings, COPY) is not in it, wall_seconds is.
    cpu = usage.ru_utime + usage.ru_stime - cpu_before
    return {**out, "wall_seconds": round(wall, 2), "cpu_seconds": round(cpu, 2), "peak_rss_mb": round(peak / 1024, 1),
            "peak_before_mb": round(before / 1024, 1)}


def bench_large(args) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="genloom-large-"))
    try:
        model = str(tiny_model(tmp / "model")) if args.model == "tiny" else None
        small = tmp / "small.txt"
        small.write_text("A one kilobyte file. " * 50)
        big = tmp / f"big-{args.mb}mb.txt"
        size = write_text(big, args.mb, args.lines)
        # Baseline first: RUSAGE_CHILDREN keeps the maximum, so the larger run must come second.
        base = run_child(small, model, f"bench-large-{uuid.uuid4().hex[:8]}")
        large = run_child(big, model, f"bench-large-{uuid.uuid4().hex[:8]}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _drop_bench_collections("bench-large-")
    return {
        "bench": "ingest_large", "model": args.model, "file_mb": round(size / 1e6, 1), "lines": args.lines,
        "baseline_1kb": base, "large": large,
        "extra_rss_mb": round(large["peak_rss_mb"] - base["peak_rss_mb"], 1),
        "mb_per_second": round(size / 1e6 / large["seconds"], 2),
    }


def bench_sync(args) -> dict:
    from ingest.pipeline import IngestOptions, ingest

    tmp = Path(tempfile.mkdtemp(prefix="genloom-sync-"))
    collection = f"bench-sync-{uuid.uuid4().hex[:8]}"
    try:
        import random

        rng = random.Random(0)
        for i in range(args.files):
            sub = tmp / f"d{i % 20:02d}"
            sub.mkdir(exist_ok=True)
            text = ". ".join(" ".join(rng.choice(WORDS) for _ in range(12)) for _ in range(6)) + "."
            (sub / f"note{i:04d}.txt").write_text(f"Note {i}. {text}\n")
        from genloom.embeddings import get_embedder

        model = str(tiny_model(tmp.parent / f"{tmp.name}-model")) if args.model == "tiny" else None
        get_embedder(model)  # loaded once, outside both timings
        first = ingest([tmp], IngestOptions(collection=collection, embedding_model=model))
        t0 = time.perf_counter()
        again = ingest([tmp], IngestOptions(collection=collection, sync=True, embedding_model=model))
        sync_seconds = time.perf_counter() - t0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(tmp.parent / f"{tmp.name}-model", ignore_errors=True)
    _drop_bench_collections("bench-sync-")
    return {
        "bench": "ingest_sync", "files": args.files, "model": args.model,
        "first": {"written": first.documents, "chunks": first.chunks, "seconds": round(first.seconds, 2)},
        "sync_unchanged": {"written": again.documents, "unchanged": again.unchanged, "retired": again.retired,
                           "seconds": round(sync_seconds, 3)},
        "ratio": round(sync_seconds / first.seconds, 4),
        "target": 0.05,
        "files_per_second_first": round(args.files / first.seconds, 1),
        # The whole process (interpreter, torch, MiniLM included): ru_maxrss is KiB on Linux.
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def _drop_bench_collections(prefix: str) -> None:
    import sqlalchemy as sa

    from genloom.db.engine import session_scope

    with session_scope() as s:
        s.execute(sa.text("DELETE FROM collections WHERE starts_with(name, :p)"), {"p": prefix})


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="what", required=True)
    large = sub.add_parser("large")
    large.add_argument("--mb", type=float, default=50)
    large.add_argument("--lines", type=int, default=1)
    large.add_argument("--model", choices=("tiny", "minilm"), default="tiny")
    sync = sub.add_parser("sync")
    sync.add_argument("--files", type=int, default=1000)
    sync.add_argument("--model", choices=("tiny", "minilm"), default="minilm")
    ch = sub.add_parser("child")
    ch.add_argument("path")
    ch.add_argument("--model-path", default="")
    ch.add_argument("--collection")
    args = parser.parse_args()
    if args.what == "child":
        child(args.path, args.model_path or None, args.collection)
        return
    report = {"machine": machine()}
    report |= bench_large(args) if args.what == "large" else bench_sync(args)
    report["machine"]["loadavg_1_5_15_end"] = [round(x, 2) for x in os.getloadavg()]
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = (f"sync_{args.files}.json" if args.model == "minilm" else f"sync_{args.files}_{args.model}.json") \
        if args.what == "sync" else f"large_{args.mb:g}mb_{args.lines}lines_{args.model}.json"
    (RESULTS / name).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
