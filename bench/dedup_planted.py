"""Planted duplicates: does dedup find copies we put in, and leave everything else alone?

    python bench/dedup_planted.py [--images 20000] [--frac 0.05] > dedup_planted.json

Images (../shared/data/mnist, the first --images training images; 0 = all 60,000): 5 % of
them get a planted copy: half exact copies, half lightly perturbed (Gaussian noise σ = 0.02,
and for half of those also a 1-pixel shift). Exact copies are content-addressed away when
stored (the same bytes are one item), which the script checks; the perturbed copies are
stored as items of dataset `bench-planted-mnist` and deduplicated with each method.

Text (../shared/data/tinyshakespeare/input.txt, paragraphs of ≥ 60 characters): 5 % get a
planted near-copy: whitespace/case changes, or one or two swaps of adjacent words.

For each method: recall of planted copies (a decision pairing the copy with its
original), the share of non-planted items dropped, and precision (decisions that are a
planted pair). Dry runs: no versions are written. Target: recall ≥ 99 % exact, ≥ 95 %
perturbed, ≤ 1 % non-planted dropped. Uses GENLOOM_HOME=/tmp/genloom-bench unless
DATABASE_URL or GENLOOM_HOME is set.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "platform"))
sys.path.insert(0, str(REPO))
DATA = Path(os.environ.get("GENLOOM_SHARED_DATA", REPO.parent / "shared" / "data"))  # a checkout elsewhere: set it


def mnist_images(limit: int) -> np.ndarray:
    with gzip.open(DATA / "mnist" / "train-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    return images[:limit] if limit else images


def perturb_image(img: np.ndarray, rng, shift: bool) -> np.ndarray:
    x = img.astype(np.float32) / 255.0
    if shift:  # MNIST digits sit in a blank 4-pixel border, so a roll is a clean 1-pixel shift
        x = np.roll(x, int(rng.choice([-1, 1])), axis=int(rng.integers(0, 2)))
    x = np.clip(x + rng.normal(0, 0.02, x.shape), 0, 1)
    return np.rint(x * 255).astype(np.uint8)


def perturb_text(text: str, rng) -> str:
    words = text.split()
    if rng.random() < 0.5:  # whitespace and case
        return "  ".join(words).upper() if rng.random() < 0.5 else "\n".join(words)
    for _ in range(int(rng.integers(1, 3))):  # one or two adjacent-word swaps
        k = int(rng.integers(0, len(words) - 1))
        words[k], words[k + 1] = words[k + 1], words[k]
    return " ".join(words)


def score(decisions, planted: dict[int, int], n_base: int) -> dict:
    """planted: copy id → original id. A decision counts when it pairs a copy with its original."""
    pairs = {frozenset((c, o)) for c, o in planted.items()}
    found = {frozenset((d.dropped, d.kept)) for d in decisions}
    hits = len(pairs & found)
    planted_items = set(planted) | set(planted.values())
    false_drops = sum(1 for d in decisions if frozenset((d.dropped, d.kept)) not in pairs)
    non_planted_dropped = sum(1 for d in decisions if d.dropped not in planted_items)
    return {
        "planted": len(pairs), "found": hits, "recall": round(hits / len(pairs), 4) if pairs else None,
        "decisions": len(decisions), "precision": round(hits / len(decisions), 4) if decisions else None,
        "false_pairs": false_drops, "non_planted_dropped": non_planted_dropped,
        "non_planted_dropped_rate": round(non_planted_dropped / n_base, 5),
    }


def run_methods(ref: str, methods: list[tuple[str, dict]], planted, n_base) -> dict:
    from genloom.dedup.job import DedupOptions, dedup_job

    out = {}
    for label, kwargs in methods:
        t = time.perf_counter()
        result = dedup_job(ref, DedupOptions(dry_run=True, **kwargs))
        out[label] = {**score(result.decisions, planted, n_base), "seconds": round(time.perf_counter() - t, 1),
                      **{k: v for k, v in result.details.items() if k in ("embedder", "cosine_threshold", "jaccard_threshold")}}
        print(f"{ref} {label}: {out[label]}", file=sys.stderr)
    return out


def images_part(args, rng) -> dict:
    from genloom.datasets.items import image_item, put_items
    from genloom.datasets.versions import add_members, create_version, seal_version
    from genloom.db.engine import session_scope
    from genloom.dedup.exact import exact_duplicates, image_key
    from genloom.evaluation.features import find_feature_network

    base = mnist_images(args.images)
    n = len(base)
    chosen = rng.choice(n, size=int(args.frac * n), replace=False)
    exact_src, pert_src = chosen[: len(chosen) // 2], chosen[len(chosen) // 2 :]
    perturbed = np.stack([perturb_image(base[i], rng, shift=bool(j % 2)) for j, i in enumerate(pert_src)])
    t = time.perf_counter()
    with session_scope() as s:
        base_ids = put_items(s, [image_item(im) for im in base])
        exact_ids = put_items(s, [image_item(base[i]) for i in exact_src])
        pert_ids = put_items(s, [image_item(im) for im in perturbed])
        # Content addressing: an exact copy *is* its original item.
        collapsed = sum(1 for j, i in enumerate(exact_src) if exact_ids[j] == base_ids[i])
        name = f"bench-planted-mnist-{n}"
        existing = s.execute(__import__("sqlalchemy").text("SELECT 1 FROM datasets WHERE name = :n"), {"n": name}).first()
        if existing is None:
            v = create_version(s, name, modality="image")
            add_members(s, v, [(i, "train") for i in base_ids + pert_ids])
            seal_version(s, v)
    store_s = time.perf_counter() - t
    # The exact method itself, on the in-memory arrays (before content addressing merges them).
    keyed = [(i, image_key(im)) for i, im in enumerate(base)] + [(n + j, image_key(base[i])) for j, i in enumerate(exact_src)]
    exact_found = exact_duplicates(keyed)
    exact_recall = sum(1 for d in exact_found if d.dropped >= n and d.kept == exact_src[d.dropped - n]) / len(exact_src)
    planted = {pert_ids[j]: base_ids[i] for j, i in enumerate(pert_src)}
    methods = [("exact", {"method": "exact"}), ("semantic-pixels", {"method": "semantic", "embedder": "pixels"})]
    with session_scope() as s:
        have_features = find_feature_network(s, "mnist", (1, 28, 28)) is not None
    if have_features and not args.skip_features:
        methods.append(("semantic-features", {"method": "semantic", "embedder": "features"}))
    results = run_methods(f"{name}@1", methods, planted, n)
    noise_only = {c: o for j, (c, o) in enumerate(planted.items()) if j % 2 == 0}
    shifted = {c: o for j, (c, o) in enumerate(planted.items()) if j % 2 == 1}
    return {
        "base_images": n, "planted_exact": len(exact_src), "planted_perturbed": len(pert_src),
        "exact_copies_collapsed_by_content_addressing": collapsed,
        "exact_method_recall_in_memory": round(exact_recall, 4),
        "store_seconds": round(store_s, 1),
        "methods": results,
        "note": None if have_features else "no feature network for mnist yet: run bench/eval_models.py first for semantic-features",
        "perturbed_split": {"noise_only": len(noise_only), "noise_and_shift": len(shifted)},
    }


def text_part(args, rng) -> dict:
    from genloom.datasets.items import put_items, text_item
    from genloom.datasets.versions import add_members, create_version, seal_version
    from genloom.db.engine import session_scope

    raw = (DATA / "tinyshakespeare" / "input.txt").read_text()
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", raw) if len(p.strip()) >= 60]
    # Keep one copy of paragraphs that repeat verbatim in the play (content addressing would merge them anyway).
    paragraphs = list(dict.fromkeys(paragraphs))
    if args.paragraphs:
        paragraphs = paragraphs[: args.paragraphs]
    n = len(paragraphs)
    chosen = rng.choice(n, size=int(args.frac * n), replace=False)
    copies = [perturb_text(paragraphs[i], rng) for i in chosen]
    with session_scope() as s:
        base_ids = put_items(s, [text_item(p) for p in paragraphs])
        copy_ids = put_items(s, [text_item(c) for c in copies])
        name = f"bench-planted-shakespeare-{n}"
        existing = s.execute(__import__("sqlalchemy").text("SELECT 1 FROM datasets WHERE name = :n"), {"n": name}).first()
        if existing is None:
            v = create_version(s, name, modality="text")
            add_members(s, v, [(i, "train") for i in base_ids + copy_ids])
            seal_version(s, v)
    planted = {c: base_ids[i] for c, i in zip(copy_ids, chosen) if c != base_ids[i]}
    methods = [("exact", {"method": "exact"}), ("minhash", {"method": "minhash"})]
    if not args.skip_semantic:  # MiniLM over every paragraph: ~0.3 s per text on a busy 2-core CPU
        methods += [("semantic", {"method": "semantic"}), ("all", {"method": "all"})]
    return {"paragraphs": n, "planted": len(planted), "methods": run_methods(f"{name}@1", methods, planted, n)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=20000, help="MNIST training images to use (0 = all 60,000)")
    parser.add_argument("--paragraphs", type=int, default=0, help="tiny-shakespeare paragraphs (0 = all)")
    parser.add_argument("--frac", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-images", action="store_true")
    parser.add_argument("--skip-text", action="store_true")
    parser.add_argument("--skip-features", action="store_true")
    parser.add_argument("--skip-semantic", action="store_true", help="text: exact and minhash only")
    parser.add_argument("--out", default=None, help="also write the JSON to bench/results/OUT")
    args = parser.parse_args()
    if not os.environ.get("DATABASE_URL") and not os.environ.get("GENLOOM_HOME"):
        os.environ["GENLOOM_HOME"] = "/tmp/genloom-bench"
    import torch

    rng = np.random.default_rng(args.seed)
    out = {"benchmark": "dedup_planted", "machine": f"{os.cpu_count()} cores, torch {torch.__version__}, no GPU",
           "threads": torch.get_num_threads()}
    if not args.skip_images:
        out["images"] = images_part(args, rng)
    if not args.skip_text:
        out["text"] = text_part(args, rng)
    if args.out:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from benchlib import write_result

        write_result(args.out, out)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
