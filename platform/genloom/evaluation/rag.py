"""`genloom eval rag`: answer quality of the full logged call on a question-answer set.

Each question goes through `genloom.generation.call.ask` exactly as `genloom ask` sends it
(retrieval, context, any backend, the log rows), one transaction per question. The run
(kind 'evaluate') stores the final metrics as `metrics` rows and, in `runs.summary`, one
record per question with its `generation_id`, so the records join to the log:

    SELECT rec->>'id' AS question, (rec->>'f1')::float AS f1, g.output, g.total_ms
    FROM runs r, jsonb_array_elements(r.summary->'records') rec
    JOIN generations g ON g.id = (rec->>'generation_id')::bigint
    WHERE r.id = :run_id;

Metrics (all in [0, 1]; JSON keys as named):
- `hit@1`, `hit@k`: the gold document is the first / among the sources the backend read
  (without a gold document id: a source contains a gold answer);
- `em`, `f1`: exact match and token F1 against the gold answers with the official SQuAD
  v1.1 normalisation (lower-case, punctuation and articles removed), best over golds,
  citation markers removed from the answer first;
- `answer_recall`: a normalised gold answer occurs inside the normalised answer;
- `citation_precision`: of the sources the answer cites, the share that contain a gold
  answer or are the gold document (mean over answers that cite something);
- `groundedness`: the share of answer sentences supported by a source they cite. Rule
  (lexical): a sentence is supported when at least 80 % of its normalised tokens occur in
  one cited source's normalised tokens; a sentence citing nothing is unsupported (mean
  over answers that are not abstentions);
- `abstention_rate`: the share of answers that abstain (finish reason 'abstain');
- `latency_p50_ms`, `latency_p95_ms`: the call's total time (retrieval + generation + log);
- `errors`: questions whose generation failed (logged as status 'error') or that could not be
  asked at all (e.g. no source fits the model's window: a record with the message and no
  generation); the metrics are over the others. If no question can be asked the run fails.
With `--repeats N` the whole sample runs N times (generation seed + repeat) and each metric
is reported as its mean with `_std` beside it.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import random
import re
import statistics
import string
import time
from pathlib import Path
from typing import Any

from genloom.errors import BadInput
from genloom.progress import ProgressFn, report as report_progress

CITATION = re.compile(r"\s*\[(\d{1,3})\]")
SUPPORT_SHARE = 0.8  # the groundedness rule's token coverage


# --------------------------------------------------------------------------- the official SQuAD v1.1 metrics


def normalize_answer(s: str) -> str:
    """Lower-case, drop punctuation, articles and extra whitespace (evaluate-v1.1.py)."""

    def remove_articles(text):
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    return " ".join(remove_articles(remove_punc(s.lower())).split())


def f1_score(prediction: str, ground_truth: str) -> float:
    prediction_tokens = normalize_answer(prediction).split()
    ground_truth_tokens = normalize_answer(ground_truth).split()
    common = collections.Counter(prediction_tokens) & collections.Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(prediction_tokens)
    recall = num_same / len(ground_truth_tokens)
    return (2 * precision * recall) / (precision + recall)


def exact_match_score(prediction: str, ground_truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(ground_truth))


def best_over(metric, prediction: str, ground_truths: list[str]) -> float:
    return max(metric(prediction, gt) for gt in ground_truths)


# --------------------------------------------------------------------------- QA files


@dataclasses.dataclass
class QAItem:
    id: str
    question: str
    answers: list[str]
    doc_id: str | None = None


@dataclasses.dataclass
class QASet:
    items: list[QAItem]
    # SQuAD files only: (doc_id, title, text) of each paragraph, for --ingest-contexts.
    contexts: list[tuple[str, str, str]]


def load_qa(path: Path) -> QASet:
    """SQuAD-style JSON ({"data": [{"title", "paragraphs": [{"context", "qas"}]}]}), or JSONL with
    one {"question", "answers" (list) or "answer", optional "id", optional "doc_id"} per line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BadInput(f"cannot read QA file {path}: {exc.strerror or exc}") from None
    stripped = text.lstrip()
    if stripped.startswith("{") and '"data"' in stripped[:200]:
        try:
            data = json.loads(text)["data"]
        except (ValueError, KeyError, TypeError) as exc:
            raise BadInput(f"{path} is not SQuAD JSON ({exc})") from None
        items, contexts = [], []
        for a, article in enumerate(data):
            title = str(article.get("title", "")).replace("_", " ")
            for p, paragraph in enumerate(article.get("paragraphs", [])):
                doc_id = f"{a:02d}-{p:03d}"
                contexts.append((doc_id, title, paragraph["context"]))
                for qa in paragraph.get("qas", []):
                    answers = [x["text"] for x in qa.get("answers", []) if x.get("text")]
                    if answers:  # SQuAD 2.0's unanswerable questions have none: not scored here
                        items.append(QAItem(str(qa["id"]), qa["question"], answers, doc_id))
        if not items:
            raise BadInput(f"{path} holds no answerable questions")
        return QASet(items, contexts)
    items = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BadInput(f"{path} line {number}: not JSON ({exc.msg})") from None
        if not isinstance(row, dict) or not str(row.get("question", "")).strip():
            raise BadInput(f'{path} line {number}: needs a "question"')
        answers = row.get("answers", [row["answer"]] if "answer" in row else [])
        answers = [a["text"] if isinstance(a, dict) else str(a) for a in answers]
        if not answers:
            raise BadInput(f'{path} line {number}: needs "answers" (a list) or "answer"')
        items.append(
            QAItem(
                str(row.get("id", number)),
                row["question"],
                answers,
                str(row["doc_id"]) if row.get("doc_id") is not None else None,
            )
        )
    if not items:
        raise BadInput(f"{path} holds no questions")
    return QASet(items, [])


