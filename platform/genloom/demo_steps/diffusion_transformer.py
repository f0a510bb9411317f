"""Demo step: a text-conditioned diffusion model on digits, sampled from prompts (and a tiny GPT on the demo docs).

The diffusion model `demo-diffusion` learns digits from captions made of their labels
("a handwritten seven", "the digit 7", ...) embedded with the same MiniLM model that
retrieval uses; it is then prompted with phrasings it never saw in training. A re-run
reuses the registered model instead of training again.
"""

from __future__ import annotations

TITLE = "diffusion + transformer: prompted diffusion on digits (demo-diffusion), tiny GPT (demo-gpt)"

PROMPTS = [
    "a handwritten zero",
    "the number 1",
    "a drawing of a two",
    "digit three",
    "a handwritten four",
    "the number five",
    "six, written by hand",
    "a handwritten seven",
    "the digit eight",
    "number nine",
]


def _registered(name: str):
    from genloom.db.engine import session_scope
    from genloom.errors import NotFound
    from genloom.refs import format_ref
    from genloom.registry import resolve_model

    with session_scope() as s:
        try:
            row = resolve_model(s, name)
        except NotFound:
            return None
        return format_ref(row.name, row.version)


def run(ctx) -> dict:
    import torch

    from genloom.datasets.importers import import_digits
    from genloom.jobs.sample import sample_job
    from genloom.jobs.train import train
    from genloom.training.images import save_grid
    from genloom.training.options import SampleOptions, TrainOptions

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks: one thread is fastest, and polite on a shared machine
    result: dict = {}
    try:
        import_digits("digits")  # the training step imports it; idempotent (unchanged content: no new version)
        model = _registered("demo-diffusion")
        if model is None:
            trained = train(
                "diffusion",
                TrainOptions(
                    dataset="digits",
                    steps=60 if ctx.quick else 300,
                    batch_size=128,
                    lr=2e-3,
                    text_conditional=True,
                    name="demo-diffusion",
                    eval_every=10_000,
                    hparams={"base_channels": "32", "channel_mults": "1,2", "attention": "false", "ema_decay": "0.995"},
                ),
                progress=ctx.progress,
            )
            model = trained.model
            result["train_run"] = trained.run_id
        result["model"] = model
        # The recorded sampling run: 16 sevens from a prompt the model never saw verbatim.
        sevens = ctx.out_dir / "demo-diffusion-seven.png"
        run = sample_job(
            model, SampleOptions(n=16, seed=0, prompt="a handwritten seven", steps=20, guidance=2.0), out=sevens
        )
        result.update(sample_run=run.run_id, grid_seven=str(sevens))
        # One row per prompt, digits 0–9, each phrased differently.
        from genloom.db.engine import session_scope
        from genloom.jobs.models import load_model

        with session_scope() as s:
            _, _, runner = load_model(s, model, "cpu")
        n = 4 if ctx.quick else 8
        batches = [runner.sample(SampleOptions(n=n, seed=0, prompt=p, steps=20, guidance=2.0)).images for p in PROMPTS]
        grid = ctx.out_dir / "demo-diffusion-prompts.png"
        save_grid(torch.cat(batches), grid, nrow=n)
        result.update(grid_prompts=str(grid), prompt_match=_prompt_match(batches))
        result.update(_tiny_gpt(ctx, train, sample_job, SampleOptions, TrainOptions))
    finally:
        torch.set_num_threads(threads)
    return result


def _prompt_match(batches) -> str:
    """Share of samples whose nearest real-digit class mean (pixel space) is the prompted digit."""
    import torch
    from sklearn.datasets import load_digits

    data = load_digits()
    images = torch.tensor(data.images / 16.0, dtype=torch.float32)
    target = torch.tensor(data.target)
    means = torch.stack([images[target == k].mean(0) for k in range(10)])
    correct = total = 0
    for digit, batch in enumerate(batches):
        dist = ((batch[:, 0, None] - means[None]) ** 2).flatten(2).sum(-1)
        correct += int((dist.argmin(1) == digit).sum())
        total += len(batch)
    return f"{correct}/{total}"


def _tiny_gpt(ctx, train, sample_job, SampleOptions, TrainOptions) -> dict:
    """A character GPT on the demo collection's documents (when the retrieval step made it)."""
    import sqlalchemy as sa

    from genloom.db.engine import session_scope
    from genloom.db.models import Collection

    with session_scope() as s:
        if s.scalar(sa.select(Collection.id).where(Collection.name == "demo")) is None:
            return {}
    from genloom.datasets.importers import import_collection

    imported = import_collection("demo", "demo-docs")
    model = _registered("demo-gpt")
    if model is None:
        trained = train(
            "transformer",
            TrainOptions(
                dataset=imported.dataset,
                steps=30 if ctx.quick else 200,
                batch_size=16,
                lr=3e-3,
                name="demo-gpt",
                hparams={"n_layer": "2", "n_head": "2", "n_embd": "64", "block_size": "64", "eval_iters": "5"},
            ),
            progress=ctx.progress,
        )
        model = trained.model
    sampled = sample_job(model, SampleOptions(n=1, seed=0, prompt="The ", max_new_tokens=120, temperature=0.8))
    text_path = ctx.out_dir / "demo-gpt-sample.txt"
    text_path.write_text(sampled.texts[0] + "\n", encoding="utf-8")
    return {
        "gpt_model": model,
        "gpt_sample": sampled.texts[0][:80].replace("\n", " ") + "…",
        "gpt_text": str(text_path),
    }
