"""`genloom eval model|utility|text|features`: evaluate generative models, synthetic data and text."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from genloom.cli.evaluate import eval_app
from genloom.cli.output import JsonOption, console, print_json
from genloom.cli.progress import RichProgress


def _render(result: dict, title: str) -> None:
    table = Table("metric", "value", title=title, title_justify="left")
    for name, value in result["metrics"].items():
        table.add_row(name, f"{value:.6g}")
    console.print(table)
    console.print(f"run {result['run_id']}; definitions: docs/metrics.md")


@eval_app.command("model")
def eval_model(
    model: Annotated[str, typer.Argument(help="Model MODEL\\[@V] from the registry.")],
    against: Annotated[str, typer.Option("--against", help="Real dataset NAME\\[@V] to compare with.")],
    split: Annotated[str, typer.Option("--split", help="Split of --against to compare with.")] = "test",
    n: Annotated[
        Optional[int], typer.Option("--n", help="Samples to draw (default: the split's size, at most 10,000).")
    ] = None,
    features: Annotated[
        Optional[str],
        typer.Option(
            "--features", help="Feature network MODEL\\[@V] (default: the dataset's own, trained once if absent)."
        ),
    ] = None,
    anomaly_class: Annotated[
        Optional[str], typer.Option("--anomaly-class", help="VAE: AUROC of this held-out class against the others.")
    ] = None,
    samples: Annotated[
        int, typer.Option("--samples", help="Text models: generations for distinct-n and memorisation.")
    ] = 20,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda | mps")] = "auto",
    json_out: JsonOption = False,
) -> None:
    """FID (+ real-vs-real floor), KID, precision/recall, density/coverage, labels; perplexity/bpc for text."""
    from genloom.evaluation.jobs import EvalModelOptions, eval_model_job

    with RichProgress(enabled=not json_out) as progress:
        result = eval_model_job(
            model,
            against,
            EvalModelOptions(
                split=split,
                n=n,
                features=features,
                seed=seed,
                device=device,
                anomaly_class=anomaly_class,
                text_samples=samples,
                progress=progress,
                notes=progress.note,
            ),
        )
    if json_out:
        print_json(result)
    else:
        extra = f", features {result['features']}" if result.get("features") else ""
        _render(result, f"{result['model']} against {result['against']} ({result['split']}{extra})")


@eval_app.command("clip")
def eval_clip(
    model: Annotated[str, typer.Argument(help="A clip MODEL\\[@V] from the registry.")],
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Labelled image dataset NAME\\[@V].")],
    split: Annotated[str, typer.Option("--split", help="Split whose images are retrieved.")] = "test",
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda | mps")] = "auto",
    json_out: JsonOption = False,
) -> None:
    """Text→image and image→text top-1 retrieval of a clip model against one caption per class."""
    from genloom.evaluation.jobs import eval_clip_job

    result = eval_clip_job(model, dataset, split=split, device=device)
    if json_out:
        print_json(result)
    else:
        _render(result, f"{result['model']} on {result['dataset']} ({result['split']})")


@eval_app.command("utility")
def eval_utility(
    synthetic: Annotated[
        str, typer.Option("--synthetic", help="Dataset NAME@V whose synthetic items train the classifier.")
    ],
    real: Annotated[
        str,
        typer.Option("--real", help="Real dataset NAME@V: its test split tests, its train split gives train-on-real."),
    ],
    epochs: Annotated[
        Optional[float], typer.Option("--epochs", help="Classifier epochs (default: by dataset size).")
    ] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    device: Annotated[str, typer.Option("--device")] = "auto",
    json_out: JsonOption = False,
) -> None:
    """Train on synthetic, test on real (TSTR), next to train on real (TRTR)."""
    from genloom.evaluation.jobs import eval_utility_job

    with RichProgress(enabled=not json_out) as progress:
        result = eval_utility_job(synthetic, real, epochs=epochs, seed=seed, device=device, progress=progress)
    if json_out:
        print_json(result)
    else:
        _render(result, f"TSTR: {result['synthetic']} → {result['real']}")


@eval_app.command("text")
def eval_text(
    hyp: Annotated[Path, typer.Option("--hyp", help="Hypotheses, one segment per line.")],
    ref: Annotated[list[Path], typer.Option("--ref", help="References, one line per hypothesis (repeat for several).")],
    json_out: JsonOption = False,
) -> None:
    """BLEU and chrF with sacrebleu, and distinct-n."""
    from genloom.evaluation.jobs import eval_text_job

    result = eval_text_job(hyp, ref)
    if json_out:
        print_json(result)
    else:
        _render(result, f"{hyp} against {', '.join(map(str, ref))}")


@eval_app.command("features")
def eval_features(
    dataset: Annotated[str, typer.Argument(help="Image dataset NAME\\[@V] to train the feature network on.")],
    name: Annotated[Optional[str], typer.Option("--name", help="Registry name (default features-DATASET).")] = None,
    epochs: Annotated[
        Optional[float], typer.Option("--epochs", help="Default: ~2 on MNIST-sized data, 15 on digits.")
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 128,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    device: Annotated[str, typer.Option("--device")] = "auto",
    json_out: JsonOption = False,
) -> None:
    """Train and register the CNN whose features FID/KID/PRDC use (eval model does it on first use)."""
    from genloom.evaluation.features import ClassifierTraining, train_classifier

    with RichProgress(enabled=not json_out) as progress:
        r = train_classifier(
            dataset,
            name=name,
            cfg=ClassifierTraining(epochs=epochs, batch_size=batch_size, seed=seed, device=device),
            progress=progress,
        )
    out = {
        "run_id": r.run_id,
        "model": r.model,
        "metrics": {
            k: v for k, v in {"val_accuracy": r.val_accuracy, "test_accuracy": r.test_accuracy}.items() if v is not None
        },
        "steps": r.steps,
        "seconds": round(r.seconds, 2),
    }
    if json_out:
        print_json(out)
    else:
        _render(out, f"feature network {r.model} ({r.steps} steps, {r.seconds:.1f} s)")