# --------------------------------------------------------------------------- scoring one answer


def strip_citations(answer: str) -> str:
    return CITATION.sub("", answer).strip()


def _contains_answer(text: str, answers: list[str]) -> bool:
    norm = f" {normalize_answer(text)} "
    return any(f" {normalize_answer(a)} " in norm for a in answers if normalize_answer(a))


def answer_sentences(answer: str) -> list[tuple[str, list[int]]]:
    """(sentence without markers, the [n] it cites). A sentence ends at its citation group
    (genloom's answers put `[n]` after each sentence) or at . ! ? before a capital."""
    from genloom.generation.extractive import split_sentences

    pieces = re.split(r"((?:\s*\[\d{1,3}\])+)", answer)
    out: list[tuple[str, list[int]]] = []
    for i in range(0, len(pieces), 2):
        body = pieces[i].strip()
        cites = [int(n) for n in re.findall(r"\[(\d{1,3})\]", pieces[i + 1])] if i + 1 < len(pieces) else []
        if not body:
            continue
        parts = split_sentences(body) or [body]
        for j, part in enumerate(parts):
            out.append((part, cites if j == len(parts) - 1 else []))
    return out


def supported(sentence: str, source_text: str) -> bool:
    tokens = normalize_answer(sentence).split()
    if not tokens:
        return True
    vocabulary = set(normalize_answer(source_text).split())
    return sum(t in vocabulary for t in tokens) >= SUPPORT_SHARE * len(tokens)


def score_answer(item: QAItem, result) -> dict[str, Any]:
    """One question's record from a CallResult."""
    answer = strip_citations(result.answer)
    docs = [s.doc_id for s in result.sources]
    if item.doc_id is not None:
        hit_rank = docs.index(item.doc_id) + 1 if item.doc_id in docs else None
    else:
        hit_rank = next((s.n for s in result.sources if _contains_answer(s.text, item.answers)), None)
    by_n = {s.n: s for s in result.sources}
    cited = [by_n[c["n"]] for c in result.citations if c["n"] in by_n]
    good = [s for s in cited if s.doc_id == item.doc_id or _contains_answer(s.text, item.answers)]
    abstained = result.finish_reason == "abstain"
    sentences = [] if abstained else answer_sentences(result.answer)
    grounded = [any(supported(text, by_n[n].text) for n in cites if n in by_n) for text, cites in sentences]
    return {
        "id": item.id,
        "generation_id": result.generation_id,
        "status": result.status,
        "hit_rank": hit_rank,
        "em": best_over(exact_match_score, answer, item.answers),
        "f1": best_over(f1_score, answer, item.answers),
        "answer_recall": float(_contains_answer(answer, item.answers)),
        "citation_precision": (len(good) / len(cited)) if cited else None,
        "groundedness": (sum(grounded) / len(grounded)) if grounded else None,
        "abstained": abstained,
        "total_ms": result.timings_ms["total"],
    }


def _mean(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return round(sum(values) / len(values), 4) if values else None


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))], 1)


def summarise(records: list[dict[str, Any]], k: int) -> dict[str, float | None]:
    ok = [r for r in records if r["status"] == "ok"]
    latencies = [r["total_ms"] for r in ok]
    return {
        "questions": len(records),
        "errors": len(records) - len(ok),
        "hit@1": _mean([float(r["hit_rank"] == 1) for r in ok]),
        f"hit@{k}": _mean([float(r["hit_rank"] is not None) for r in ok]),
        "em": _mean([r["em"] for r in ok]),
        "f1": _mean([r["f1"] for r in ok]),
        "answer_recall": _mean([r["answer_recall"] for r in ok]),
        "citation_precision": _mean([r["citation_precision"] for r in ok]),
        "groundedness": _mean([r["groundedness"] for r in ok]),
        "abstention_rate": _mean([float(r["abstained"]) for r in ok]),
        "latency_p50_ms": _percentile(latencies, 0.5),
        "latency_p95_ms": _percentile(latencies, 0.95),
    }


