"""VAE on MNIST: train through genloom (data streamed from Postgres), report test negative ELBO.

    python bench/vae_mnist.py [--steps N | --epochs E] [--device auto] > vae_mnist.json

Imports ../shared/data/mnist as dataset `mnist` (idempotent), trains `vae` with the
given budget, then evaluates the negative ELBO (nats/image, β = 1, one z sample per image,
Bernoulli likelihood on [0, 1] pixels) on MNIST's 10,000 test images. Prints one JSON
object: steps, wall time, device, threads, val and test negative ELBO. Uses its own
GENLOOM_HOME (a temporary embedded server) unless DATABASE_URL or GENLOOM_HOME is set.
Target: test negative ELBO ≤ 95 (pytorch/examples' MLP VAE: about 104–106 after 10 epochs).
"""

from __future__ import annotations

import argparse
import json
import os
import platform as std_platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "platform"))
sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int)
    parser.add_argument("--epochs", type=float)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--latent-dim", type=int, default=32)
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--time-budget", type=float, default=0, help="stop training after this many seconds (0: none)")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--name", default="bench-vae-mnist", help="model name (distinct names let runs go in parallel)")
    parser.add_argument("--mnist", default=str(REPO.parent / "shared" / "data" / "mnist"))
    args = parser.parse_args()
    if not os.environ.get("DATABASE_URL") and not os.environ.get("GENLOOM_HOME"):
        os.environ["GENLOOM_HOME"] = "/tmp/genloom-bench"

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from genloom.datasets.importers import import_mnist
    from genloom.datasets.loading import stream_batches
    from genloom.db.engine import session_scope
    from genloom.jobs.models import load_model
    from genloom.training.options import TrainOptions
    from genloom.jobs.train import train

    t0 = time.perf_counter()
    imported = import_mnist(Path(args.mnist), "mnist")
    import_s = time.perf_counter() - t0
    opts = TrainOptions(time_budget=args.time_budget, dataset="mnist", steps=args.steps, epochs=args.epochs if args.steps is None else None,
                        batch_size=args.batch_size, lr=args.lr, device=args.device, name=args.name,
                        eval_every=0, hparams={"latent_dim": str(args.latent_dim), "channels": str(args.channels)})
    if opts.steps is None and opts.epochs is None:
        opts.epochs = 10
    t1 = time.perf_counter()
    from genloom.cli.progress import RichProgress  # a benchmark is a front end: it may draw

    with RichProgress(transient=False, terminal_only=True) as progress:
        result = train("vae", opts, progress=progress)
    train_s = time.perf_counter() - t1
    with session_scope() as s:
        row, _, model = load_model(s, result.model, opts.device if opts.device != "auto" else "cpu")
        device = model.device
        version_id = row.input_version_id
    gen = torch.Generator(device=device).manual_seed(0)
    total, n = 0.0, 0
    with torch.no_grad():
        for batch in stream_batches(version_id, "test", 1000):
            rec, kl = model.net(batch.x.to(device), None, generator=gen)
            total += float((rec + kl).sum())
            n += len(batch)
    print(json.dumps({
        "benchmark": "vae_mnist",
        "model": result.model, "run_id": result.run_id,
        "steps": result.steps, "batch_size": args.batch_size, "epochs": round(result.steps * args.batch_size / 55000, 2),
        "train_seconds": round(train_s, 1), "import_seconds": round(import_s, 1),
        "device": str(device), "torch_threads": torch.get_num_threads(), "cpu": std_platform.processor() or std_platform.machine(),
        "val_neg_elbo": round(result.metrics.get("val_neg_elbo", float("nan")), 2),
        "test_neg_elbo": round(total / n, 2), "test_images": n,
        "target_test_neg_elbo": 95.0,
    }, indent=1))


if __name__ == "__main__":
    main()
