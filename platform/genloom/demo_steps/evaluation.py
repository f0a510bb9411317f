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
        dedup = dedup_job("digits", DedupOptions(method="all", dry_run=True, progress=False))
        leak = leakage_job("digits", DedupOptions(method="all", progress=False), examples=3)
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
            trained = train_classifier("digits", cfg=ClassifierTraining(epochs=3 if ctx.quick else 8, base=16),
                                       progress=True)
            result["feature_network"] = f"{trained.model} (test accuracy {trained.test_accuracy:.3f})"
        ev = eval_model_job("demo-vae", "digits", EvalModelOptions(n=180 if ctx.quick else 360, progress=True))
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


def render(result: dict) -> None:
    from rich.panel import Panel

    from genloom.cli.output import err_console

    lines = [
        f"dedup {result['dedup_input']} ({result['dedup_methods']}, dry run): {result['duplicates_found']} duplicates "
        f"{result['by_method']}; {result['leaked_val_test_items']} val/test items leak from train",
    ]
    if "fid" in result:
        lines += [
            f"demo-vae vs digits (features {result['features']}): FID {result['fid']} (real-vs-real floor "
            f"{result['fid_floor']}), KID {result['kid']}",
            f"precision {result['precision']}  recall {result['recall']}  density {result['density']}  "
            f"coverage {result['coverage']}  mode coverage {result['mode_coverage']}",
            f"VAE anomaly AUROC (corrupted vs clean test digits): {result['anomaly_auroc_corrupted']}",
            f"SQL: SELECT name, value FROM metrics WHERE run_id = {result['eval_run']};",
        ]
    else:
        lines.append(result.get("eval", ""))
    err_console.print(Panel.fit("\n".join(lines)))
