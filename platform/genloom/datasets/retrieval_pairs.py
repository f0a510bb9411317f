"""Training pairs for retrieval models: (query, relevant passage, hard negatives) as a sealed text dataset.

Two sources, one record shape (each item's text is one JSON object; genloom.finetune reads them):

    {"query": "...", "positive": "...", "negatives": ["...", ...],
     "query_id": "...", "positive_id": "...", "negative_ids": [...], "collection": "C"}

- `import_qrels`: BEIR qrels (`query-id corpus-id score`) + queries.jsonl; the passages are the
  collection's own documents (title and text, as ingest embeds them), so the pairs train exactly
  what search will see.
- `import_feedback_pairs`: rated generations; a well-rated answer's question → the sources it
  cited [n] are positives, a badly rated one's cited sources are negatives for that question.

Hard negatives are mined from the collection itself: the top search results of each query that
are not judged relevant (BM25 by default: no encoder cost, and lexical near-misses are the pairs
a frozen encoder most often gets wrong). Splits are by query (all pairs of a query land in one
split), seeded, so a validation split never shares a query with training.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from genloom.datasets.importers import ImportResult, SplitFractions, store_import
from genloom.errors import BadInput

NEGATIVE_MODES = ("bm25", "vector", "hybrid", "none")


def _passage(title: str | None, text: str) -> str:
    # The same shape as ingest's embedding text (ingest.chunking.embedding_text), which this
    # package may not import: the title with the text, so training sees what search embeds.
    return f"{title}\n\n{text}" if title else text


def _query_splits(query_ids: list[str], fractions: SplitFractions) -> dict[str, str]:
    """query id → split, seeded, by query."""
    fractions.check()
    order = sorted(set(query_ids))
    rng = np.random.default_rng(fractions.seed)
    shuffled = [order[i] for i in rng.permutation(len(order))]
    n_val, n_test = int(round(len(order) * fractions.val)), int(round(len(order) * fractions.test))
    return {q: "val" if pos < n_val else "test" if pos < n_val + n_test else "train" for pos, q in enumerate(shuffled)}


def _documents(session, collection_id: int, external_ids: list[str]) -> dict[str, str]:
    """external id → passage (title + the current version's chunks in order)."""
    from genloom.db.queries.documents import current_passages

    rows = current_passages(session, collection_id, external_ids)
    return {ext: _passage(title, text) for ext, title, text in rows}


def _mine_negatives(session, collection: str, query: str, exclude: set[str], n: int, mode: str) -> list[str]:
    """External ids of the top-ranked documents for `query` that are not in `exclude`."""
    from genloom.retrieval.search import search

    if n <= 0 or mode == "none":
        return []
    hits = search(session, query, collection=collection, k=n + len(exclude) + 5, mode=mode, by_document=True)
    return [h.doc_id for h in hits if h.doc_id not in exclude][:n]


@dataclasses.dataclass
class Pair:
    query_id: str
    query: str
    positive_id: str
    negative_ids: list[str]


def _store_pairs(
    name: str, collection: str, coll_id: int, pairs: list[Pair], splits: dict[str, str], params: dict, what: str
) -> ImportResult:
    from genloom.datasets.items import text_item
    from genloom.db.engine import session_scope

    needed = sorted({p.positive_id for p in pairs} | {n for p in pairs for n in p.negative_ids})
    with session_scope() as s:
        texts = _documents(s, coll_id, needed)
    specs, member_splits = [], []
    for p in pairs:
        if p.positive_id not in texts:
            continue  # counted below: a judged document the collection does not hold
        negatives = [n for n in p.negative_ids if n in texts]
        record = {
            "query": p.query,
            "positive": texts[p.positive_id],
            "negatives": [texts[n] for n in negatives],
            "query_id": p.query_id,
            "positive_id": p.positive_id,
            "negative_ids": negatives,
            "collection": collection,
        }
        specs.append(
            text_item(json.dumps(record, ensure_ascii=False, sort_keys=True), metadata={"query_id": p.query_id})
        )
        member_splits.append(splits[p.query_id])
    missing = len(pairs) - len(specs)
    if not specs:
        raise BadInput(
            f"none of the {len(pairs)} judged documents is in collection {collection!r}: "
            f"ingest the corpus first (genloom ingest CORPUS --collection {collection})"
        )
    return store_import(
        name,
        "text",
        specs,
        member_splits,
        params={**params, "pairs": len(specs), "pairs_without_document": missing},
        description=what,
    )


def import_qrels(
    qrels_path: Path,
    *,
    collection: str,
    queries_path: Path | None = None,
    name: str | None = None,
    negatives: int = 4,
    negatives_from: str = "bm25",
    fractions: SplitFractions | None = None,
    limit: int | None = None,
) -> ImportResult:
    """BEIR qrels + queries → a sealed dataset of training pairs over `collection`'s documents.

    queries_path defaults to queries.jsonl beside the qrels folder (BEIR's layout: DIR/qrels/train.tsv,
    DIR/queries.jsonl). limit: the first N judged queries only (a quick trial run).
    """
    from genloom.db.engine import session_scope
    from genloom.retrieval.beir import read_qrels, read_queries
    from genloom.retrieval.collections import get_collection

    if negatives_from not in NEGATIVE_MODES:
        raise BadInput(f"unknown --negatives-from {negatives_from!r}; use one of: {', '.join(NEGATIVE_MODES)}")
    if negatives < 0:
        raise BadInput(f"--negatives must be at least 0 (got {negatives})")
    qrels_path = Path(qrels_path)
    if queries_path is None:
        folder = qrels_path.resolve().parent.parent
        queries_path = next((folder / n for n in ("queries.jsonl", "queries.jsonl.gz") if (folder / n).is_file()), None)
        if queries_path is None:
            raise BadInput(f"no queries.jsonl in {folder}: give it with --queries FILE")
    qrels = read_qrels(qrels_path)
    texts = dict(read_queries(Path(queries_path)))
    judged = [q for q in qrels if q in texts and any(r > 0 for r in qrels[q].values())]
    if not judged:
        raise BadInput(f"{qrels_path}: no judged query has a text in {queries_path}")
    if limit is not None:
        judged = judged[:limit]
    fractions = fractions or SplitFractions(val=0.1, test=0.0)
    splits = _query_splits(judged, fractions)
    pairs: list[Pair] = []
    with session_scope() as s:
        coll_id = get_collection(s, collection).id
        for q in judged:
            positives = {d for d, r in qrels[q].items() if r > 0}
            mined = _mine_negatives(s, collection, texts[q], set(qrels[q]), negatives, negatives_from)
            pairs.extend(Pair(q, texts[q], d, mined) for d in sorted(positives))
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", qrels_path.stem)
    return _store_pairs(
        name or f"{collection}-{stem}-pairs",
        collection,
        coll_id,
        pairs,
        splits,
        {
            "source": "qrels",
            "qrels": str(qrels_path.resolve()),
            "queries": str(Path(queries_path).resolve()),
            "collection": collection,
            "negatives": negatives,
            "negatives_from": negatives_from,
            "limit": limit,
            **dataclasses.asdict(fractions),
        },
        f"training pairs from {qrels_path.name} over collection {collection}",
    )


_CITATION = re.compile(r"\[(\d+)\]")


def import_feedback_pairs(
    *,
    collection: str,
    name: str | None = None,
    min_score: int = 4,
    max_score: int = 2,
    negatives: int = 4,
    negatives_from: str = "bm25",
    fractions: SplitFractions | None = None,
) -> ImportResult:
    """Rated generations over `collection` → training pairs.

    A generation rated >= min_score makes its question → each source the answer cites ([n]) a
    positive (all its sources when it cites none); the sources of one rated <= max_score become
    that question's negatives, ahead of mined ones.
    """
    from genloom.db.engine import session_scope
    from genloom.db.queries.generations import rated_generations_over
    from genloom.retrieval.collections import get_collection

    if not 1 <= max_score < min_score <= 5:
        raise BadInput(f"need 1 <= --max-score < --min-score <= 5 (got {max_score}, {min_score})")
    with session_scope() as s:
        coll_id = get_collection(s, collection).id
        rows = rated_generations_over(s, coll_id)
        good: dict[str, set[str]] = {}
        bad: dict[str, set[str]] = {}
        for r in rows:
            ranked = dict(item.split(":", 1) for item in r["sources"])
            cited = {int(n) for n in _CITATION.findall(r["output"] or "")}
            chosen = {doc for rank, doc in ranked.items() if int(rank) in cited} or set(ranked.values())
            if r["score"] is not None and r["score"] >= min_score:
                good.setdefault(r["question"], set()).update(chosen)
            elif r["score"] is not None and r["score"] <= max_score:
                bad.setdefault(r["question"], set()).update(ranked.values())
        if not good:
            raise BadInput(
                f"no generation over {collection!r} is rated >= {min_score}: rate answers first "
                "(genloom feedback GENERATION --score 5)"
            )
        pairs: list[Pair] = []
        for question, positives in sorted(good.items()):
            explicit = sorted(bad.get(question, set()) - positives)
            mined = _mine_negatives(s, collection, question, positives | set(explicit), negatives, negatives_from)
            negs = (explicit + mined)[: max(negatives, len(explicit))]
            pairs.extend(Pair(question, question, d, negs) for d in sorted(positives))
    fractions = fractions or SplitFractions(val=0.0, test=0.0)
    splits = _query_splits([p.query_id for p in pairs], fractions)
    return _store_pairs(
        name or f"{collection}-feedback-pairs",
        collection,
        coll_id,
        pairs,
        splits,
        {
            "source": "feedback",
            "collection": collection,
            "min_score": min_score,
            "max_score": max_score,
            "negatives": negatives,
            "negatives_from": negatives_from,
            **dataclasses.asdict(fractions),
        },
        f"training pairs from rated answers over collection {collection}",
    )


def read_pairs(session, version_ref: str, split: str | None = "train") -> tuple[Any, list[dict]]:
    """(the DatasetVersion, its pair records) for training; a clear error when it holds no pairs."""
    from genloom.datasets.versions import resolve_version
    from genloom.db.queries.datasets import member_texts

    version = resolve_version(session, version_ref)
    records = []
    for text in member_texts(session, version.id, split):
        try:
            record = json.loads(text or "")
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict) or "query" not in record or "positive" not in record:
            raise BadInput(
                f"dataset {version_ref} does not hold training pairs "
                "(import some with: genloom datasets import qrels FILE --collection C)"
            )
        records.append(record)
    if not records:
        raise BadInput(f"dataset {version_ref} has no {split or ''} pairs".replace("  ", " "))
    return version, records
