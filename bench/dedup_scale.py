"""Dedup at scale: 60,000 MNIST training images and 100,000 text items, time and peak memory.

    python bench/dedup_scale.py [--phases images,text,semantic-text] > dedup_scale.json

Each phase runs in its own child process, which reports its own peak RSS (ru_maxrss); the Postgres server's memory is not included (it is a separate process; the HNSW
build uses up to maintenance_work_mem).

- images: dataset `bench-scale-mnist` = the 60,000 MNIST training images, `--method all`
  (exact + semantic with aligned-pixel vectors through pgvector HNSW), dry run. With
  --cold (default) the embedder's cached vectors and index are dropped first, so the
  time includes embedding, COPY, the HNSW build and the neighbour passes.
- text: 100,000 items (pairs of tiny-shakespeare lines, seeded), exact + MinHash LSH.
- semantic-text: the sentence-model path on --semantic-n of those items (MiniLM on CPU
  is the bottleneck; the per-item rate extrapolates to 100,000).

Baseline in the same run: the all-pairs alternative, timed on a 600–5,000 sample and
extrapolated (n² / 2 comparisons, n² × 4 bytes for a dense similarity matrix).
Uses GENLOOM_HOME=/tmp/genloom-bench unless DATABASE_URL or GENLOOM_HOME is set.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "platform"))
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data"


def text_items(n: int, seed: int = 0) -> list[str]:
    lines = [l.strip() for l in (DATA / "tinyshakespeare" / "input.txt").read_text().splitlines() if len(l.strip()) > 20]
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, len(lines), n), rng.integers(0, len(lines), n)
    return [f"{lines[i]} {lines[j]}" for i, j in zip(a, b)]


def make_dataset(name: str, specs) -> str:
    import sqlalchemy as sa

    from genloom.datasets.items import put_items
    from genloom.datasets.versions import add_members, create_version, seal_version
    from genloom.db.engine import session_scope

    with session_scope() as s:
        if s.execute(sa.text("SELECT 1 FROM datasets WHERE name = :n"), {"n": name}).first() is None:
            ids = put_items(s, specs)
            v = create_version(s, name, modality=specs[0].modality)
            add_members(s, v, [(i, "train") for i in ids])
            seal_version(s, v)
    return f"{name}@1"


def phase_images(args) -> dict:
    import sqlalchemy as sa

    from genloom.datasets.items import image_item
    from genloom.db.engine import session_scope
    from genloom.dedup import semantic
    from genloom.dedup.job import DedupOptions, dedup_job

    with gzip.open(DATA / "mnist" / "train-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    t = time.perf_counter()
    ref = make_dataset("bench-scale-mnist", [image_item(im) for im in images])
    store_s = time.perf_counter() - t
    if args.cold:
        with session_scope() as s:
            eid = s.scalar(sa.text("SELECT id FROM item_embedders WHERE name LIKE 'image:pixels-aligned-%:1x28x28'"))
            if eid is not None:
                s.execute(sa.text(f"DROP INDEX IF EXISTS {semantic.index_name(eid)}"))
                s.execute(sa.text("DELETE FROM item_embeddings WHERE embedder_id = :e"), {"e": eid})
    t = time.perf_counter()
    result = dedup_job(ref, DedupOptions(method="all", dry_run=True))
    seconds = time.perf_counter() - t
    # Baseline: all-pairs cosine on a sample, extrapolated to n.
    sample = semantic.pixel_embedding(images[:5000, None] / 255.0)
    t = time.perf_counter()
    sims = sample @ sample.T
    np.fill_diagonal(sims, -1)
    _ = (sims >= 0.995).any(axis=1)
    pair_s = time.perf_counter() - t
    n = len(images)
    return {"items": n, "store_seconds": round(store_s, 1), "seconds": round(seconds, 1), "dropped": result.dropped,
            "by_method": result.by_method, "embedded": result.details.get("embedded"), "cold": args.cold,
            "all_pairs_estimate_seconds": round(pair_s * (n / 5000) ** 2, 1),
            "all_pairs_matrix_gib": round(n * n * 4 / 2**30, 1)}


def phase_text(args) -> dict:
    from genloom.datasets.items import text_item
    from genloom.dedup.job import DedupOptions, dedup_job
    from genloom.dedup.minhash import MinHashConfig, jaccard, shingle_hashes

    texts = text_items(args.text_n)
    t = time.perf_counter()
    ref = make_dataset(f"bench-scale-text-{args.text_n}", [text_item(x) for x in texts])
    store_s = time.perf_counter() - t
    t = time.perf_counter()
    result = dedup_job(ref, DedupOptions(method="minhash", dry_run=True))
    minhash_s = time.perf_counter() - t
    t = time.perf_counter()
    exact = dedup_job(ref, DedupOptions(method="exact", dry_run=True))
    exact_s = time.perf_counter() - t
    # Baseline: exact Jaccard over all pairs of a 600-item sample, extrapolated.
    cfg = MinHashConfig()
    sh = [shingle_hashes(x, ngram=cfg.ngram) for x in texts[:600]]
    t = time.perf_counter()
    for i in range(len(sh)):
        for j in range(i + 1, len(sh)):
            jaccard(sh[i], sh[j])
    pair_s = time.perf_counter() - t
    n = len(texts)
    return {"items": n, "store_seconds": round(store_s, 1), "minhash_seconds": round(minhash_s, 1),
            "minhash_dropped": result.dropped, "exact_seconds": round(exact_s, 1), "exact_dropped": exact.dropped,
            "all_pairs_jaccard_estimate_seconds": round(pair_s * (n / 600) ** 2, 1)}


def phase_semantic_text(args) -> dict:
    from genloom.datasets.items import text_item
    from genloom.dedup.job import DedupOptions, dedup_job

    texts = text_items(args.text_n)[: args.semantic_n]
    ref = make_dataset(f"bench-scale-text-sem-{args.semantic_n}", [text_item(x) for x in texts])
    t = time.perf_counter()
    result = dedup_job(ref, DedupOptions(method="semantic", dry_run=True))
    seconds = time.perf_counter() - t
    return {"items": len(texts), "seconds": round(seconds, 1), "dropped": result.dropped,
            "embedded": result.details.get("embedded"),
            "extrapolated_seconds_for_100k": round(seconds * 100_000 / len(texts), 0)}


PHASES = {"images": phase_images, "text": phase_text, "semantic-text": phase_semantic_text}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--phases", default="images,text,semantic-text")
    parser.add_argument("--text-n", type=int, default=100_000)
    parser.add_argument("--semantic-n", type=int, default=5000)
    parser.add_argument("--warm", dest="cold", action="store_false", help="keep cached image vectors")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not os.environ.get("DATABASE_URL") and not os.environ.get("GENLOOM_HOME"):
        os.environ["GENLOOM_HOME"] = "/tmp/genloom-bench"
    if args.child:
        result = PHASES[args.child](args)
        result["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)  # KiB on Linux
        print(json.dumps(result))
        return
    import torch

    out = {"benchmark": "dedup_scale", "machine": f"{os.cpu_count()} cores, no GPU", "threads": torch.get_num_threads()}
    for phase in args.phases.split(","):
        cmd = [sys.executable, __file__, "--child", phase, "--text-n", str(args.text_n), "--semantic-n", str(args.semantic_n)]
        if not args.cold:
            cmd.append("--warm")
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t
        if proc.returncode != 0:
            out[phase] = {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
            continue
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        result["wall_seconds_with_startup"] = round(wall, 1)
        out[phase] = result
        print(f"{phase}: {json.dumps(result)}", file=sys.stderr, flush=True)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
