"""Is reading from Postgres the bottleneck? Images/s streamed from the store vs from an in-memory tensor.

    python bench/data_loading.py [--dataset mnist] [--batch-size 128] > data_loading.json

All at the training batch size on the same machine in the same run:
- `pack_seconds`: the one-time packing of the train split into shards (the first shuffled
  read of a sealed version does it; genloom.datasets.shards);
- `stream_images_per_s`: one shuffled epoch through genloom's loader as training reads it
  (packed shards → uint8 → float tensors), steady state (the median of `--epochs` epochs);
- `row_stream_images_per_s`: the same epoch streamed row by row (the path before shards);
- `memory_images_per_s`: the same epoch from a float tensor already in memory (random
  permutation + index); `loader_ratio` = stream / memory (target ≥ 0.5);
- `train_*`: VAE training steps per second fed by each source (the prefetching stream vs the
  tensor); `train_ratio` = stream / memory.
Imports MNIST (or digits when MNIST is absent) into its own GENLOOM_HOME unless one is configured.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "platform"))
sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--train-steps", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=5, help="loader epochs to time (the median counts)")
    parser.add_argument("--mnist", default=str(REPO.parent / "shared" / "data" / "mnist"))
    args = parser.parse_args()
    if not os.environ.get("DATABASE_URL") and not os.environ.get("GENLOOM_HOME"):
        os.environ["GENLOOM_HOME"] = "/tmp/genloom-bench"

    import torch

    torch.set_num_threads(args.threads)
    from genloom.datasets.importers import import_digits, import_mnist
    from genloom.datasets.loading import load_split, stream_batches
    from genloom.datasets.prefetch import prefetched
    from genloom.datasets.versions import describe_version, resolve_version
    from genloom.db.engine import session_scope

    if args.dataset == "mnist" and Path(args.mnist).exists():
        import_mnist(Path(args.mnist), "mnist")
    else:
        args.dataset = "digits"
        import_digits("digits")
    with session_scope() as s:
        info = describe_version(s, resolve_version(s, args.dataset))
    bs = args.batch_size

    # 1. raw loader rates
    from genloom.datasets.shards import ensure_shards
    from genloom.db.engine import get_engine

    raw = get_engine().raw_connection()
    try:
        conn = raw.driver_connection
        # The shards are a cache: drop them so that the one-time packing is timed too.
        conn.execute("DELETE FROM dataset_shards WHERE version_id = %s AND split = 'train'", (info.version_id,))
        conn.commit()
        t = time.perf_counter()
        shards = ensure_shards(conn, info.version_id, "train")
        pack_s = time.perf_counter() - t
    finally:
        raw.close()

    def epoch_rate(epoch: int, packed: bool = True) -> tuple[int, float]:
        t = time.perf_counter()
        n = sum(len(b) for b in stream_batches(info.version_id, "train", bs, shuffle=True, seed=0, epoch=epoch, packed=packed))
        return n, n / (time.perf_counter() - t)

    rates = [epoch_rate(e)[1] for e in range(args.epochs)]
    stream_rate = statistics.median(rates)
    n, row_rate = epoch_rate(0, packed=False)
    everything = load_split(info.version_id, "train")
    x = everything.x.contiguous()
    memory_rates = []
    for _ in range(args.epochs):
        t = time.perf_counter()
        m = 0
        perm = torch.randperm(x.shape[0])
        for i in range(0, x.shape[0], bs):
            batch = x[perm[i : i + bs]]
            m += batch.shape[0]
        memory_rates.append(m / (time.perf_counter() - t))
    memory_rate = statistics.median(memory_rates)

    # 2. what training sees: VAE steps fed by each source
    from genloom.architectures.vae import ConvVAE, VAEHyperparams

    net = ConvVAE(tuple(info.shape), VAEHyperparams(channels=16, latent_dim=32))
    opt = torch.optim.Adam(net.parameters(), 1e-3)

    def step(xb):
        rec, kl = net(xb)
        loss = (rec + kl).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()

    def endless_stream():
        epoch = 0
        while True:
            yield from stream_batches(info.version_id, "train", bs, shuffle=True, seed=0, epoch=epoch, drop_last=True)
            epoch += 1

    def memory_batches():
        while True:
            p = torch.randperm(x.shape[0])
            for i in range(0, x.shape[0] - bs + 1, bs):
                yield x[p[i : i + bs]]

    def timed(source, steps):
        it = iter(source)
        first = next(it)
        step(first.x if hasattr(first, "x") else first)  # warm-up
        t0 = time.perf_counter()
        for _ in range(steps):
            b = next(it)
            step(b.x if hasattr(b, "x") else b)
        return steps / (time.perf_counter() - t0)

    mem_steps = timed(memory_batches(), args.train_steps)
    stream_steps = timed(prefetched(endless_stream(), 2), args.train_steps)
    print(json.dumps({
        "benchmark": "data_loading", "dataset": info.ref, "train_images": n, "batch_size": bs,
        "shards": len(shards), "pack_seconds": round(pack_s, 3),
        "stream_images_per_s": round(stream_rate), "stream_epochs_images_per_s": [round(r) for r in rates],
        "row_stream_images_per_s": round(row_rate),
        "memory_images_per_s": round(memory_rate),
        "loader_ratio": round(stream_rate / memory_rate, 4), "target_loader_ratio": 0.5,
        "row_loader_ratio": round(row_rate / memory_rate, 4),
        "train_steps_per_s_memory": round(mem_steps, 2), "train_steps_per_s_stream": round(stream_steps, 2),
        "train_ratio": round(stream_steps / mem_steps, 3),
        "torch_threads": torch.get_num_threads(),
    }, indent=1))


if __name__ == "__main__":
    main()
