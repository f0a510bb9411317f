"""GAN on MNIST: train through genloom to a recorded budget; store a sample grid (PNG + synthetic items).

    python bench/gan_mnist.py [--steps N] [--loss bce|wgan-gp] [--out grid.png] > gan_mnist.json

Imports ../shared/data/mnist as `mnist` (idempotent), trains `gan`, samples 64 images with
seed 0 into --out and stores them as synthetic items in dataset `mnist-gan-samples`.
Prints steps, wall time, device and the last logged losses, critic gradient norm,
diversity (mode-collapse signal) and pixel MMD to the val split. FID comes with the
evaluation issue. Uses its own GENLOOM_HOME unless DATABASE_URL or GENLOOM_HOME is set.
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--loss", default="bce")
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--conditional", action="store_true")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--time-budget", type=float, default=0, help="stop training after this many seconds (0: none)")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out", default="gan_mnist_samples.png")
    parser.add_argument("--mnist", default=str(REPO.parent / "shared" / "data" / "mnist"))
    args = parser.parse_args()
    if not os.environ.get("DATABASE_URL") and not os.environ.get("GENLOOM_HOME"):
        os.environ["GENLOOM_HOME"] = "/tmp/genloom-bench"

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from genloom.datasets.importers import import_mnist
    from genloom.training.options import SampleOptions, TrainOptions
    from genloom.jobs.sample import sample_job
    from genloom.jobs.train import train

    import_mnist(Path(args.mnist), "mnist")
    opts = TrainOptions(time_budget=args.time_budget, dataset="mnist", steps=args.steps, batch_size=args.batch_size, device=args.device,
                        conditional=args.conditional, name="bench-gan-mnist",
                        hparams={"loss": args.loss, "channels": str(args.channels)})
    t0 = time.perf_counter()
    from genloom.cli.progress import RichProgress  # a benchmark is a front end: it may draw

    with RichProgress(transient=False, terminal_only=True) as progress:
        result = train("gan", opts, progress=progress)
    train_s = time.perf_counter() - t0
    sampled = sample_job(result.model, SampleOptions(n=64, seed=0, device=args.device), out=Path(args.out),
                         into="mnist-gan-samples")
    m = result.metrics
    print(json.dumps({
        "benchmark": "gan_mnist", "model": result.model, "run_id": result.run_id, "loss": args.loss,
        "steps": result.steps, "batch_size": args.batch_size, "train_seconds": round(train_s, 1),
        "device": opts.device if opts.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"),
        "torch_threads": torch.get_num_threads(),
        "loss_g": round(m.get("train_loss_g", float("nan")), 4), "loss_d": round(m.get("train_loss_d", float("nan")), 4),
        "critic_grad_norm": round(m.get("train_critic_grad_norm", float("nan")), 4),
        "diversity": round(m.get("train_diversity", float("nan")), 3),
        "val_mmd": round(m.get("val_mmd", float("nan")), 4), "val_diversity": round(m.get("val_diversity", float("nan")), 3),
        "grid": str(sampled.out), "stored": sampled.dataset, "sample_run": sampled.run_id,
    }, indent=1))


if __name__ == "__main__":
    main()
