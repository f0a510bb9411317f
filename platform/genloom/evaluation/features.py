"""Train, register, find and apply the feature network of a dataset.

A feature network is a registry model with architecture `classifier` trained on a
dataset version's train split (`train` run, metrics `val_accuracy`, `test_accuracy`;
its test accuracy is also in the model's metadata). `eval model` picks the newest one
trained on the dataset being evaluated against (same name and image shape), trains one
when there is none, or uses the one named with `--features MODEL`. The same code trains
the TSTR classifier (`eval utility`) on a synthetic version.
"""

from __future__ import annotations

import dataclasses
import io
import math
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session

from genloom.db.models import Model
from genloom.errors import BadInput, NotFound
from genloom.progress import ProgressFn, report
from genloom.refs import format_ref

ARCHITECTURE = "classifier"


@dataclasses.dataclass
class ClassifierTraining:
    epochs: float | None = None  # None: ~2 epochs on MNIST-sized data, more on small sets (see plan_steps)
    batch_size: int = 128
    lr: float = 2e-3
    seed: int = 0
    device: str = "auto"
    base: int = 32
    feature_dim: int = 128


@dataclasses.dataclass
class TrainedClassifier:
    run_id: int
    model: str  # NAME@V
    model_id: int
    val_accuracy: float | None
    test_accuracy: float | None
    steps: int
    seconds: float


def plan_steps(n_train: int, cfg: ClassifierTraining) -> int:
    """Enough passes for a small CNN to converge: 2 epochs on 60k images, 15 on 1.4k (digits)."""
    epochs = cfg.epochs if cfg.epochs is not None else min(15.0, max(2.0, 60_000 / max(n_train, 1)))
    return max(1, math.ceil(epochs * n_train / cfg.batch_size))


def accuracy(net, x, y, *, batch_size: int = 1024) -> float:
    import torch

    if len(x) == 0:
        return float("nan")
    net.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            pred = net(x[start : start + batch_size]).argmax(dim=1)
            correct += int((pred == y[start : start + batch_size]).sum())
    return correct / len(x)


def fit_classifier(
    x,
    y,
    *,
    num_classes: int,
    cfg: ClassifierTraining,
    device: str,
    title: str = "classifier",
    progress: ProgressFn | None = None,
):
    """Train a FeatureNet on in-memory tensors (N×C×H×W in [0, 1], class indices); returns (net, last loss, steps)."""
    import torch
    import torch.nn.functional as F

    from genloom.evaluation.feature_net import FeatureNet, FeatureNetConfig

    if len(x) == 0:
        raise BadInput("no labelled training images for the classifier")
    c, h, w = x.shape[1:]
    net_cfg = FeatureNetConfig(
        channels=c, height=h, width=w, num_classes=num_classes, base=cfg.base, feature_dim=cfg.feature_dim
    )
    x, y = x.to(device), y.to(device)
    torch.manual_seed(cfg.seed)
    net = FeatureNet(net_cfg).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=1e-4)
    steps = plan_steps(len(x), cfg)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps, pct_start=0.15)
    gen = torch.Generator().manual_seed(cfg.seed)
    order, pos = torch.randperm(len(x), generator=gen), 0
    report(progress, title, 0, steps)
    for step in range(steps):
        if pos + cfg.batch_size > len(x):
            order, pos = torch.randperm(len(x), generator=gen), 0
        idx = order[pos : pos + cfg.batch_size].to(device)
        pos += cfg.batch_size
        net.train()
        loss = F.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if progress and (step % 10 == 0 or step == steps - 1):
            progress(title, step + 1, steps, f"loss {loss.item():.3f}")
    net.eval()
    return net, float(loss.item()), steps


