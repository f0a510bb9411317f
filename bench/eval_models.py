"""Evaluate generative models on MNIST: the feature network, FID floor, FID/KID/PRDC, TSTR.

    python bench/eval_models.py [--steps 300] [--n 1000] [--archs vae,gan,diffusion] > eval_models.json

1. Imports ../shared/data/mnist as `mnist` (idempotent) and trains the feature network
   `features-mnist` (2 epochs; target ≥ 99 % test accuracy), unless one exists.
2. Trains each architecture class-conditionally with the same budget (--steps at batch 64,
   the issue-5/6 framework; reuses a model of the same name if present), then
   `eval model` against mnist's test split with --n samples: FID next to the
   real-vs-real floor, KID, precision, recall, density, coverage, conditional accuracy.
3. TSTR: samples --tstr-n labelled images per model into `mnist-syn-ARCH`, trains the
   classifier on them only and tests on real MNIST test digits, next to train-on-real.

CPU budgets are tiny (the numbers rank models, they do not match papers); the same script
with --steps in the thousands on a GPU gives the real figures. Uses
GENLOOM_HOME=/tmp/genloom-bench unless DATABASE_URL or GENLOOM_HOME is set.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "platform"))
sys.path.insert(0, str(REPO))


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--diffusion-n", type=int, default=300, help="diffusion samples (DDIM, 50 steps each)")
    parser.add_argument("--tstr-n", type=int, default=2000)
    parser.add_argument("--archs", default="vae,gan,diffusion")
    parser.add_argument("--feature-epochs", type=float, default=2.0)
    parser.add_argument("--utility-epochs", type=float, default=1.0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--mnist", default=str(REPO.parent / "shared" / "data" / "mnist"))
    args = parser.parse_args()
    if not os.environ.get("DATABASE_URL") and not os.environ.get("GENLOOM_HOME"):
        os.environ["GENLOOM_HOME"] = "/tmp/genloom-bench"

    import torch

    from genloom.datasets.importers import import_mnist
    from genloom.db.engine import session_scope
    from genloom.devices import resolve_device
    from genloom.errors import NotFound
    from genloom.evaluation.features import ClassifierTraining, find_feature_network, train_classifier
    from genloom.evaluation.jobs import EvalModelOptions, eval_model_job, eval_utility_job
    from genloom.registry import resolve_model
    from genloom.training.options import SampleOptions, TrainOptions
    from genloom.jobs.sample import sample_job
    from genloom.jobs.train import train

    device = resolve_device(args.device)
    out: dict = {"benchmark": "eval_models", "device": device, "threads": torch.get_num_threads(),
                 "machine": f"{os.cpu_count()} cores" + (f", {torch.cuda.get_device_name()}" if device == "cuda" else ", no GPU"),
                 "steps_per_model": args.steps, "batch_size": 64, "n": args.n}
    t = time.perf_counter()
    import_mnist(Path(args.mnist), "mnist")
    out["import_seconds"] = round(time.perf_counter() - t, 1)

    with session_scope() as s:
        fnet = find_feature_network(s, "mnist", (1, 28, 28))
        fnet_ref = f"{fnet.name}@{fnet.version}" if fnet else None
        fnet_acc = fnet.metadata_.get("test_accuracy") if fnet else None
    if fnet is None:
        log("training features-mnist")
        t = time.perf_counter()
        r = train_classifier("mnist", cfg=ClassifierTraining(epochs=args.feature_epochs, device=device))
        fnet_ref, fnet_acc = r.model, r.test_accuracy
        out["feature_net_seconds"] = round(time.perf_counter() - t, 1)
    out["feature_network"] = {"model": fnet_ref, "test_accuracy": fnet_acc}
    log(f"feature network {fnet_ref}: test accuracy {fnet_acc}")

    results = {}
    first_utility = True
    for arch in [a for a in args.archs.split(",") if a]:
        name = f"bench7-{arch}-mnist"
        entry: dict = {}
        try:
            with session_scope() as s:
                row = resolve_model(s, name)
                model = f"{row.name}@{row.version}"
            entry["trained"] = "reused"
        except NotFound:
            log(f"training {name} ({args.steps} steps)")
            t = time.perf_counter()
            r = train(arch, TrainOptions(dataset="mnist", steps=args.steps, batch_size=64, conditional=True, name=name,
                                         device=device))
            model = r.model
            entry["train_seconds"] = round(time.perf_counter() - t, 1)
        entry["model"] = model
        n = args.diffusion_n if arch == "diffusion" else args.n
        log(f"eval model {model} --n {n}")
        t = time.perf_counter()
        ev = eval_model_job(model, "mnist", EvalModelOptions(n=n, device=device))
        entry["eval_seconds"] = round(time.perf_counter() - t, 1)
        keep = ("fid", "fid_floor", "kid_mean", "precision", "recall", "density", "coverage", "conditional_accuracy",
                "mode_coverage", "label_tv", "anomaly_auroc_corrupted", "n_samples")
        entry["metrics"] = {k: round(v, 4) for k, v in ev["metrics"].items() if k in keep}
        entry["eval_run"] = ev["run_id"]
        if args.tstr_n:
            tstr_n = min(args.tstr_n, args.diffusion_n * 2) if arch == "diffusion" else args.tstr_n
            log(f"sampling {tstr_n} into mnist-syn-{arch}")
            t = time.perf_counter()
            sampled = sample_job(model, SampleOptions(n=tstr_n, seed=1, device=device), into=f"mnist-syn-{arch}")
            ut = eval_utility_job(sampled.dataset, "mnist", epochs=args.utility_epochs, device=device,
                                  compare_real=first_utility)
            first_utility = False
            entry["tstr"] = {k: round(v, 4) for k, v in ut["metrics"].items()}
            entry["tstr_seconds"] = round(time.perf_counter() - t, 1)
            if "trtr_accuracy" in ut["metrics"]:
                out["trtr_accuracy"] = round(ut["metrics"]["trtr_accuracy"], 4)
        results[arch] = entry
        log(f"{arch}: {json.dumps(entry)}")
    out["models"] = results
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
