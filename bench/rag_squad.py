"""RAG quality on SQuAD v1.1 dev with the extractive backend: retrieval hit@5, answer F1 / EM.

Ingests the 2,067 dev paragraphs (one document each, titled with the article) into a
collection, asks a fixed seeded sample of questions through the full logged call
(`genloom.generation.call.ask`: hybrid retrieval, context, extractive answer, log rows),
and scores:
- hit@k: the gold paragraph is among the sources given to the backend;
- EM / token F1: the answer (citation markers removed) against the gold answers, with
  the official SQuAD v1.1 normalisation (lower-case, no punctuation, no articles);
- answer recall: a normalised gold answer occurs inside the answer (the extractive
  answer quotes whole sentences, so EM is near 0 by construction; recall says whether
  the right sentence was picked).

    python bench/rag_squad.py --n 500 --seed 0 > squad.json

Uses the configured database (DATABASE_URL or the embedded one); ingestion is
idempotent, so a re-run only asks the questions again.
"""

from __future__ import annotations

import argparse
import collections
import json
import platform as host_platform
import random
import re
import statistics
import string
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT / "platform", ROOT):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "squad" / "dev-v1.1.json"
_CITATION = re.compile(r"\s*\[\d+\]")


# --- the official SQuAD v1.1 evaluation (evaluate-v1.1.py), verbatim in behaviour ---
def normalize_answer(s: str) -> str:
    def remove_articles(text):
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    return white_space_fix(remove_articles(remove_punc(s.lower())))


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


def metric_max_over_ground_truths(metric_fn, prediction, ground_truths):
    return max(metric_fn(prediction, gt) for gt in ground_truths)


# ------------------------------------------------------------------------------------


def load_squad(path: Path):
    data = json.loads(path.read_text())["data"]
    docs, questions = [], []
    for a, article in enumerate(data):
        title = article["title"].replace("_", " ")
        for p, paragraph in enumerate(article["paragraphs"]):
            doc_id = f"{a:02d}-{p:03d}"
            docs.append((doc_id, title, paragraph["context"]))
            for qa in paragraph["qas"]:
                questions.append((qa["id"], qa["question"], [x["text"] for x in qa["answers"]], doc_id))
    return docs, questions


def summarise(records: list[dict], args, *, ingest: dict | None) -> dict:
    ok = [r for r in records if r["status"] == "ok"]
    n = len(ok)
    timings: dict[str, list[float]] = collections.defaultdict(list)
    for r in ok:
        for key, value in r["timings_ms"].items():
            timings[key].append(value)
    return {
        "benchmark": "rag_squad",
        "data": "SQuAD v1.1 dev, 2,067 paragraphs (one document each)",
        "questions": len(records),
        "seed": args.seed,
        "k": args.k,
        "backend": "extractive",
        f"hit@{args.k}": round(sum(r["hit"] for r in ok) / n, 4),
        "hit@1": round(sum(r["hit1"] for r in ok) / n, 4),
        "exact_match": round(100 * sum(r["em"] for r in ok) / n, 2),
        "f1": round(100 * sum(r["f1"] for r in ok) / n, 2),
        "answer_recall": round(sum(r["recall"] for r in ok) / n, 4),
        "errors": len(records) - n,
        "latency_ms_median": {k: round(statistics.median(v), 1) for k, v in timings.items()},
        "latency_ms_p95": {k: round(sorted(v)[int(0.95 * (len(v) - 1))], 1) for k, v in timings.items()},
        "ingest": ingest,
        "machine": f"{host_platform.machine()}, {__import__('os').cpu_count()} cores, no GPU",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--collection", default="squad-dev")
    parser.add_argument("--n", type=int, default=500, help="questions in the seeded sample")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-k", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--shard", default="0/1", help="I/N: ask every N-th question of the sample from the I-th "
                        "(run N processes, then --merge their --records)")
    parser.add_argument("--records", type=Path, help="append one JSON line per question here")
    parser.add_argument("--reverse", action="store_true",
                        help="walk the shard from its end (a second process on the same shard meets the first "
                        "halfway; --merge keeps one record per question)")
    parser.add_argument("--merge", type=Path, nargs="*", help="only report from these --records files")
    args = parser.parse_args()
    if args.merge:
        by_id = {}
        for path in args.merge:
            for line in path.read_text().splitlines():
                if line.strip():
                    record = json.loads(line)
                    by_id.setdefault(record["id"], record)
        records = list(by_id.values())
        print(json.dumps(summarise(records, args, ingest=None), indent=2))
        return

    from genloom.db.engine import session_scope
    from genloom.generation.backend import GenParams
    from genloom.generation.call import CallRequest, ask
    from ingest.loaders import SourceDocument
    from ingest.pipeline import IngestOptions, ingest_documents

    docs, questions = load_squad(args.data)
    started = time.perf_counter()
    result = ingest_documents(
        [SourceDocument(external_id=d, title=t, text=x, metadata={"source": "squad-dev"}) for d, t, x in docs],
        IngestOptions(collection=args.collection),
    )
    ingest_seconds = time.perf_counter() - started
    print(f"ingested {result.documents} documents ({result.unchanged} unchanged), {result.chunks} chunks "
          f"in {ingest_seconds:.1f} s", file=sys.stderr)

    sample = random.Random(args.seed).sample(questions, args.n)
    shard, shards = (int(x) for x in args.shard.split("/"))
    records = []
    ask_started = time.perf_counter()
    out_file = args.records.open("a") if args.records else None
    todo = sample[shard::shards]
    for i, (qid, question, answers, gold) in enumerate(reversed(todo) if args.reverse else todo):
        with session_scope() as s:
            out = ask(s, CallRequest(question=question, collection=args.collection, model="extractive", k=args.k,
                                     params=GenParams(max_new_tokens=args.max_new_tokens), user="bench-squad"))
        record = {"id": qid, "status": out.status}
        if out.status == "ok":
            source_docs = [src.doc_id for src in out.sources]
            answer = _CITATION.sub("", out.answer)
            norm = f" {normalize_answer(answer)} "
            record.update(
                hit=gold in source_docs,
                hit1=bool(source_docs) and source_docs[0] == gold,
                em=metric_max_over_ground_truths(exact_match_score, answer, answers),
                f1=metric_max_over_ground_truths(f1_score, answer, answers),
                recall=any(f" {normalize_answer(a)} " in norm for a in answers),
                timings_ms=out.timings_ms,
            )
        records.append(record)
        if out_file:
            out_file.write(json.dumps(record) + "\n")
            out_file.flush()
        if (i + 1) % 50 == 0:
            done = [r for r in records if r["status"] == "ok"]
            print(f"{i + 1} hit@{args.k} {sum(r['hit'] for r in done) / len(done):.3f} "
                  f"F1 {sum(r['f1'] for r in done) / len(done):.3f}", file=sys.stderr)
    report = summarise(records, args, ingest={"chunks": result.chunks, "seconds": round(ingest_seconds, 1)})
    report["ask_seconds"] = round(time.perf_counter() - ask_started, 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
