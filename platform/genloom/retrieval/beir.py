"""BEIR evaluation: read queries and qrels, run a collection's search, score the ranking.

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


def ndcg_at(ranked: Sequence[str], relevant: Mapping[str, int], k: int = 10) -> float:
    dcg = sum(relevant.get(doc, 0) / math.log2(i + 2) for i, doc in enumerate(ranked[:k]))
    ideal = sorted((r for r in relevant.values() if r > 0), reverse=True)[:k]
    idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at(ranked: Sequence[str], relevant: Mapping[str, int], k: int = 100) -> float:
    positives = {d for d, r in relevant.items() if r > 0}
    return len(positives & set(ranked[:k])) / len(positives) if positives else 0.0


def mrr_at(ranked: Sequence[str], relevant: Mapping[str, int], k: int = 10) -> float:
    for i, doc in enumerate(ranked[:k]):
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


def evaluate(
    folder: Path,
    *,
    split: str = "test",
    collection: str | None = None,
    modes: Sequence[str] = ("bm25", "vector", "hybrid"),
    ingest_progress=None,
    search_progress=None,
    **search_options,
) -> dict:
    """Ingest the corpus if needed (idempotent), run the split's queries per mode, store an evaluate run.

    Returns {"collection", "split", "queries", "run_id", "modes": {mode: {metric: value}}}.
    """
    import time

    from genloom.db.engine import session_scope
    from genloom.retrieval.collections import get_collection
    from genloom.retrieval.search import MODES, search_many
    from genloom.runs import log_metrics, tracked_run
    from ingest.loaders import LoadOptions
    from ingest.pipeline import IngestOptions, ingest

    folder = Path(folder)
    for mode in modes:
        if mode not in MODES:
            raise BadInput(f"unknown mode {mode!r}; use some of: {', '.join(MODES)}")
    queries_path, qrels_path = beir_paths(folder, split)
    qrels = read_qrels(qrels_path)
    queries = [(q, text) for q, text in read_queries(queries_path) if q in qrels]
    if not queries:
        raise BadInput(f"{queries_path}: none of the queries has judgements in {qrels_path.name}")
    collection = collection or f"beir-{folder.resolve().name}"

    ingested = ingest([folder], IngestOptions(collection=collection, load=LoadOptions(format="beir")),
                      progress=ingest_progress)
    with session_scope() as s:
        collection_id = get_collection(s, collection).id

    k = max(100, int(search_options.pop("k", 100)))
    params = {"beir": str(folder.resolve()), "split": split, "collection": collection, "modes": list(modes),
              "k": k, **{key: v for key, v in search_options.items() if v is not None}}
    report: dict = {"collection": collection, "split": split, "queries": len(queries), "modes": {}}
    with tracked_run("evaluate", name=f"beir:{folder.resolve().name}:{split}", params=params,
                     collection_id=collection_id) as run:
        for mode in modes:
            started = time.perf_counter()
            ranking: dict[str, list[str]] = {}
            with session_scope() as s:
                for qid, hits in search_many(s, queries, collection=collection, mode=mode, k=k, by_document=True,
                                             progress=search_progress, **search_options):
                    ranking[qid] = [h.doc_id for h in hits]
            metrics = score_run(ranking, qrels)
            seconds = time.perf_counter() - started
            report["modes"][mode] = {**{n: round(v, 4) for n, v in metrics.items()},
                                     "ms_per_query": round(1000 * seconds / len(queries), 2)}
            with session_scope() as s:
                log_metrics(s, run.id, {f"{mode}/{name}": value for name, value in metrics.items()})
        report["run_id"] = run.id
        report["ingest"] = {"written": ingested.documents, "unchanged": ingested.unchanged, "chunks": ingested.chunks}
        run.finish(summary=report)
    return report
