"""The `evaluate` jobs: a model against a dataset version, synthetic-data utility (TSTR), text.

Each is one `runs` row (kind `evaluate`, model and input version set) whose results are
`metrics` rows (step NULL), written with the run's success in one transaction; every
metric name is documented in docs/metrics.md. What each job returns is what `--json`
prints: `{"run_id", "metrics": {name: value}, ...context}`.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np

from genloom.datasets.versions import label_index
from genloom.errors import BadInput, NotFound
from genloom.progress import NoteFn, ProgressFn, note

PR_K, DC_K = 3, 5  # Kynkäänniemi et al. (precision/recall) and Naeem et al. (density/coverage)
MIN_SAMPLES = max(PR_K, DC_K) + 1


@dataclasses.dataclass
class EvalModelOptions:
    split: str = "test"
    n: int | None = None  # samples to draw; default: as many as the real split has (at most max_n)
    features: str | None = None  # feature network MODEL[@V]; default: the dataset's own (trained if absent)
    seed: int = 0
    device: str = "auto"
    max_n: int = 10_000
    anomaly_class: str | None = None  # VAE: AUROC of held-out class L vs the others
    text_samples: int = 20  # transformer: generations for distinct-n and memorisation
    max_new_tokens: int = 200
    progress: ProgressFn | None = None  # the caller draws it (the CLI: a bar on stderr)
    notes: NoteFn | None = None  # one-line notes, e.g. that a feature network is being trained first


def model_modality(config: dict[str, Any], architecture: str) -> str:
    return config.get("modality") or ("text" if architecture == "transformer" else "image")


def conditioning(config: dict[str, Any]) -> str:
    """none | class | text: how the model's samples can be steered."""
    if config.get("conditioning") in ("class", "text"):
        return config["conditioning"]
    return "class" if config.get("conditional") else "none"


# --------------------------------------------------------------------------- eval model


def eval_model_job(model_ref: str, against_ref: str, opts: EvalModelOptions | None = None) -> dict[str, Any]:
    from genloom.datasets.versions import describe_version, resolve_version
    from genloom.db.engine import session_scope
    from genloom.devices import resolve_device
    from genloom.refs import format_ref
    from genloom.registry import resolve_model

    opts = opts or EvalModelOptions()
    if opts.split not in ("train", "val", "test"):
        raise BadInput(f"unknown split {opts.split!r}: use train, val or test")
    if opts.n is not None and opts.n < MIN_SAMPLES:
        raise BadInput(
            f"--n {opts.n} is too few: precision/recall/density/coverage need at least {MIN_SAMPLES} samples (k + 1, k = {DC_K})"
        )
    device = resolve_device(opts.device)
    with session_scope() as s:
        row = resolve_model(s, model_ref)
        info = describe_version(s, resolve_version(s, against_ref))
        ref = format_ref(row.name, row.version)
        config, architecture = dict(row.config), row.architecture
    if architecture == "classifier":
        raise BadInput(f"{ref} is a feature network (classifier), not a generative model")
    modality = model_modality(config, architecture)
    if modality != info.modality:
        raise BadInput(
            f"{ref} is a {modality} model ({architecture}) but {info.ref} holds {info.modality} items: "
            f"evaluate it against a {modality} dataset"
        )
    if info.split_counts.get(opts.split, 0) == 0:
        raise BadInput(f"the {opts.split} split of {info.ref} is empty: choose another with --split")
    if modality == "text":
        return _eval_text_model(row, ref, config, info, opts, device)
    return _eval_image_model(row, ref, config, info, opts, device)


