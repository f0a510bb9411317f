"""`genloom train`, `genloom sample`, `genloom score`, `genloom models list|show|add-endpoint`: parsing and rendering only."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from genloom.cli.output import JsonOption, console, info, print_json
from genloom.cli.progress import RichProgress

models_app = typer.Typer(
    help="The model registry: trained checkpoints with their runs, and remote endpoints.", no_args_is_help=True
)


def train(
    arch: Annotated[
        str,
        typer.Argument(
            help="Architecture: vae, gan, diffusion, transformer, vae-gan, latent-diffusion or clip; "
            "or embedder / reranker (retrieval), or reader (answer spans)."
        ),
    ],
    dataset: Annotated[
        str, typer.Option("--dataset", "-d", help="Input dataset NAME\\[@VERSION] (default: latest sealed).")
    ],
    steps: Annotated[Optional[int], typer.Option("--steps", help="Optimisation steps.")] = None,
    epochs: Annotated[
        Optional[float], typer.Option("--epochs", help="Passes over the train split (instead of --steps).")
    ] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", "-b", help="Batch size per process.")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Peak learning rate.")] = None,
    conditional: Annotated[bool, typer.Option("--conditional", help="Class-conditional on the item labels.")] = False,
    text_conditional: Annotated[
        bool, typer.Option("--text-conditional", help="Conditioned on a sentence embedding of each item's caption.")
    ] = False,
    init: Annotated[
        Optional[str], typer.Option("--init", help="Start from a registered MODEL[@V] or a local HF directory.")
    ] = None,
    autoencoder: Annotated[
        Optional[str],
        typer.Option(
            "--autoencoder", help="latent-diffusion: the registered vae or vae-gan MODEL@V whose latents it models."
        ),
    ] = None,
    set_: Annotated[
        Optional[list[str]],
        typer.Option("--set", help="KEY=VALUE hyperparameter (repeatable), e.g. loss=wgan-gp, beta=0.5, warmup=100."),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
    checkpoint_every: Annotated[
        int, typer.Option("--checkpoint-every", help="Steps between resumable checkpoints (0: ~10 per run).")
    ] = 0,
    eval_every: Annotated[
        int, typer.Option("--eval-every", help="Steps between validation passes (0: ~5 per run).")
    ] = 0,
    compile_: Annotated[bool, typer.Option("--compile", help="torch.compile the networks.")] = False,
    name: Annotated[Optional[str], typer.Option("--name", help="Registry name (default ARCH-DATASET).")] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the latest interrupted run of --name from its checkpoint.")
    ] = False,
    keep_best: Annotated[
        bool,
        typer.Option(
            "--keep-best",
            help="Register the weights of the best validation pass, not the last (with overfitting or --set patience=N).",
        ),
    ] = False,
    json_out: JsonOption = False,
) -> None:
    """Train a model on a dataset version; register it with its run. Works under `torchrun --nproc_per_node N`.

    `train embedder` / `train reranker` fine-tune the shipped MiniLM (or --init MODEL) on a dataset of
    query/passage pairs (`genloom datasets import qrels`); --set negatives=N, max_length=N, scale=X, warmup=X.
    `train reader` fine-tunes a span reader on question/answer records (`genloom datasets import squad`) and
    calibrates its abstention on their val split; --set max_seconds=S stops training after S seconds."""
    import os

    if arch in ("embedder", "reranker", "reader"):
        _train_retrieval(arch, dataset, init, steps, epochs, batch_size, lr, seed, name, set_, json_out)
        return

    from genloom.jobs.train import train as run_training
    from genloom.training.options import TrainOptions, parse_set

    opts = TrainOptions(
        dataset=dataset,
        steps=steps,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        conditional=conditional,
        text_conditional=text_conditional,
        init=init,
        autoencoder=autoencoder,
        seed=seed,
        checkpoint_every=checkpoint_every,
        eval_every=eval_every,
        compile=compile_,
        name=name,
        device=device,
        resume=resume,
        keep_best=keep_best,
        hparams=parse_set(set_ or []),
    )
    # Not transient: the last state of the bar (steps, loss, rate) stays as the run's summary line.
    with RichProgress(enabled=not json_out, transient=False) as progress:
        result = run_training(arch, opts, progress=progress)
    if int(os.environ.get("RANK", 0)) != 0:
        return
    payload = {"run_id": result.run_id, "model": result.model, "metrics": result.metrics}
    if json_out:
        print_json(payload)
        return
    console.print(
        f"model [bold]{result.model}[/bold] (run {result.run_id}, {result.steps} steps, {result.seconds:.1f} s)"
    )
    if result.kept_step is not None and result.kept_step != result.steps:
        console.print(f"  registered the weights of step {result.kept_step}, the best validation pass (--keep-best)")
    for key, value in sorted(result.metrics.items()):
        console.print(f"  {key}: {value:.5g}")


def _train_retrieval(kind, dataset, init, steps, epochs, batch_size, lr, seed, name, set_, json_out) -> None:
    import dataclasses

    from genloom.errors import BadInput
    from genloom.finetune.config import FinetuneConfig
    from genloom.finetune.jobs import train_retrieval_model
    from genloom.pairs import parse_pairs

    config = FinetuneConfig(seed=seed, steps=steps)
    for option, value in (("epochs", epochs), ("batch_size", batch_size), ("lr", lr)):
        if value is not None:
            setattr(config, option, value)
    fields = {f.name: f.type for f in dataclasses.fields(FinetuneConfig)}
    for key, text in parse_pairs(set_, "--set").items():
        if key not in ("negatives", "max_length", "scale", "warmup", "max_seconds", "calibration_questions"):
            raise BadInput(
                f"unknown --set {key} for train {kind}; use negatives, max_length, scale, warmup, max_seconds "
                "or calibration_questions"
            )
        try:
            setattr(config, key, int(text) if str(fields[key]).startswith("int") else float(text))
        except ValueError:
            raise BadInput(f"--set {key}= expects a number (got {text!r})") from None
    with RichProgress(enabled=not json_out, transient=False) as progress:
        result = train_retrieval_model(
            kind,
            dataset,
            name=name or f"{kind}-{dataset.split('@')[0]}",
            base=init,
            config=config,
            progress=lambda done, total, loss: progress(f"train {kind}", done, total, f"loss {loss:.4f}"),
        )
    if json_out:
        print_json(result.as_json())
        return
    stats = result.stats
    console.print(
        f"model [bold]{result.model}[/bold] ({result.architecture}, run {result.run_id}): {result.pairs} pairs "
        f"of {result.dataset}, {stats['steps']} steps in {stats['seconds']:.1f} s, "
        f"loss {stats['loss_first']} → {stats['loss_last']}"
    )
    if "calibration" in stats:
        cal = stats["calibration"]
        console.print(
            f"  abstains below margin {cal['threshold']}: on {cal['questions']} held-out questions it abstains on "
            f"{cal['answerable_abstention']:.0%} of the answerable and {cal['unanswerable_abstention']:.0%} "
            "of the unanswerable (their question with another article's paragraph)"
        )


def sample(
    model: Annotated[str, typer.Argument(help="Registered MODEL\\[@VERSION].")],
    n: Annotated[int, typer.Option("--n", help="Number of samples.")] = 16,
    label: Annotated[Optional[str], typer.Option("--label", help="Class label (conditional models).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed: same seed, same samples.")] = 0,
    out: Annotated[
        Optional[Path], typer.Option("--out", help="Write a PNG grid (images) or a text file (texts).")
    ] = None,
    store: Annotated[
        bool, typer.Option("--store", help="Store the samples as synthetic items (needs --into).")
    ] = False,
    into: Annotated[Optional[str], typer.Option("--into", help="Dataset to add a new sealed version to.")] = None,
    interpolate: Annotated[
        Optional[tuple[int, int]],
        typer.Option("--interpolate", help="Two item ids: decode the latent path between them."),
    ] = None,
    steps: Annotated[
        Optional[int], typer.Option("--steps", help="Interpolation steps (VAE) or sampler steps (diffusion).")
    ] = None,
    sampler: Annotated[Optional[str], typer.Option("--sampler", help="Diffusion sampler: ddpm or ddim.")] = None,
    eta: Annotated[Optional[float], typer.Option("--eta", help="DDIM eta.")] = None,
    guidance: Annotated[Optional[float], typer.Option("--guidance", help="Classifier-free guidance weight w.")] = None,
    prompt: Annotated[
        Optional[str], typer.Option("--prompt", help="Text prompt (text-conditioned models, --guide).")
    ] = None,
    guide: Annotated[
        Optional[str],
        typer.Option("--guide", help="clip:NAME[@V]: steer diffusion sampling towards --prompt with a CLIP model."),
    ] = None,
    guide_scale: Annotated[
        Optional[float], typer.Option("--guide-scale", help="Strength of --guide (0: exactly unguided; default 1).")
    ] = None,
    max_new_tokens: Annotated[
        Optional[int], typer.Option("--max-new-tokens", help="Tokens to generate (transformer).")
    ] = None,
    temperature: Annotated[
        Optional[float], typer.Option("--temperature", help="Sampling temperature (transformer).")
    ] = None,
    top_k: Annotated[Optional[int], typer.Option("--top-k", help="Top-k sampling (transformer).")] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    json_out: JsonOption = False,
) -> None:
    """Sample from a registered model: a PNG grid or texts; --store --into DATASET keeps them as synthetic items."""
    from genloom.errors import BadInput
    from genloom.jobs.sample import sample_job
    from genloom.training.options import SampleOptions

    if store and not into:
        raise BadInput("--store needs --into DATASET (the dataset that gets a new version)")
    if into and not store:
        raise BadInput("--into needs --store")
    opts = SampleOptions(
        n=n,
        label=label,
        seed=seed,
        interpolate=(interpolate[0], interpolate[1]) if interpolate else None,
        steps=steps,
        sampler=sampler,
        eta=eta,
        guidance=guidance,
        prompt=prompt,
        guide=guide,
        guide_scale=guide_scale,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        device=device,
    )
    with RichProgress(enabled=not json_out) as progress:
        opts.progress = progress
        result = sample_job(model, opts, out=out, into=into if store else None)
    if json_out:
        print_json(
            {
                "run_id": result.run_id,
                "items": result.items,
                "dataset": result.dataset,
                "unchanged": result.unchanged,
                "out": str(result.out) if result.out else None,
            }
        )
        return
    if result.texts is not None and result.out is None:
        for i, text in enumerate(result.texts):
            console.print(f"[dim]--- sample {i}[/dim]")
            console.print(text, markup=False, highlight=False)
    info(
        f"run {result.run_id}: {result.count} samples from {result.model}"
        + (f" → {result.out}" if result.out else "")
        + (f"; stored {len(result.items)} items in {result.dataset}" if result.dataset and not result.unchanged else "")
        + (f"; {result.dataset} already holds every sample: no new version" if result.unchanged else "")
    )


def score(
    model: Annotated[str, typer.Argument(help="Registered MODEL\\[@VERSION] that can score items (VAE).")],
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Dataset NAME\\[@VERSION] to score.")],
    split: Annotated[Optional[str], typer.Option("--split", help="Only this split (train, val, test).")] = None,
    top: Annotated[int, typer.Option("--top", help="How many of the most anomalous items to list.")] = 20,
    json_out: JsonOption = False,
) -> None:
    """Per-item anomaly scores (negative ELBO), stored as metrics rows; lists the most anomalous items."""
    from rich.table import Table

    from genloom.jobs.score import score_job

    result = score_job(model, dataset, top=top, split=split)
    if json_out:
        print_json(result)
        return
    table = Table(title=f"most anomalous items of {result['dataset']} under {result['model']} (run {result['run_id']})")
    for col in ("item_id", "label", "split", "score"):
        table.add_column(col, justify="right" if col in ("item_id", "score") else "left")
    for row in result["top"]:
        table.add_row(str(row["item_id"]), str(row["label"]), row["split"], f"{row['score']:.3f}")
    console.print(table)
    info(
        f"scored {result['scored']} items; mean {result['mean']:.3f} (metric '{result['metric']}' of run {result['run_id']})"
    )


@models_app.command("list")
def models_list(json_out: JsonOption = False) -> None:
    """Every registered model version."""
    from rich.table import Table

    from genloom.db.engine import session_scope
    from genloom.jobs.models import list_models

    with session_scope() as s:
        rows = list_models(s)
    if json_out:
        print_json(rows)
        return
    table = Table()
    for col in ("model", "architecture", "format", "size", "run", "dataset", "created"):
        table.add_column(col, no_wrap=col in ("model", "dataset", "created"))
    for r in rows:
        table.add_row(
            r["model"],
            r["architecture"],
            r["format"],
            f"{r['size_bytes'] / 1e6:.2f} MB",
            str(r["run_id"]),
            r["dataset"] or "-",
            r["created_at"].strftime("%Y-%m-%d %H:%M"),
        )
    console.print(table)


@models_app.command("show")
def models_show(
    model: Annotated[str, typer.Argument(help="MODEL\\[@VERSION].")],
    json_out: JsonOption = False,
) -> None:
    """One model: config, checkpoint hash and size, training run, input dataset version, final metrics."""
    from genloom.db.engine import session_scope
    from genloom.jobs.models import show_model

    with session_scope() as s:
        row = show_model(s, model)
    if json_out:
        print_json(row)
        return
    for key, value in row.items():
        console.print(f"[bold]{key}[/bold]: {value}", highlight=False)


@models_app.command("export-onnx")
def models_export_onnx(
    out: Annotated[Path, typer.Option("--out", "-o", help="New folder for the exported encoder.")],
    model: Annotated[
        Optional[str],
        typer.Argument(help="Sentence encoder: all-MiniLM-L6-v2 (default), a folder, or a registered embedder."),
    ] = None,
    quantize: Annotated[str, typer.Option("--quantize", help="int8 (dynamic, weights) or fp32.")] = "int8",
    json_out: JsonOption = False,
) -> None:
    """Export a sentence encoder to ONNX Runtime (offline, from local weights); use the folder as --model."""
    from genloom.db.engine import session_scope
    from genloom.finetune.config import base_encoder_dir
    from genloom.onnx_encoder import export_onnx

    if model is None or Path(model).expanduser().is_dir():
        from genloom import embeddings

        source = embeddings.model_path(model)
    else:
        with session_scope() as s:
            source = base_encoder_dir(s, model)
    folder = export_onnx(source, out, quantize=quantize)
    payload = {"folder": str(folder.resolve()), "precision": quantize, "source": str(source)}
    if json_out:
        print_json(payload)
        return
    info(f"exported {source} → {folder} ({quantize}); use it with: genloom ingest … --model {folder}")


@models_app.command("add-endpoint")
def models_add_endpoint(
    name: Annotated[
        str, typer.Argument(help="Name for the endpoint in the registry (adding again makes the next version).")
    ],
    base_url: Annotated[
        str, typer.Option("--base-url", help="The server's OpenAI base URL, e.g. http://localhost:8000/v1.")
    ],
    model_id: Annotated[str, typer.Option("--model", help="The model id the server serves (its /v1/models).")],
    api_key_env: Annotated[
        Optional[str],
        typer.Option("--api-key-env", help="Environment variable holding the API key (the key is never stored)."),
    ] = None,
    tokenizer: Annotated[
        Optional[str],
        typer.Option("--tokenizer", help="Local Hugging Face tokenizer directory, for servers without /tokenize."),
    ] = None,
    context_window: Annotated[
        Optional[int],
        typer.Option("--context-window", help="Prompt + answer tokens (default: the server's, else 4096)."),
    ] = None,
    json_out: JsonOption = False,
) -> None:
    """Register an OpenAI-compatible server (vLLM, llama.cpp, Ollama, ...) for ask/generate --model NAME."""
    from genloom.db.engine import session_scope
    from genloom.generation.endpoint import EndpointSpec, add_endpoint

    spec = EndpointSpec(
        base_url=base_url, model=model_id, api_key_env=api_key_env, tokenizer=tokenizer, context_window=context_window
    )
    with session_scope() as s:
        row = add_endpoint(s, name, spec)
        out = {"model": f"{row.name}@{row.version}", "id": row.id, "format": row.format, "endpoint": row.config}
    if json_out:
        print_json(out)
    else:
        info(
            f"endpoint {out['model']} → {out['endpoint']['base_url']} (server model {model_id}); "
            f"use it with: genloom ask QUESTION -c COLLECTION --model {name}"
        )


def register(app: typer.Typer) -> None:
    app.command()(train)
    app.command()(sample)
    app.command()(score)
    app.add_typer(models_app, name="models")
