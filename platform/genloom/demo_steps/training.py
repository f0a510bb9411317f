"""Demo step: datasets and training: import digits, train a tiny VAE, sample a grid from the registry."""

from __future__ import annotations

TITLE = "datasets + training: digits → VAE demo-vae → sample grid"


def run(ctx) -> dict:
    import torch

    from genloom.datasets.importers import import_digits
    from genloom.jobs.sample import sample_job
    from genloom.jobs.train import train
    from genloom.training.options import SampleOptions, TrainOptions

    imported = import_digits("digits")  # idempotent: unchanged content makes no new version
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny network: one thread is fastest, and polite on a shared machine
    try:
        result = train(
            "vae",
            TrainOptions(
                dataset="digits",
                steps=40 if ctx.quick else 300,
                batch_size=64,
                lr=2e-3,
                name="demo-vae",
                hparams={"channels": "16", "latent_dim": "8"},
            ),
            progress=ctx.progress,
        )
        grid = ctx.out_dir / "demo-vae-samples.png"
        sampled = sample_job(result.model, SampleOptions(n=64, seed=0), out=grid)
    finally:
        torch.set_num_threads(threads)
    return {
        "dataset": imported.dataset,
        "model": result.model,
        "train_run": result.run_id,
        "steps": result.steps,
        "val_neg_elbo_nats": round(result.metrics.get("val_neg_elbo", float("nan")), 2),
        "sample_run": sampled.run_id,
        "grid": str(grid),
    }