def _feature_network(info, opts: EvalModelOptions, device: str):
    from genloom.db.engine import session_scope
    from genloom.evaluation.features import (
        find_feature_network,
        load_feature_network,
        resolve_feature_network,
        train_classifier,
    )

    name = info.ref.split("@")[0]
    with session_scope() as s:
        row = resolve_feature_network(s, opts.features) if opts.features else find_feature_network(s, name, info.shape)
        if row is None:
            note(
                opts.notes,
                f"no feature network for {name} yet: training features-{name} on {info.ref} (once; reused afterwards)",
            )
        else:
            return load_feature_network(s, row, device)
    from genloom.evaluation.features import ClassifierTraining

    trained = train_classifier(info.ref, cfg=ClassifierTraining(device=device), progress=opts.progress)
    note(
        opts.notes,
        f"feature network {trained.model}: test accuracy {trained.test_accuracy:.4f}"
        if trained.test_accuracy is not None
        else f"feature network {trained.model} trained",
    )
    with session_scope() as s:
        return load_feature_network(s, resolve_feature_network(s, trained.model), device)


def _draw_samples(runner, config: dict[str, Any], n: int, seed: int, labels: list[str]):
    """n samples in chunks (bounded memory); conditional models cycle through the labels,
    text-conditioned ones through the caption phrasings. Returns (images, requested labels or None)."""
    import torch

    from genloom.training.options import SampleOptions

    cond = conditioning(config)
    chunk = 500
    images, requested = [], []
    if cond == "none":
        for i, start in enumerate(range(0, n, chunk)):
            out = runner.sample(SampleOptions(n=min(chunk, n - start), seed=seed + i))
            images.append(out.images)
        return torch.cat(images)[:n], None
    per_label = math.ceil(n / len(labels))
    call = 0
    for j, label in enumerate(labels):
        for start in range(0, per_label, chunk):
            m = min(chunk, per_label - start)
            if cond == "text":
                from genloom.architectures.captions import caption

                # A different phrasing per label and chunk: the prompt wording varies as users' would.
                opts = SampleOptions(n=m, seed=seed + call, prompt=caption(label, j + start // chunk))
            else:
                opts = SampleOptions(n=m, seed=seed + call, label=label)
            images.append(runner.sample(opts).images)
            requested.extend([label] * m)
            call += 1
    return torch.cat(images)[:n], requested[:n]


def _eval_image_model(
    row, ref: str, config: dict[str, Any], info, opts: EvalModelOptions, device: str
) -> dict[str, Any]:
    import torch

    from genloom.datasets.loading import load_split
    from genloom.db.engine import session_scope
    from genloom.evaluation import image_metrics as im
    from genloom.jobs.models import load_model
    from genloom.runs import tracked_run

    if config.get("shape") and list(config["shape"]) != list(info.shape):
        raise BadInput(
            f"{ref} makes {'×'.join(map(str, config['shape']))} images but {info.ref} holds "
            f"{'×'.join(map(str, info.shape))}"
        )
    fnet = _feature_network(info, opts, device)
    if fnet.shape != list(info.shape):
        raise BadInput(
            f"feature network {fnet.ref} takes {'×'.join(map(str, fnet.shape))} images, "
            f"{info.ref} holds {'×'.join(map(str, info.shape))}"
        )
    real = load_split(info.version_id, opts.split, limit=opts.max_n)
    if len(real.item_ids) < MIN_SAMPLES:
        raise BadInput(
            f"the {opts.split} split of {info.ref} has {len(real.item_ids)} items: need at least "
            f"{MIN_SAMPLES} (k + 1, k = {DC_K})"
        )
    n = min(opts.n or len(real.item_ids), opts.max_n)
    floor_split = "train" if opts.split != "train" else "val"
    floor_real = load_split(info.version_id, floor_split, limit=n)
    with session_scope() as s:
        _, arch_cls, runner = load_model(s, ref, device)
    params = {
        "model": ref,
        "against": info.ref,
        "split": opts.split,
        "n": n,
        "features": fnet.ref,
        "seed": opts.seed,
        "anomaly_class": opts.anomaly_class,
    }
    with tracked_run(
        "evaluate", params=params, model_id=row.id, input_version_id=info.version_id, device=device
    ) as run:
        with torch.no_grad():
            images, requested = _draw_samples(runner, config, n, opts.seed, list(config.get("label_names") or []))
        fake_f, fake_pred = fnet.apply(images.float().clamp(0, 1))
        real_f, real_pred = fnet.apply(real.x)
        metrics: dict[str, float] = {
            "n_samples": float(len(fake_f)),
            "n_real": float(len(real_f)),
            "feature_net_test_accuracy": fnet.row.metadata_.get("test_accuracy"),
        }
        metrics["fid"] = im.fid(fake_f, real_f)
        if floor_real.item_ids and len(floor_real.item_ids) >= 2:
            metrics["fid_floor"] = im.fid(fnet.apply(floor_real.x)[0], real_f)
        metrics["kid_mean"], metrics["kid_std"] = im.kid(fake_f, real_f, seed=opts.seed)
        pr = im.manifold_metrics(real_f, fake_f, pr_k=PR_K, dc_k=DC_K)
        metrics.update(precision=pr.precision, recall=pr.recall, density=pr.density, coverage=pr.coverage)
        num_classes = len(fnet.label_names)
        index = label_index(fnet.label_names)
        real_idx = np.array([index.get(l, -1) if l is not None else -1 for l in real.labels])
        real_shares = im.label_distribution(real_idx[real_idx >= 0], num_classes) if (real_idx >= 0).any() else None
        sample_shares = im.label_distribution(fake_pred, num_classes)
        for name, share in zip(fnet.label_names, sample_shares):
            metrics[f"label_share_{name}"] = float(share)
        if real_shares is not None:
            metrics["label_tv"] = im.label_tv_distance(sample_shares, real_shares)
            metrics["mode_coverage"] = im.mode_coverage(sample_shares, real_shares)
        if requested is not None:
            known = [(p, index[r]) for p, r in zip(fake_pred, requested) if r in index]
            if known:
                metrics["conditional_accuracy"] = im.conditional_accuracy([k[0] for k in known], [k[1] for k in known])
        if hasattr(runner, "score"):
            metrics.update(_anomaly_aurocs(runner, real, config, opts))
        _log_and_finish(run, metrics, {"model": ref, "against": info.ref, "features": fnet.ref, "split": opts.split})
    return {
        "run_id": run.id,
        "model": ref,
        "against": info.ref,
        "split": opts.split,
        "features": fnet.ref,
        "conditioning": conditioning(config),
        "metrics": _clean(metrics),
    }


def _anomaly_aurocs(runner, real, config: dict[str, Any], opts: EvalModelOptions) -> dict[str, float]:
    """VAE: AUROC of the per-item score (negative ELBO) at telling corrupted test images
    (Gaussian noise σ = 0.3 plus a random 1/4-image occlusion) from the clean ones, and,
    with --anomaly-class L, items of class L from the others (meaningful when the model
    was trained without L)."""
    import torch
    from sklearn.metrics import roc_auc_score

    from genloom.datasets.loading import Batch

    index = label_index(config.get("label_names") or [])
    y = torch.tensor([index.get(l, 0) if l is not None else 0 for l in real.labels], dtype=torch.long)

    def scores(x):
        out = []
        for start in range(0, len(x), 512):
            b = Batch(
                item_ids=list(range(len(x[start : start + 512]))),
                labels=[],
                x=x[start : start + 512],
                y=y[start : start + 512],
            )
            out.append(runner.score(b))
        return torch.cat(out).double().numpy()

    gen = torch.Generator().manual_seed(opts.seed)
    x = real.x.float()
    corrupted = (x + 0.3 * torch.randn(x.shape, generator=gen)).clamp(0, 1)
    h, w = x.shape[-2:]
    for i in range(len(x)):
        top = int(torch.randint(0, h - h // 2 + 1, (1,), generator=gen))
        left = int(torch.randint(0, w - w // 2 + 1, (1,), generator=gen))
        corrupted[i, :, top : top + h // 2, left : left + w // 2] = 0.0
    clean_s, bad_s = scores(x), scores(corrupted)
    out = {
        "anomaly_auroc_corrupted": float(
            roc_auc_score(np.r_[np.zeros(len(clean_s)), np.ones(len(bad_s))], np.r_[clean_s, bad_s])
        )
    }
    if opts.anomaly_class is not None:
        is_pos = np.array([l == opts.anomaly_class for l in real.labels])
        if not is_pos.any() or is_pos.all():
            raise BadInput(f"--anomaly-class {opts.anomaly_class!r}: the split needs items of that class and of others")
        out["anomaly_auroc_class"] = float(roc_auc_score(is_pos.astype(int), clean_s))
    return out


def _eval_text_model(
    row, ref: str, config: dict[str, Any], info, opts: EvalModelOptions, device: str
) -> dict[str, Any]:
    import torch

    from genloom.datasets.loading import load_split
    from genloom.db.engine import session_scope
    from genloom.evaluation import text_metrics as tm
    from genloom.jobs.models import load_model
    from genloom.runs import tracked_run
    from genloom.training.options import SampleOptions

    if opts.features:
        raise BadInput("--features applies to image models; text models are scored by likelihood")
    with session_scope() as s:
        _, arch_cls, runner = load_model(s, ref, device)
    net, tokenizer = getattr(runner, "net", None), getattr(runner, "tokenizer", None)
    if net is None or tokenizer is None:
        raise BadInput(f"{ref} cannot score text (no language-model head)")
    held_out = "\n".join(load_split(info.version_id, opts.split).texts or [])
    train_texts = load_split(info.version_id, "train").texts or []
    params = {
        "model": ref,
        "against": info.ref,
        "split": opts.split,
        "samples": opts.text_samples,
        "max_new_tokens": opts.max_new_tokens,
        "seed": opts.seed,
    }
    with tracked_run(
        "evaluate", params=params, model_id=row.id, input_version_id=info.version_id, device=device
    ) as run:
        nll, tokens = causal_lm_nll(net, tokenizer, held_out, device)
        metrics: dict[str, float] = {
            "nll_per_token": nll / tokens,
            "perplexity": tm.perplexity(nll, tokens),
            "bpc": tm.bits_per_character(nll, len(held_out)),
            "eval_tokens": float(tokens),
            "eval_chars": float(len(held_out)),
        }
        with torch.no_grad():
            texts = runner.sample(
                SampleOptions(n=opts.text_samples, seed=opts.seed, max_new_tokens=opts.max_new_tokens)
            ).texts
        for k in (1, 2, 3):
            metrics[f"distinct_{k}"] = tm.distinct_n(texts, k)
        mem = tm.memorisation_rate(texts, tm.SpanIndex(train_texts))
        metrics["memorisation_rate"] = mem.rate
        metrics["memorisation_windows"] = float(mem.windows)
        metrics["n_samples"] = float(len(texts))
        _log_and_finish(run, metrics, {"model": ref, "against": info.ref, "split": opts.split})
    return {"run_id": run.id, "model": ref, "against": info.ref, "split": opts.split, "metrics": _clean(metrics)}


def causal_lm_nll(net, tokenizer, text: str, device: str) -> tuple[float, int]:
    """Total NLL (nats) of `text` under a nanoGPT-style model, in non-overlapping windows of
    its context length (each token predicted from up to block_size − 1 earlier ones)."""
    import torch
    import torch.nn.functional as F

    from genloom.architectures import text_tokenizer

    ids = text_tokenizer.encode(tokenizer, text)
    if len(ids) < 2:
        raise BadInput("the held-out split is too short to score (fewer than 2 tokens)")
    block = int(net.config.block_size)
    data = torch.tensor(ids, dtype=torch.long)
    total, count = 0.0, 0
    net.eval()
    with torch.no_grad():
        for start in range(0, len(data) - 1, block):
            x = data[start : start + block][None].to(device)
            y = data[start + 1 : start + block + 1][None].to(device)
            x = x[:, : y.shape[1]]
            logits, _ = net(x, y)
            total += float(F.cross_entropy(logits.view(-1, logits.size(-1)).float(), y.view(-1), reduction="sum"))
            count += int(y.numel())
    return total, count


# --------------------------------------------------------------------------- eval utility (TSTR)


def eval_utility_job(
    synthetic_ref: str,
    real_ref: str,
    *,
    epochs: float | None = None,
    seed: int = 0,
    device: str = "auto",
    progress: ProgressFn | None = None,
    compare_real: bool = True,
) -> dict[str, Any]:
    """Train on synthetic (origin = synthetic items of the version's train split), test on
    real (the real version's test split); next to train-on-real with the same classifier
    and budget (Esteban et al. 2017's TSTR/TRTR)."""
    from genloom.datasets.versions import describe_version, resolve_version
    from genloom.db.engine import session_scope
    from genloom.devices import resolve_device
    from genloom.evaluation.features import ClassifierTraining, _label_key, accuracy, fit_classifier, labelled_split
    from genloom.runs import tracked_run

    device = resolve_device(device)
    with session_scope() as s:
        syn = describe_version(s, resolve_version(s, synthetic_ref))
        real = describe_version(s, resolve_version(s, real_ref))
    for info in (syn, real):
        if info.modality != "image":
            raise BadInput(f"eval utility trains an image classifier, but {info.ref} holds {info.modality} items")
    if syn.shape != real.shape:
        raise BadInput(f"{syn.ref} and {real.ref} have different image sizes")
    labels = sorted(set(real.label_names), key=_label_key)
    if len(labels) < 2:
        raise BadInput(f"{real.ref} needs at least two labels for a classifier")
    index = {l: i for i, l in enumerate(labels)}
    cfg = ClassifierTraining(epochs=epochs, seed=seed, device=device)
    params = {"synthetic": syn.ref, "real": real.ref, "epochs": epochs, "seed": seed}
    with tracked_run("evaluate", params=params, input_version_id=syn.version_id, device=device) as run:
        sx, sy = labelled_split(syn.version_id, "train", index, origin="synthetic")
        if sx is None or len(sx) == 0:
            raise BadInput(
                f"{syn.ref} has no labelled synthetic items in its train split: store samples of a "
                "conditional model (`genloom sample MODEL --n N --store --into NAME`)"
            )
        rx, ry = labelled_split(real.version_id, "train", index, origin="real")
        tx, ty = labelled_split(real.version_id, "test", index)
        if tx is None or len(tx) == 0:
            raise BadInput(f"the test split of {real.ref} has no labelled images")
        tstr, _, _ = fit_classifier(
            sx,
            sy,
            num_classes=len(labels),
            cfg=cfg,
            device=device,
            title=f"train on {syn.ref} (synthetic)",
            progress=progress,
        )
        tstr_accuracy = accuracy(tstr, tx.to(device), ty.to(device))
        metrics: dict[str, float | None] = {  # None: a ratio without a denominator (dropped by _clean)
            "tstr_accuracy": tstr_accuracy,
            "synthetic_train_items": float(len(sx)),
        }
        if compare_real and rx is not None and len(rx):
            trtr, _, _ = fit_classifier(
                rx,
                ry,
                num_classes=len(labels),
                cfg=cfg,
                device=device,
                title=f"train on {real.ref} (real)",
                progress=progress,
            )
            trtr_accuracy = accuracy(trtr, tx.to(device), ty.to(device))
            metrics["trtr_accuracy"] = trtr_accuracy
            metrics["tstr_ratio"] = tstr_accuracy / trtr_accuracy if trtr_accuracy else None
            metrics["real_train_items"] = float(len(rx))
        metrics["real_test_items"] = float(len(tx))
        _log_and_finish(run, metrics, {"synthetic": syn.ref, "real": real.ref})
    return {"run_id": run.id, "synthetic": syn.ref, "real": real.ref, "metrics": _clean(metrics)}


# --------------------------------------------------------------------------- eval text


def read_lines(path: Path, what: str) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"{what} file {str(path)!r} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise BadInput(f"{what} file {str(path)!r} is not UTF-8 text") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise BadInput(f"{what} file {str(path)!r} is empty")
    return lines


def eval_text_job(hyp: Path, refs: list[Path]) -> dict[str, Any]:
    """BLEU and chrF (sacrebleu) of hypothesis lines against one or more reference files, plus distinct-n."""
    from genloom.evaluation import text_metrics as tm
    from genloom.runs import tracked_run

    if not refs:
        raise BadInput("give at least one --ref FILE")
    hyps = read_lines(hyp, "hypothesis")
    streams = [read_lines(r, "reference") for r in refs]
    for r, stream in zip(refs, streams):
        if len(stream) != len(hyps):
            raise BadInput(
                f"{str(hyp)!r} has {len(hyps)} lines but {str(r)!r} has {len(stream)}: one reference line per hypothesis"
            )
    with tracked_run("evaluate", params={"hyp": str(hyp), "refs": [str(r) for r in refs]}) as run:
        metrics = {
            "bleu": tm.bleu(hyps, streams),
            "chrf": tm.chrf(hyps, streams),
            "distinct_1": tm.distinct_n(hyps, 1),
            "distinct_2": tm.distinct_n(hyps, 2),
            "n_segments": float(len(hyps)),
        }
        _log_and_finish(run, metrics, {"hyp": str(hyp), "refs": [str(r) for r in refs]})
    return {"run_id": run.id, "metrics": _clean(metrics)}


# --------------------------------------------------------------------------- eval clip


def eval_clip_job(model_ref: str, dataset_ref: str, *, split: str = "test", device: str = "auto") -> dict[str, Any]:
    """Retrieval accuracy of a clip model on a split: its images against one caption per class.

    text_to_image_top1: the share of the class captions ("a handwritten seven") whose most
    similar image is of that class; image_to_text_top1: the share of images whose most similar
    caption is their class's (docs/metrics.md)."""
    import torch

    from genloom.architectures.clip import class_captions, retrieval_accuracy
    from genloom.datasets.loading import load_split
    from genloom.datasets.versions import describe_version, resolve_version
    from genloom.db.engine import session_scope
    from genloom.devices import resolve_device
    from genloom.jobs.models import load_model
    from genloom.refs import format_ref
    from genloom.runs import tracked_run

    if split not in ("train", "val", "test"):
        raise BadInput(f"unknown split {split!r}: use train, val or test")
    device = resolve_device(device)
    with session_scope() as s:
        row, _, clip = load_model(s, model_ref, device)
        info = describe_version(s, resolve_version(s, dataset_ref))
        ref = format_ref(row.name, row.version)
    if row.architecture != "clip":
        raise BadInput(f"{ref} is a {row.architecture} model: `genloom eval clip` needs a clip model")
    clip.check_images(tuple(info.shape or ()), info.ref)
    real = load_split(info.version_id, split)
    index = {name: i for i, name in enumerate(clip.labels)}
    keep = [i for i, label in enumerate(real.labels) if label in index]
    if not keep:
        raise BadInput(f"no item of the {split} split of {info.ref} has a label the clip model knows")
    y = torch.tensor([index[real.labels[i]] for i in keep])
    captions = class_captions(clip.labels)
    params = {"model": ref, "dataset": info.ref, "split": split, "captions": captions}
    with tracked_run(
        "evaluate", params=params, model_id=row.id, input_version_id=info.version_id, device=device
    ) as run:
        metrics: dict[str, Any] = retrieval_accuracy(
            clip.embed_images(real.x[keep]).cpu(), y, clip.embed_texts(captions).cpu()
        )
        metrics["n_images"] = float(len(keep))
        _log_and_finish(run, metrics, {"model": ref, "dataset": info.ref, "split": split})
    return {"run_id": run.id, "model": ref, "dataset": info.ref, "split": split, "metrics": _clean(metrics)}


# --------------------------------------------------------------------------- shared


def _clean(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if v is not None and not (isinstance(v, float) and math.isnan(v))}


def _log_and_finish(run, metrics: dict[str, Any], context: dict[str, Any]) -> None:
    from genloom.db.engine import session_scope
    from genloom.runs import log_metrics

    clean = _clean(metrics)
    with session_scope() as s:
        log_metrics(s, run.id, clean)
        run.finish(session=s, summary={**context, "metrics": clean})
