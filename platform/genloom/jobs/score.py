"""The score job: a per-item anomaly score from a model that can score (the VAE's negative ELBO).

Scores are `metrics` rows (run = this score run, name = the model's score name,
item_id = the item), so SQL can join them to items, labels and splits.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from genloom.errors import BadInput


def score_job(
    model_ref: str,
    dataset_ref: str,
    *,
    top: int = 20,
    split: str | None = None,
    batch_size: int = 512,
    device: str = "auto",
) -> dict[str, Any]:
    from genloom.datasets.loading import stream_batches
    from genloom.datasets.versions import describe_version, label_index, resolve_version
    from genloom.db.engine import session_scope
    from genloom.db.models import Metric
    from genloom.devices import resolve_device
    from genloom.jobs.models import load_model
    from genloom.refs import format_ref
    from genloom.runs import tracked_run

    if top < 0:
        raise BadInput(f"--top must be zero or more (got {top})")
    device = resolve_device(device)
    with session_scope() as s:
        row, arch_cls, runner = load_model(s, model_ref, device)
        version = resolve_version(s, dataset_ref)
        info = describe_version(s, version)
    if not hasattr(runner, "score"):
        raise BadInput(f"{arch_cls.name} models cannot score items (use a VAE)")
    config = dict(row.config)
    if info.modality != config.get("modality") or (config.get("shape") and list(info.shape or []) != config["shape"]):
        shape = "×".join(map(str, info.shape or [])) or info.modality
        want = "×".join(map(str, config.get("shape") or [])) or config.get("modality")
        raise BadInput(f"{info.ref} holds {shape} items but {format_ref(row.name, row.version)} was trained on {want}")
    splits = [split] if split else ["train", "val", "test"]
    metric = getattr(runner, "score_name", "anomaly_score")
    labels = label_index(config.get("label_names", []))
    ref = format_ref(row.name, row.version)
    with tracked_run(
        "score",
        params={"model": ref, "dataset": info.ref, "split": split, "top": top},
        model_id=row.id,
        input_version_id=info.version_id,
        device=device,
    ) as run:
        results: list[tuple[int, str | None, str, float]] = []
        for sp in splits:
            for batch in stream_batches(info.version_id, sp, batch_size, label_index=labels):
                values = runner.score(batch).tolist()
                results.extend(zip(batch.item_ids, batch.labels, [sp] * len(batch), values))
        if not results:
            raise BadInput(f"nothing to score: {info.ref} has no items in {split or 'any split'}")
        with session_scope() as s:
            s.execute(
                sa.insert(Metric),
                [
                    {"run_id": run.id, "step": None, "name": metric, "value": float(v), "item_id": i}
                    for i, _, _, v in results
                ],
            )
            mean = sum(r[3] for r in results) / len(results)
            run.finish(session=s, summary={"scored": len(results), "mean": mean, "metric": metric})
    ranked = sorted(results, key=lambda r: -r[3])[:top]
    return {
        "run_id": run.id,
        "model": ref,
        "dataset": info.ref,
        "metric": metric,
        "scored": len(results),
        "mean": mean,
        "top": [{"item_id": i, "label": lab, "split": sp, "score": v} for i, lab, sp, v in ranked],
    }
