"""The trained reader on SQuAD v1.1 dev, split by article: F1/EM, citation precision and abstention.

    nice -n 10 python bench/reader_squad.py --max-seconds 1500 --limit 250

Drives the CLI as a user would (one embedded server under a scratch GENLOOM_HOME):
`datasets import squad` (48 articles: 50 % test, 10 % val, the rest train, by article, seed 0) →
`train reader` (the shipped MiniLM's weights, the train articles; abstention calibrated on the val
articles) → then reads a seeded sample of --limit questions of the **test** articles (never trained
or calibrated on) in three settings:

- gold: the question with its own paragraph: SQuAD F1/EM (an abstention scores 0), and the share
  of these answerable questions the reader abstains on;
- five passages: its paragraph among four others of its article, shuffled (what retrieval hands the
  reader): F1/EM, and citation precision (answers whose cited passage is the one holding the answer);
- unanswerable: the question with a paragraph of another test article (planted): abstention.

Abstention uses the reader's margin over its no-answer score and the passage's retrieval relevance
(generation.reader.relevance), with the thresholds calibrated on the val articles; the same rows
are also scored with the margin threshold alone (`margin_only_*`), to show what the relevance adds.

The baseline, measured on the same questions in the same run, is the sentence-ranking extractive
backend (no reader) in the five-passage setting. Writes bench/results/reader/squad.json.

With --reuse-model NAME@V (and the --home of an earlier run) it trains nothing: it recalibrates that
reader with this code on the val articles and reads the same test sample, writing
bench/results/reader/squad_recalibrated.json (the training figures are the model's run summary).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
for path in (ROOT / "platform", ROOT):
    sys.path.insert(0, str(path))
from benchlib import environment, write_result  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "squad" / "dev-v1.1.json"
RESULT = "reader/squad.json"
RESULT_RECALIBRATED = "reader/squad_recalibrated.json"


def cli(*args, home: Path) -> dict:
    env = {**os.environ, "GENLOOM_HOME": str(home)}
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), *map(str, args), "--json"], capture_output=True, text=True, env=env
    )
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, args))} failed: {proc.stderr.strip()[-2000:]}")
    return {"out": json.loads(proc.stdout), "seconds": round(time.perf_counter() - started, 1)}


def reused_training(model_ref: str, questions: int, seed: int) -> dict:
    """The training figures of a reader trained by an earlier run (its run's summary), and its
    abstention recalibrated with this code on the dataset's val split."""
    from genloom.datasets.squad import read_qa
    from genloom.db.engine import session_scope
    from genloom.db.models import Run
    from genloom.finetune.reader import calibrate
    from genloom.registry import model_dir, resolve_model

    with session_scope() as s:
        model = resolve_model(s, model_ref)
        run = s.get(Run, model.run_id)
        assert run is not None, f"{model_ref} has no training run"
        summary, params = run.summary, run.params
        held_out = read_qa(s, params["dataset"], "val")[1]
        folder = model_dir(s, model_ref)
    started = time.perf_counter()
    calibration = calibrate(folder, held_out, seed=seed, limit=questions)
    return {
        "reused": model_ref,
        "run_params": params,
        "run_summary": summary,
        "recalibration": calibration,
        "recalibration_seconds": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--steps", type=int, default=2000, help="planned steps (the schedule's length)")
    parser.add_argument("--max-seconds", type=float, default=1500, help="stop training after this long")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--max-length", type=int, default=192)
    parser.add_argument("--negatives", type=int, default=1, help="planted unanswerable examples per 4 questions")
    parser.add_argument("--limit", type=int, default=250, help="test questions read")
    parser.add_argument("--calibration-questions", type=int, default=300, help="held-out questions for the threshold")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--home", type=Path, default=None, help="GENLOOM_HOME (default: a scratch one)")
    parser.add_argument("--reuse-model", default=None, help="recalibrate and read this reader of --home; no training")
    args = parser.parse_args()
    result_file = RESULT if args.reuse_model is None else RESULT_RECALIBRATED

    home = args.home or Path(tempfile.mkdtemp(prefix="genloom-reader-bench-"))
    os.environ["GENLOOM_HOME"] = str(home)
    env = environment()
    result: dict = {
        "environment": env,
        "benchmark": "reader_squad",
        "data": str(args.data.name),
        "config": vars(args) | {"data": str(args.data), "home": None},
    }
    if args.reuse_model is None:
        imported = cli(
            "datasets",
            "import",
            "squad",
            args.data,
            "--name",
            "squad-dev",
            "--test",
            "0.5",
            "--val",
            "0.1",
            "--seed",
            str(args.seed),
            home=home,
        )
        result["dataset"] = imported["out"]
        trained = cli(
            "train",
            "reader",
            "--dataset",
            "squad-dev",
            "--name",
            "squad-reader",
            "--steps",
            args.steps,
            "--batch-size",
            args.batch_size,
            "--lr",
            args.lr,
            "--seed",
            args.seed,
            "--set",
            f"max_length={args.max_length}",
            "--set",
            f"negatives={args.negatives}",
            "--set",
            f"max_seconds={args.max_seconds}",
            "--set",
            f"calibration_questions={args.calibration_questions}",
            home=home,
        )
        result["training"] = {
            **trained["out"],
            "wall_seconds": trained["seconds"],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
        }
        write_result(result_file, result)
        model_ref = trained["out"]["model"]
    else:
        model_ref = args.reuse_model
        result["training"] = reused_training(model_ref, args.calibration_questions, args.seed)
        write_result(result_file, result)

    from genloom.datasets.squad import read_qa
    from genloom.db.engine import session_scope
    from genloom.evaluation.rag import best_over, exact_match_score, f1_score, strip_citations
    from genloom.generation.backend import GenParams, Source
    from genloom.generation.extractive import ExtractiveBackend
    from genloom.generation.reader import SpanReader
    from genloom.registry import model_dir

    with session_scope() as s:
        test = read_qa(s, "squad-dev", "test")[1]
        folder = model_dir(s, model_ref)
    rng = random.Random(args.seed)
    sample = rng.sample(test, min(args.limit, len(test)))
    by_title: dict[str, list[str]] = {}
    for r in test:
        if r["context"] not in by_title.setdefault(r["title"], []):
            by_title[r["title"]].append(r["context"])
    titles = sorted(by_title)
    reader = SpanReader(folder)
    # the margin threshold calibrated without the relevance gate (an older reader.json has only `threshold`)
    margin_only = reader.settings.calibration.get("margin_only_threshold", reader.settings.threshold)
    baseline = ExtractiveBackend()
    params = GenParams(max_new_tokens=128)
    rows = []
    started = time.perf_counter()
    for i, r in enumerate(sample):
        golds = [a["text"] for a in r["answers"]]
        row: dict = {"id": r["id"]}
        others = [c for c in by_title[r["title"]] if c != r["context"]]
        passages = rng.sample(others, min(4, len(others))) + [r["context"]]
        rng.shuffle(passages)
        gold_at = passages.index(r["context"])
        spans = reader.spans(r["question"], passages)  # every window of the five passages, in one pass
        # gold: the question with its own paragraph (the windows of that passage alone)
        own = [sp for sp in spans if sp.passage == gold_at]
        span = max(own, key=lambda sp: sp.margin) if own else None
        answered = reader.answers(span, r["question"], r["context"])
        row["gold_abstained_margin_only"] = not (span and span.margin >= margin_only)
        pred = span.text if (span and answered) else ""
        row["gold_f1"] = best_over(f1_score, pred, golds)
        row["gold_em"] = best_over(exact_match_score, pred, golds)
        row["gold_f1_no_abstention"] = best_over(f1_score, span.text if span else "", golds)
        row["gold_abstained"] = not answered
        # five passages: what retrieval hands the reader
        span = max(spans, key=lambda sp: sp.margin) if spans else None
        answered = bool(span) and reader.answers(span, r["question"], passages[span.passage])
        pred = span.text if (span and answered) else ""
        row["five_f1"] = best_over(f1_score, pred, golds)
        row["five_em"] = best_over(exact_match_score, pred, golds)
        row["five_abstained"] = not answered
        row["five_cited_right"] = bool(span and answered and span.passage == gold_at)
        sources = [
            Source(chunk_id=j, document_id=j, doc_id=str(j), title=r["title"], text=p, n=j + 1)
            for j, p in enumerate(passages)
        ]
        out = baseline.generate("", params=params, question=r["question"], sources=sources)
        base = "" if out.finish_reason == "abstain" else strip_citations(out.text)
        row["baseline_five_f1"] = best_over(f1_score, base, golds)
        row["baseline_five_em"] = best_over(exact_match_score, base, golds)
        other_title = rng.choice([t for t in titles if t != r["title"]])
        planted = rng.choice(by_title[other_title])
        span = reader.read(r["question"], [planted])
        row["unanswerable_abstained"] = not reader.answers(span, r["question"], planted)
        row["unanswerable_abstained_margin_only"] = not (span and span.margin >= margin_only)
        rows.append(row)
        if (i + 1) % 50 == 0:
            print(f"{i + 1}/{len(sample)} read", file=sys.stderr, flush=True)

    def mean(key: str, scale: float = 1.0) -> float:
        return round(scale * sum(float(x[key]) for x in rows) / len(rows), 4)

    answered5 = [x for x in rows if not x["five_abstained"]]
    metrics = {
        "questions": len(rows),
        "test_articles": len(titles),
        "gold_f1": mean("gold_f1", 100),
        "gold_em": mean("gold_em", 100),
        "gold_f1_no_abstention": mean("gold_f1_no_abstention", 100),
        "answerable_abstention": mean("gold_abstained"),
        "five_f1": mean("five_f1", 100),
        "five_em": mean("five_em", 100),
        "five_abstention": mean("five_abstained"),
        "citation_precision": round(sum(x["five_cited_right"] for x in answered5) / max(1, len(answered5)), 4),
        "unanswerable_abstention": mean("unanswerable_abstained"),
        "threshold": reader.settings.threshold,
        "min_relevance": reader.settings.min_relevance,
        "margin_only_threshold": margin_only,
        "margin_only_answerable_abstention": mean("gold_abstained_margin_only"),
        "margin_only_unanswerable_abstention": mean("unanswerable_abstained_margin_only"),
        "baseline_five_f1": mean("baseline_five_f1", 100),
        "baseline_five_em": mean("baseline_five_em", 100),
    }
    metrics["five_f1_over_baseline"] = round(metrics["five_f1"] / max(1e-9, metrics["baseline_five_f1"]), 2)
    result["evaluation"] = {
        **metrics,
        "seconds": round(time.perf_counter() - started, 1),
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    result["targets"] = {
        "f1": 60,
        "citation_precision": 0.9,
        "unanswerable_abstention": 0.9,
        "answerable_abstention_max": 0.1,
    }
    path = write_result(result_file, result)
    print(json.dumps(result["evaluation"], indent=2))
    print(path)
    subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), "db", "stop"],
        env={**os.environ, "GENLOOM_HOME": str(home)},
        capture_output=True,
    )


if __name__ == "__main__":
    main()
