"""BEIR files and metrics: read queries and qrels, score a ranking (the job that ingests a
corpus and runs the searches is genloom.evaluation.beir).

Metrics follow trec_eval / pytrec_eval as BEIR reports them, per query then averaged
over the queries that have at least one relevant document:
- nDCG@10: sum_{i<=10} rel_i / log2(i + 1), divided by the same sum over the ideal
  ordering (linear gain, trec_eval's default; SciFact's judgements are all 1 anyway).
- Recall@100: relevant documents in the top 100 / relevant documents.
- MRR@10: 1 / rank of the first relevant document within the top 10, else 0.
"""

from __future__ import annotations

import csv
import gzip
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from genloom.errors import BadInput, NotFound

Qrels = dict[str, dict[str, int]]  # query id -> {doc id: relevance}


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.name.endswith(".gz") else path.open(encoding="utf-8")


def read_queries(path: Path) -> list[tuple[str, str]]:
    """(id, text) from BEIR queries.jsonl (`_id`, `text`) or JSONL with `id`/`query`."""
    if not path.is_file():
        raise BadInput(f"queries file not found: {path}")
    out: list[tuple[str, str]] = []
    with _open_text(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BadInput(f"{path}:{number}: invalid JSON ({exc.msg} at column {exc.colno})") from None
            if not isinstance(record, dict):
                raise BadInput(f"{path}:{number}: expected a JSON object")
            qid = record.get("_id", record.get("id", record.get("query_id")))
            text = record.get("text", record.get("query"))
            if qid is None or not isinstance(text, str):
                raise BadInput(f"{path}:{number}: a query needs an id (_id or id) and a text (text or query)")
            out.append((str(qid), text))
    if not out:
        raise BadInput(f"{path}: no queries")
    return out


def read_qrels(path: Path) -> Qrels:
    """BEIR qrels TSV: `query-id corpus-id score` with a header line."""
    if not path.is_file():
        raise NotFound(f"qrels file not found: {path}")
    qrels: Qrels = {}
    with path.open(encoding="utf-8") as f:
        reader = csv.reader(f, delimiter="\t")
        for number, row in enumerate(reader, 1):
            if not row or (number == 1 and not row[-1].strip().lstrip("-").isdigit()):
                continue  # header
            if len(row) < 3:
                raise BadInput(f"{path}:{number}: expected query-id, corpus-id, score")
            qrels.setdefault(row[0], {})[row[1]] = int(row[2])
    return qrels


def _first_occurrences(ranked: Sequence[str]) -> list[str]:
    """The run with repeats removed: a document counts once, at its best rank (trec_eval and
    pytrec_eval read a run as a document → score map, so a repeat cannot earn gain twice)."""
    return list(dict.fromkeys(ranked))


def ndcg_at(ranked: Sequence[str], relevant: Mapping[str, int], k: int = 10) -> float:
    """nDCG@k with linear gain (rel / log2(rank + 1)), as BEIR's pytrec_eval computes it."""
    ranked = _first_occurrences(ranked)
    dcg = sum(relevant.get(doc, 0) / math.log2(i + 2) for i, doc in enumerate(ranked[:k]))
    ideal = sorted((r for r in relevant.values() if r > 0), reverse=True)[:k]
    idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at(ranked: Sequence[str], relevant: Mapping[str, int], k: int = 100) -> float:
    positives = {d for d, r in relevant.items() if r > 0}
    return len(positives & set(_first_occurrences(ranked)[:k])) / len(positives) if positives else 0.0


def mrr_at(ranked: Sequence[str], relevant: Mapping[str, int], k: int = 10) -> float:
    for i, doc in enumerate(_first_occurrences(ranked)[:k]):
        if relevant.get(doc, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


def score_run(run: Mapping[str, Sequence[str]], qrels: Qrels) -> dict[str, float]:
    """Mean nDCG@10, Recall@100, MRR@10 over judged queries (a query with no results scores 0)."""
    judged = [q for q, rels in qrels.items() if any(r > 0 for r in rels.values())]
    if not judged:
        raise BadInput("the qrels hold no relevant documents")
    totals = {"ndcg@10": 0.0, "recall@100": 0.0, "mrr@10": 0.0}
    for q in judged:
        ranked = run.get(q, [])
        totals["ndcg@10"] += ndcg_at(ranked, qrels[q], 10)
        totals["recall@100"] += recall_at(ranked, qrels[q], 100)
        totals["mrr@10"] += mrr_at(ranked, qrels[q], 10)
    return {name: value / len(judged) for name, value in totals.items()}


def beir_paths(folder: Path, split: str) -> tuple[Path, Path]:
    """(queries file, qrels file) of a BEIR folder, with a clear error when one is missing."""
    if not folder.is_dir():
        raise BadInput(f"BEIR folder not found: {folder}")
    queries = next((folder / n for n in ("queries.jsonl", "queries.jsonl.gz") if (folder / n).is_file()), None)
    if queries is None:
        raise BadInput(f"{folder}: no queries.jsonl (is it a BEIR folder?)")
    qrels = folder / "qrels" / f"{split}.tsv"
    if not qrels.is_file():
        have = sorted(p.stem for p in (folder / "qrels").glob("*.tsv")) if (folder / "qrels").is_dir() else []
        raise BadInput(f"{folder}: no qrels for split {split!r}" + (f" (have: {', '.join(have)})" if have else ""))
    return queries, qrels