# --------------------------------------------------------------------------- the job


@dataclasses.dataclass
class EvalRagOptions:
    collection: str
    model: str | None = None
    limit: int | None = None
    seed: int = 0
    repeats: int = 1
    k: int = 5
    max_new_tokens: int = 128
    ingest_contexts: bool = False
    mode: str = "hybrid"


def sample(items: list[QAItem], limit: int | None, seed: int) -> list[QAItem]:
    if limit is None or limit >= len(items):
        return list(items)
    return random.Random(seed).sample(items, limit)


def eval_rag_job(qa_file: Path, opts: EvalRagOptions, *, progress: ProgressFn | None = None) -> dict[str, Any]:
    """Run every sampled question through the logged call; store and return the run's metrics."""
    from genloom.db.engine import session_scope
    from genloom.generation.backend import GenParams
    from genloom.generation.call import CallRequest, ask
    from genloom.generation.resolve import load_backend
    from genloom.retrieval.collections import get_collection
    from genloom.runs import log_metrics, tracked_run

    if opts.limit is not None and opts.limit < 1:
        raise BadInput(f"--limit must be at least 1 (got {opts.limit})")
    if not 1 <= opts.repeats <= 100:
        raise BadInput(f"--repeats must be between 1 and 100 (got {opts.repeats})")
    if not 1 <= opts.k <= 100:
        raise BadInput(f"-k must be between 1 and 100 (got {opts.k})")
    qa = load_qa(qa_file)
    if opts.ingest_contexts:
        if not qa.contexts:
            raise BadInput("--ingest-contexts needs a SQuAD-style JSON file (its paragraphs become the documents)")
        from ingest.loaders import SourceDocument
        from ingest.pipeline import IngestOptions, ingest_documents

        ingest_documents(
            [
                SourceDocument(external_id=d, title=t, text=x, metadata={"source": qa_file.name})
                for d, t, x in qa.contexts
            ],
            IngestOptions(collection=opts.collection),
        )
    with session_scope() as s:  # bad names fail before the run exists
        collection_id = get_collection(s, opts.collection).id
        backend = load_backend(s, opts.model)
        model_name, model_id = backend.name, backend.model_id
    chosen = sample(qa.items, opts.limit, opts.seed)
    params = {
        "qa_file": str(qa_file),
        "collection": opts.collection,
        "model": model_name,
        "limit": opts.limit,
        "seed": opts.seed,
        "repeats": opts.repeats,
        "k": opts.k,
        "max_new_tokens": opts.max_new_tokens,
        "mode": opts.mode,
        "evaluation": "rag",
    }
    total = len(chosen) * opts.repeats
    with tracked_run("evaluate", params=params, collection_id=collection_id, model_id=model_id) as run:
        started = time.perf_counter()
        per_repeat: list[dict[str, Any]] = []
        records: list[dict[str, Any]] = []
        failures: list[str] = []
        done = 0
        for repeat in range(opts.repeats):
            batch = []
            for item in chosen:
                try:
                    with session_scope() as s:
                        result = ask(
                            s,
                            CallRequest(
                                question=item.question,
                                collection=opts.collection,
                                model=opts.model,
                                k=opts.k,
                                mode=opts.mode,
                                params=GenParams(max_new_tokens=opts.max_new_tokens, seed=opts.seed + repeat),
                                user=f"eval-rag-run-{run.id}",
                            ),
                        )
                    record = score_answer(item, result)
                except BadInput as exc:  # this question cannot be asked (e.g. no source fits the window)
                    record = {"id": item.id, "generation_id": None, "status": "error", "error": str(exc)}
                    failures.append(str(exc))
                record["repeat"] = repeat
                batch.append(record)
                done += 1
                report_progress(progress, "questions", done, total)
            if len(failures) == len(batch):  # not one question could be asked: a setup problem, not a score
                raise BadInput(f"no question could be asked: {failures[0]}")
            per_repeat.append(summarise(batch, opts.k))
            records.extend(batch)
        metrics: dict[str, Any] = dict(per_repeat[0])
        if opts.repeats > 1:
            for key in per_repeat[0]:
                values = [r[key] for r in per_repeat if r[key] is not None]
                if key in ("questions", "errors"):
                    metrics[key] = sum(values)
                elif values:
                    metrics[key] = round(statistics.fmean(values), 4)
                    metrics[f"{key}_std"] = round(statistics.pstdev(values), 4)
        report = {
            "run_id": run.id,
            "collection": opts.collection,
            "model": model_name,
            "k": opts.k,
            "seed": opts.seed,
            "repeats": opts.repeats,
            "sampled": len(chosen),
            **metrics,
            "seconds": round(time.perf_counter() - started, 1),
        }
        with session_scope() as s:
            log_metrics(s, run.id, {k: v for k, v in metrics.items() if isinstance(v, (int, float))})
            run.finish(summary={**report, "records": records}, session=s)
    return report
