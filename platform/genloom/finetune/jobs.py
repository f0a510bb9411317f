"""`genloom train embedder|reranker|reader`: read a dataset, fine-tune, register — one run each.

Embedders and rerankers read a dataset of pairs (genloom.datasets.retrieval_pairs); the reader
reads question/answer records (genloom.datasets.squad): it trains on the train split and its
no-answer threshold is calibrated on the val split before it is registered.

    result = train_retrieval_model("embedder", "scifact-train-pairs", name="scifact-embedder")
    # registered scifact-embedder@1 (hf-tar), with its run and the dataset version it read

The run records the config, the base model and the dataset version; the model is registered
and the run marked succeeded in one transaction (a crash leaves a failed run and no model).
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable
from pathlib import Path

from genloom.errors import BadInput
from genloom.finetune.config import FinetuneConfig, base_encoder_dir

KINDS = {"embedder": "sentence-encoder", "reranker": "cross-encoder", "reader": "span-reader"}


@dataclasses.dataclass
class TrainResult:
    run_id: int
    model: str  # NAME@V
    architecture: str
    dataset: str
    pairs: int
    stats: dict

    def as_json(self) -> dict:
        return dataclasses.asdict(self)


def train_retrieval_model(
    kind: str,
    dataset: str,
    *,
    name: str,
    base: str | None = None,
    config: FinetuneConfig | None = None,
    progress: Callable[[int, int, float], None] | None = None,
) -> TrainResult:
    """Fine-tune an embedder, a reranker or a reader from `base` (default: the shipped MiniLM) on DATASET's
    train split (the reader's abstention is calibrated on its val split)."""
    from genloom.datasets.retrieval_pairs import read_pairs
    from genloom.datasets.squad import read_qa
    from genloom.datasets.versions import version_ref
    from genloom.db.engine import session_scope
    from genloom.finetune.bi_encoder import train_bi_encoder
    from genloom.finetune.cross_encoder import train_cross_encoder
    from genloom.finetune.reader import calibrate, train_reader
    from genloom.refs import parse_ref
    from genloom.registry import pack_folder, register_model
    from genloom.runs import log_metrics, tracked_run

    if kind not in KINDS:
        raise BadInput(f"unknown model kind {kind!r}; use one of: {', '.join(KINDS)}")
    parse_ref(name)
    if "@" in name:
        raise BadInput("--name takes a model NAME; versions are numbered for you")
    config = config or FinetuneConfig()
    config.check()
    with session_scope() as s:
        if kind == "reader":
            version, records = read_qa(s, dataset, "train")
            try:
                held_out = read_qa(s, dataset, "val")[1]
            except BadInput:
                raise BadInput(
                    f"dataset {dataset} has no val split to calibrate the reader's abstention on "
                    "(import it with --val > 0)"
                ) from None
        else:
            version, records = read_pairs(s, dataset, "train")
        ref = version_ref(s, version)
        base_dir = base_encoder_dir(s, base)
        version_id = version.id
    params = {"kind": kind, "dataset": ref, "base": base or "all-MiniLM-L6-v2", **dataclasses.asdict(config)}
    with tracked_run("train", name=f"{kind}:{name}", params=params, input_version_id=version_id) as run:
        with tempfile.TemporaryDirectory(prefix="genloom-finetune-") as tmp:
            out = Path(tmp) / "model"
            train = {"embedder": train_bi_encoder, "reranker": train_cross_encoder, "reader": train_reader}[kind]
            stats = train(base_dir, records, out, config, progress)
            if kind == "reader":
                stats["calibration"] = calibrate(out, held_out, seed=config.seed, limit=config.calibration_questions)
            blob = pack_folder(out)
        with session_scope() as s:
            model = register_model(
                s,
                name=name,
                architecture=KINDS[kind],
                checkpoint=blob,
                config=params,
                format="hf-tar",
                run_id=run.id,
                input_version_id=version_id,
                metadata={
                    "base": params["base"],
                    "dataset": ref,
                    "pairs": len(records),
                    **({"calibration": stats["calibration"]} if "calibration" in stats else {}),
                },
            )
            metrics = {"loss_first": stats["loss_first"], "loss_last": stats["loss_last"]}
            for key, value in (stats.get("calibration") or {}).items():
                if isinstance(value, (int, float)):
                    metrics[f"calibration_{key}"] = value
            log_metrics(s, run.id, metrics)
            model_ref = f"{model.name}@{model.version}"
            summary = {"model": model_ref, "pairs": len(records), **stats}
            run.finish(session=s, summary=summary, model_id=model.id)
    return TrainResult(run.id, model_ref, KINDS[kind], ref, len(records), stats)