def labelled_split(version_id: int, split: str, index: dict[str, int], *, origin: str | None = None):
    """(x, y) of a split's labelled images (optionally only items of one origin: TSTR trains on synthetic only)."""
    from genloom.datasets.loading import load_split

    part = load_split(version_id, split, label_index=index)
    if not part.item_ids:
        return None, None
    keep = part.y >= 0
    if origin is not None:
        from genloom.db.engine import session_scope
        from genloom.db.models import Item

        with session_scope() as s:
            wanted = set(s.scalars(sa.select(Item.id).where(Item.id.in_(part.item_ids), Item.origin == origin)).all())
        import torch

        keep &= torch.tensor([i in wanted for i in part.item_ids])
    return part.x[keep], part.y[keep]


def train_classifier(
    train_ref: str,
    *,
    eval_ref: str | None = None,
    name: str | None = None,
    cfg: ClassifierTraining | None = None,
    role: str = "features",
    progress: ProgressFn | None = None,
) -> TrainedClassifier:
    """Train the CNN on `train_ref`'s train split (a `train` run), report accuracy on
    `eval_ref`'s val and test splits (default: the same version), and register it as
    NAME (default features-DATASET) in the run's last transaction."""
    import time

    import torch

    from genloom.datasets.versions import describe_version, resolve_version
    from genloom.db.engine import session_scope
    from genloom.devices import resolve_device
    from genloom.registry import register_model
    from genloom.runs import log_metrics, tracked_run

    cfg = cfg or ClassifierTraining()
    if cfg.batch_size < 1 or cfg.lr <= 0 or (cfg.epochs is not None and cfg.epochs <= 0):
        raise BadInput("batch size, learning rate and epochs must be positive")
    device = resolve_device(cfg.device)
    with session_scope() as s:
        train_info = describe_version(s, resolve_version(s, train_ref))
        eval_info = describe_version(s, resolve_version(s, eval_ref)) if eval_ref else train_info
    if train_info.modality != "image":
        raise BadInput(
            f"a feature network needs an image dataset, but {train_info.ref} holds {train_info.modality} items"
        )
    labels = sorted(set(train_info.label_names) | set(eval_info.label_names), key=_label_key)
    if len(labels) < 2:
        raise BadInput(f"{train_info.ref} needs at least two labels to train a classifier (has {len(labels)})")
    if eval_info.shape != train_info.shape:
        raise BadInput(f"{train_info.ref} and {eval_info.ref} have different image sizes")
    index = {label: i for i, label in enumerate(labels)}
    dataset_name = eval_info.ref.split("@")[0]
    name = name or f"features-{dataset_name}"
    params = {"dataset": train_info.ref, "eval_dataset": eval_info.ref, "role": role, **dataclasses.asdict(cfg)}
    with tracked_run("train", params=params, input_version_id=train_info.version_id, device=device, name=name) as run:
        started = time.perf_counter()
        x, y = labelled_split(train_info.version_id, "train", index)
        if x is None or len(x) == 0:
            raise BadInput(f"the train split of {train_info.ref} has no labelled images")
        net, last_loss, steps = fit_classifier(
            x,
            y,
            num_classes=len(labels),
            cfg=cfg,
            device=device,
            title=f"classifier on {train_info.ref}",
            progress=progress,
        )
        results: dict[str, float] = {"train_loss": last_loss}
        for split in ("val", "test"):
            ex, ey = labelled_split(eval_info.version_id, split, index)
            if ex is not None and len(ex):
                results[f"{split}_accuracy"] = accuracy(net, ex.to(device), ey.to(device))
        seconds = time.perf_counter() - started
        buf = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, buf)
        config = {
            **dataclasses.asdict(net.cfg),
            "label_names": labels,
            "modality": "image",
            "shape": list(train_info.shape or ()),  # an image dataset (checked above) always has one
        }
        metadata = {
            "role": role,
            "dataset": dataset_name,
            "trained_on": train_info.ref,
            "evaluated_on": eval_info.ref,
            **{k: v for k, v in results.items() if k.endswith("accuracy")},
        }
        with session_scope() as s:
            log_metrics(s, run.id, results)
            row = register_model(
                s,
                name=name,
                architecture=ARCHITECTURE,
                checkpoint=buf.getvalue(),
                config=config,
                run_id=run.id,
                input_version_id=train_info.version_id,
                metadata=metadata,
            )
            ref = format_ref(row.name, row.version)
            run.finish(
                session=s, summary={**results, "model": ref, "steps": steps, "seconds": seconds}, model_id=row.id
            )
    return TrainedClassifier(
        run_id=run.id,
        model=ref,
        model_id=row.id,
        val_accuracy=results.get("val_accuracy"),
        test_accuracy=results.get("test_accuracy"),
        steps=steps,
        seconds=seconds,
    )


