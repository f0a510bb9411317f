"""Demo step: dedup `digits` (exact + semantic), check split leakage, evaluate `demo-vae`.

The dedup is a dry run here: a real one writes digits@N+1, which would become "the
latest digits" that the training step re-imports and trains on when the demo runs
again. `genloom dedup digits` (no --dry-run) writes the version and its decisions.
"""

from __future__ import annotations

TITLE = "evaluation + dedup: digits duplicates and leakage → demo-vae FID, KID, precision/recall"


def run(ctx) -> dict:
    import torch

    from genloom.db.engine import session_scope
    from genloom.dedup.job import DedupOptions, dedup_job
    from genloom.dedup.leakage import leakage_job
    from genloom.errors import NotFound
    from genloom.evaluation.features import ClassifierTraining, find_feature_network, train_classifier
    from genloom.evaluation.jobs import EvalModelOptions, eval_model_job
    from genloom.registry import resolve_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks: one thread is fastest, and polite on a shared machine
    try:
        dedup = dedup_job("digits", DedupOptions(method="all", dry_run=True))
        leak = leakage_job("digits", DedupOptions(method="all"), examples=3)
        result = {
            "dedup_input": dedup.input,
            "dedup_methods": "+".join(dedup.details["methods"]),
            "duplicates_found": dedup.dropped,
            "by_method": dedup.by_method,
            "leaked_val_test_items": leak["leaked"],
            "dedup_run": dedup.run_id,
        }
        with session_scope() as s:
            try:
                resolve_model(s, "demo-vae")
            except NotFound:
                result["eval"] = "skipped: no demo-vae (the training step trains it)"
                return result
            have_features = find_feature_network(s, "digits", (1, 8, 8)) is not None
        if not have_features:  # a quick one: a few epochs on 8×8 digits reach ~95 %
            trained = train_classifier(
                "digits", cfg=ClassifierTraining(epochs=3 if ctx.quick else 8, base=16), progress=ctx.progress
            )
            result["feature_network"] = f"{trained.model} (test accuracy {trained.test_accuracy:.3f})"
        ev = eval_model_job("demo-vae", "digits", EvalModelOptions(n=180 if ctx.quick else 360, progress=ctx.progress))
    finally:
        torch.set_num_threads(threads)
    m = ev["metrics"]
    result.update(
        eval_run=ev["run_id"],
        features=ev["features"],
        fid=round(m["fid"], 3),
        fid_floor=round(m.get("fid_floor", float("nan")), 3),
        kid=round(m["kid_mean"], 4),
        precision=round(m["precision"], 3),
        recall=round(m["recall"], 3),
        density=round(m["density"], 3),
        coverage=round(m["coverage"], 3),
        mode_coverage=round(m.get("mode_coverage", float("nan")), 3),
        anomaly_auroc_corrupted=round(m.get("anomaly_auroc_corrupted", float("nan")), 3),
    )
    return result