def _label_key(label: str):
    from genloom.datasets.versions import label_sort_key

    return label_sort_key(label)


# --------------------------------------------------------------------------- finding and loading


def find_feature_network(session: Session, dataset_name: str, shape) -> Model | None:
    """The newest feature network trained for DATASET with this image shape, if any."""
    rows = session.scalars(
        sa.select(Model)
        .where(
            Model.architecture == ARCHITECTURE,
            Model.metadata_["role"].astext == "features",
            Model.metadata_["dataset"].astext == dataset_name,
        )
        .order_by(Model.created_at.desc(), Model.id.desc())
    ).all()
    for row in rows:
        if list(row.config.get("shape", [])) == list(shape or []):
            return row
    return None


def resolve_feature_network(session: Session, ref: str) -> Model:
    from genloom.registry import resolve_model

    try:
        row = resolve_model(session, ref)
    except NotFound:
        raise NotFound(
            f"unknown feature network {ref!r}: train one with `genloom eval features DATASET` "
            "or leave out --features to pick the dataset's own"
        ) from None
    if row.architecture != ARCHITECTURE:
        raise BadInput(
            f"{format_ref(row.name, row.version)} is a {row.architecture} model, not a feature network (classifier)"
        )
    return row


@dataclasses.dataclass
class LoadedFeatureNet:
    row: Model
    net: Any  # FeatureNet in eval mode
    label_names: list[str]
    device: str

    @property
    def ref(self) -> str:
        return format_ref(self.row.name, self.row.version)

    @property
    def shape(self) -> list[int]:
        return list(self.row.config["shape"])

    def apply(self, images, *, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
        """(features float64 N×D, predicted class index N) for N×C×H×W floats in [0, 1]."""
        import torch

        images = torch.as_tensor(images, dtype=torch.float32)
        if list(images.shape[1:]) != self.shape:
            got = "×".join(map(str, images.shape[1:]))
            raise BadInput(f"feature network {self.ref} takes {'×'.join(map(str, self.shape))} images, got {got}")
        feats, preds = [], []
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                f = self.net.features(images[start : start + batch_size].to(self.device))
                feats.append(f.cpu().double().numpy())
                preds.append(self.net.head(f).argmax(dim=1).cpu().numpy())
        if not feats:
            return np.zeros((0, self.net.cfg.feature_dim)), np.zeros(0, dtype=np.int64)
        return np.concatenate(feats), np.concatenate(preds)


def load_feature_network(session: Session, row: Model, device: str = "cpu") -> LoadedFeatureNet:
    import torch

    from genloom.evaluation.feature_net import FeatureNet, FeatureNetConfig
    from genloom.registry import load_checkpoint

    cfg = row.config
    net_cfg = FeatureNetConfig(**{f.name: cfg[f.name] for f in dataclasses.fields(FeatureNetConfig) if f.name in cfg})
    net = FeatureNet(net_cfg)
    net.load_state_dict(torch.load(io.BytesIO(load_checkpoint(session, row)), map_location="cpu", weights_only=True))
    net.to(device).eval()
    return LoadedFeatureNet(row=row, net=net, label_names=list(cfg["label_names"]), device=device)
