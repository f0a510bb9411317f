"""Retrieval quality on several development collections, genloom against reference implementations.

    nice -n 10 python bench/retrieval_quality.py [--collections scifact,scifact-verbose,squad,squad-verbose]
                                                 [--squad-queries 1000] [--seed 0] [--out bench/results/...]

Collections (all from ../shared/data; the product never needs them):
- scifact: BEIR SciFact, the 300 test claims.
- squad: SQuAD v1.1 dev as retrieval, question -> its paragraph (2,067 paragraphs, one
  document each, titled with the article), a seeded sample of the 10,570 questions.
- scifact-verbose, squad-verbose: the same queries made long, standing for verbose
  natural-language queries: the question, its article title (SQuAD) and an off-topic
  sentence from the other collection, with the key words said twice (see `verbose`).

For each collection and each query it fetches, once, genloom's two branches through
`search()` (BM25 under each BM25 variant measured, and the HNSW vector branch, each
to depth 300 chunks) and the references:
- reference BM25: bm25s (Lucene BM25, k1 0.9, b 0.4, Snowball English stemmer via
  PyStemmer, bm25s' English stopwords) over each document's `title text`;
- exact MiniLM: brute-force cosine between the query and each document's first chunk
  embedding as stored by genloom (the title + the whole sentences that fit the model's
  256-token window; MTEB's all-MiniLM-L6-v2 figure embeds title + text cut at that window);
- naive RRF of the two references (k = 60, top 100 of each).
Then it replays the fusion grid in Python exactly as HYBRID_SQL computes it, and checks
the product's default hybrid through the real SQL (`search(..., by_document=True)`).

Query embeddings are cached in $GENLOOM_HOME/bench-cache; corpora are ingested once
(idempotent), so a re-run costs only the searches. Writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform as host_platform
import random
import re
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT / "platform", ROOT, ROOT / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import sqlalchemy as sa

DEPTH = 300  # chunk candidates fetched per branch; the fusion grid replays shallower depths from these
COLLECTIONS = ("scifact", "scifact-verbose", "squad", "squad-verbose")


def find_data(given: Path | None) -> Path:
    candidates = [given] if given else [p / "shared" / "data" for p in (ROOT.parent, ROOT.parent.parent)]
    for path in candidates:
        if path and (path / "scifact").is_dir() and (path / "squad").is_dir():
            return path
    raise SystemExit(f"no shared data folder (with scifact/ and squad/) at {', '.join(map(str, candidates))}")


# --- collections --------------------------------------------------------------------------------------------

_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def distractor(pool: list[str], rng: random.Random) -> str:
    """A sentence of 6 to 40 words from the *other* collection's documents.

    Off-topic, so it stands for the part of a verbose query that is beside the point; taken
    from the other corpus because a sentence lifted from this one would make its source
    document an exact match (a planted answer for BM25, not verbosity).
    """
    while True:
        sentences = [s for s in _SENTENCE.split(rng.choice(pool)) if 6 <= len(s.split()) <= 40]
        if sentences:
            return rng.choice(sentences).strip()


def verbose(text: str, topic: str | None, noise: str) -> str:
    """A long query: the question, its topic, an unrelated sentence, and the question's point said again.

    Verbose queries written by people (TREC descriptions, CISI, support tickets) repeat their
    key words and carry sentences that are beside the point; this template does both.
    """
    text = text.strip().rstrip("?.")
    about = f" This is about {topic}." if topic else ""
    again = f" I would like to learn more about {topic}." if topic else f" In short: {text[0].lower() + text[1:]}?"
    return f"{text}?{about} {noise}{again}"


def load_scifact(data: Path):
    from genloom.retrieval.beir import read_qrels, read_queries

    corpus = {}
    with (data / "scifact" / "corpus.jsonl").open(encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            corpus[str(record["_id"])] = (record.get("title") or "", record["text"])
    qrels = read_qrels(data / "scifact" / "qrels" / "test.tsv")
    queries = [(q, t) for q, t in read_queries(data / "scifact" / "queries.jsonl") if q in qrels]
    return corpus, queries, qrels


def load_squad_retrieval(data: Path, n: int, seed: int):
    from genloom.evaluation.rag import load_qa  # SQuAD's reader (moved there from bench/rag_squad.py)

    qa = load_qa(data / "squad" / "dev-v1.1.json")
    corpus = {d: (t, x) for d, t, x in qa.contexts}
    sample = random.Random(seed).sample(qa.items, min(n, len(qa.items)))
    queries = [(item.id, item.question) for item in sample]
    qrels = {item.id: {item.doc_id: 1} for item in sample}
    return corpus, queries, qrels


def build_collections(data: Path, names, squad_queries: int, seed: int) -> dict[str, dict]:
    out = {}
    scifact = load_scifact(data)
    squad = load_squad_retrieval(data, squad_queries, seed)
    for name in names:
        base, corpus_name, other = ((scifact, "beir-scifact", squad) if name.startswith("scifact")
                                    else (squad, "squad-dev", scifact))
        corpus, queries, qrels = base
        if name.endswith("-verbose"):
            rng = random.Random(seed)
            pool = [text for _, text in other[0].values()]
            queries = [
                (q, verbose(t, corpus[next(iter(qrels[q]))][0] if name.startswith("squad") else None,
                            distractor(pool, rng)))
                for q, t in queries
            ]
        out[name] = {"corpus": corpus, "queries": queries, "qrels": qrels, "collection": corpus_name}
    return out


def ingest_corpus(name: str, corpus: dict[str, tuple[str, str]], data: Path) -> None:
    """Idempotent: unchanged documents are recognised by hash and cost nothing."""
    from ingest.loaders import LoadOptions, SourceDocument
    from ingest.pipeline import IngestOptions, ingest, ingest_documents

    if name == "beir-scifact":
        ingest([data / "scifact"], IngestOptions(collection=name, load=LoadOptions(format="beir")))
    else:
        ingest_documents(
            [SourceDocument(external_id=d, title=t, text=x, metadata={"source": "squad-dev"})
             for d, (t, x) in corpus.items()],
            IngestOptions(collection=name),
        )


# --- genloom's branches, through search() ---------------------------------------------------------------------


def query_embeddings(model_name: str, texts: list[str]) -> np.ndarray:
    from genloom.config import genloom_home
    from genloom.embeddings import embed

    key = hashlib.sha256("\x00".join([model_name, *texts]).encode()).hexdigest()[:20]
    cache = genloom_home() / "bench-cache" / f"queries-{key}.npy"
    if cache.is_file():
        return np.load(cache, allow_pickle=False)
    vectors = np.asarray(list(embed(texts, name=model_name, batch_size=64)), dtype=np.float32)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, vectors, allow_pickle=False)
    return vectors


def branch(collection: str, queries, *, mode: str, embeddings=None, **options) -> dict[str, list]:
    """{query id: [(chunk_id, doc_id, score)] best first} for one branch, depth DEPTH chunks.

    Cached in $GENLOOM_HOME/bench-cache under a key of everything the answer depends on: the
    search SQL's text, the collection's statistics, the branch options, the queries.
    """
    from genloom.config import genloom_home
    from genloom.db.engine import session_scope
    from genloom.retrieval.hybrid import HYBRID_SQL
    from genloom.retrieval.search import search

    with session_scope() as s:
        stats = s.execute(sa.text(
            "SELECT st.n_chunks, st.total_length, st.updated_at::text FROM retrieval_collection_stats st "
            "JOIN collections c ON c.id = st.collection_id WHERE c.name = :n"), {"n": collection}).one()
    key = hashlib.sha256(json.dumps([HYBRID_SQL, list(stats), collection, mode, DEPTH, sorted(options.items()),
                                     queries]).encode()).hexdigest()[:20]
    cache = genloom_home() / "bench-cache" / f"branch-{key}.json"
    if cache.is_file():
        return {q: [tuple(hit) for hit in hits] for q, hits in json.loads(cache.read_text()).items()}
    out = {}
    with session_scope() as s:
        for i, (qid, text) in enumerate(queries):
            vector = embeddings[i] if embeddings is not None else None
            hits = search(s, text, collection=collection, mode=mode, k=DEPTH, depth=DEPTH,
                          query_embedding=vector, **options)
            out[qid] = [(h.chunk_id, h.doc_id, h.bm25_score if mode == "bm25" else h.vector_score) for h in hits]
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(out))
    return out


# RM3 (Lavrenko & Croft's relevance model, interpolated with the query as in Anserini), computed in
# SQL from the top BM25 chunks' postings. Bench only: measured, not adopted (docs/retrieval.md).
RM3_SQL = """
WITH fb AS (
    SELECT unnest(CAST(:ids AS bigint[])) AS chunk_id, unnest(CAST(:scores AS float8[])) AS score
),
-- P(t|R) = sum over feedback chunks of P(d) * tf / len, P(d) their BM25 score share; top :fb_terms terms
rel AS (
    SELECT p.term, sum(fb.score / t.total * p.tf::float8 / p.chunk_length) AS p
    FROM fb CROSS JOIN (SELECT sum(score) AS total FROM fb) t
    JOIN retrieval_postings p ON p.chunk_id = fb.chunk_id AND p.current
    GROUP BY p.term
    ORDER BY p DESC, p.term
    LIMIT :fb_terms
),
orig AS (
    SELECT lexeme AS term, coalesce(array_length(positions, 1), 1)::float8 AS qtf
    FROM unnest(to_tsvector(CAST(:ts_config AS regconfig), :query))
),
-- q'(t) = lambda * qtf / |q| + (1 - lambda) * P(t|R) / sum P
query_terms AS (
    SELECT term, sum(weight) AS weight FROM (
        SELECT term, :lambda * qtf / sum(qtf) OVER () AS weight FROM orig
        UNION ALL
        SELECT term, (1 - :lambda) * p / sum(p) OVER () FROM rel
    ) parts
    GROUP BY term
),
stats AS (
    SELECT n_chunks::float8 AS n, total_length::float8 / greatest(n_chunks, 1) AS avglen
    FROM retrieval_collection_stats WHERE collection_id = :collection_id
),
term_weight AS (
    SELECT ts.term, q.weight * ln(1 + (s.n - ts.df + 0.5) / (ts.df::float8 + 0.5)) AS weight
    FROM query_terms q
    JOIN retrieval_term_stats ts ON ts.collection_id = :collection_id AND ts.term = q.term AND ts.df > 0
    CROSS JOIN stats s
)
SELECT p.chunk_id, d.external_id,
       sum(i.weight * p.tf * (:k1 + 1) / (p.tf + :k1 * (1 - :b + :b * p.chunk_length / s.avglen))) AS score
FROM term_weight i
JOIN retrieval_postings p ON p.collection_id = :collection_id AND p.term = i.term AND p.current
CROSS JOIN stats s
JOIN chunks c ON c.id = p.chunk_id
JOIN documents d ON d.id = c.document_id
GROUP BY p.chunk_id, d.external_id
ORDER BY score DESC, p.chunk_id
LIMIT :depth
"""


def rm3_branch(collection: str, queries, bm25_run, *, fb_docs: int = 10, fb_terms: int = 10,
               lam: float = 0.5) -> dict[str, list]:
    """BM25 with RM3 expansion from the top fb_docs chunks of `bm25_run`; cached like `branch`."""
    from genloom.config import genloom_home
    from genloom.db.engine import session_scope
    from genloom.retrieval.collections import get_collection
    from genloom.retrieval.search import DEFAULT_B, DEFAULT_K1

    key = hashlib.sha256(json.dumps([RM3_SQL, collection, fb_docs, fb_terms, lam, DEPTH, queries,
                                     [bm25_run[q][:fb_docs] for q, _ in queries]]).encode()).hexdigest()[:20]
    cache = genloom_home() / "bench-cache" / f"rm3-{key}.json"
    if cache.is_file():
        return {q: [tuple(hit) for hit in hits] for q, hits in json.loads(cache.read_text()).items()}
    out = {}
    with session_scope() as s:
        coll = get_collection(s, collection)
        for qid, text in queries:
            top = bm25_run[qid][:fb_docs]
            if not top:
                out[qid] = []
                continue
            rows = s.execute(sa.text(RM3_SQL), {
                "ids": [c for c, _, _ in top], "scores": [float(x) for _, _, x in top], "fb_terms": fb_terms,
                "ts_config": coll.text_search_config, "query": text, "lambda": lam, "collection_id": coll.id,
                "k1": DEFAULT_K1, "b": DEFAULT_B, "depth": DEPTH}).all()
            out[qid] = [(r[0], r[1], float(r[2])) for r in rows]
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(out))
    return out


def documents(ranked) -> list[str]:
    """The by-document ranking of a chunk list: each document at its best chunk."""
    seen: dict[str, None] = {}
    for _, doc, _ in ranked:
        seen.setdefault(doc, None)
    return list(seen)[:100]


# --- fusion replay (what HYBRID_SQL computes) -----------------------------------------------------------------


def _per_document(ranked, agg: str):
    """Collapse a branch to documents: 'max' keeps the best chunk's score, 'sum2' adds the best two."""
    scores: dict[str, list[float]] = {}
    for _, doc, s in ranked:
        scores.setdefault(doc, []).append(s)
    if agg == "sum2":
        merged = {d: sum(v[:2]) for d, v in scores.items()}
    else:
        merged = {d: v[0] for d, v in scores.items()}
    return [(d, d, s) for d, s in sorted(merged.items(), key=lambda x: -x[1])]


def fuse(bm, vec, *, fusion: str, rrf_k: float = 60, w: float = 0.5, depth: int = 100,
         level: str = "chunk", norm: str = "minmax") -> list[str]:
    """Fuse two branches [(chunk_id, doc_id, score)] best first; return the top 100 documents.

    level 'chunk': fuse chunks, then keep each document's best (HYBRID_SQL before issue 19);
    'doc' / 'doc-sum2': collapse each branch to documents first (max, or sum of the top two
    chunk scores), rank documents, then fuse. norm (weighted fusion): 'minmax' (HYBRID_SQL),
    'max' (score / the branch's best) or 'z' ((score - mean) / sd); under 'max' and 'z' a
    candidate the other branch did not return counts as that branch's weakest candidate, as
    it does (0) under 'minmax'.
    """
    bm, vec = bm[:depth], vec[:depth]
    if level != "chunk":
        agg = "sum2" if level == "doc-sum2" else "max"
        bm, vec = _per_document(bm, agg), _per_document(vec, agg)
    scores: dict = {}
    docs: dict = {}
    if fusion == "rrf":
        for one in (bm, vec):
            for rank, (key, doc, _) in enumerate(one, 1):
                scores[key] = scores.get(key, 0.0) + 1.0 / (rrf_k + rank)
                docs[key] = doc
    else:
        parts = []
        for weight, one in ((w, bm), (1 - w, vec)):
            if not one:
                continue
            values = np.asarray([s for _, _, s in one], dtype=float)
            if norm == "max":
                normed = values / values.max() if values.max() > 0 else np.ones_like(values)
            elif norm == "z":
                normed = (values - values.mean()) / values.std() if values.std() > 0 else np.zeros_like(values)
            else:
                lo, hi = values.min(), values.max()
                normed = (values - lo) / (hi - lo) if hi > lo else np.ones_like(values)
            floor = 0.0 if norm == "minmax" else float(normed.min())
            parts.append((weight, floor, {key: float(v) for (key, _, _), v in zip(one, normed)}))
            docs.update({key: doc for key, doc, _ in one})
        for key in docs:
            scores[key] = sum(weight * part.get(key, floor) for weight, floor, part in parts)
    best: dict[str, float] = {}
    for key, s in sorted(scores.items(), key=lambda x: (-x[1], x[0])):
        best.setdefault(docs[key], s)
    return list(best)[:100]


def fusion_grid() -> list[dict]:
    grid = []
    for level in ("chunk", "doc", "doc-sum2"):
        for depth in (100, 300):
            grid += [{"fusion": "rrf", "rrf_k": k, "depth": depth, "level": level} for k in (10, 20, 30, 60, 100)]
            grid += [{"fusion": "weighted", "w": w, "depth": depth, "level": level, "norm": norm}
                     for w in (0.3, 0.4, 0.5, 0.6, 0.7) for norm in (("minmax", "max", "z") if level == "chunk"
                                                                        else ("minmax",))]
    return grid


def label(cfg: dict) -> str:
    knob = f"k={cfg['rrf_k']}" if cfg["fusion"] == "rrf" else f"w={cfg['w']} {cfg['norm']}"
    return f"{cfg['fusion']} {knob} depth={cfg['depth']} {cfg['level']}"


# --- references ------------------------------------------------------------------------------------------------


def reference_bm25(corpus, queries, k1: float = 0.9, b: float = 0.4) -> dict[str, list[str]]:
    import bm25s
    import Stemmer

    stemmer = Stemmer.Stemmer("english")
    ids = list(corpus)
    retriever = bm25s.BM25(k1=k1, b=b)  # method "lucene": idf ln(1 + (N - df + 0.5) / (df + 0.5))
    retriever.index(bm25s.tokenize([f"{t} {x}" for t, x in corpus.values()], stopwords="en", stemmer=stemmer,
                                   show_progress=False), show_progress=False)
    tokens = bm25s.tokenize([t for _, t in queries], stopwords="en", stemmer=stemmer, return_ids=False,
                            show_progress=False)
    out = {}
    for (qid, _), query in zip(queries, tokens):
        query = [t for t in query if t in retriever.vocab_dict]
        if not query:
            out[qid] = []
            continue
        docs, _ = retriever.retrieve([query], k=min(100, len(ids)), show_progress=False, n_threads=1)
        out[qid] = [ids[i] for i in docs[0]]
    return out


def first_chunk_embeddings(collection: str) -> tuple[list[str], np.ndarray]:
    from genloom.db.engine import session_scope

    with session_scope() as s:
        rows = s.execute(sa.text(
            """
            SELECT d.external_id, e.embedding::text
            FROM collections col
            JOIN documents d ON d.collection_id = col.id AND d.superseded_at IS NULL
            JOIN chunks c ON c.document_id = d.id AND c.ordinal = 0
            JOIN embeddings e ON e.chunk_id = c.id AND e.embedding_model_id = col.embedding_model_id
            WHERE col.name = :name ORDER BY d.external_id
            """), {"name": collection}).all()
    return [r[0] for r in rows], np.asarray([json.loads(r[1]) for r in rows], dtype=np.float32)


def exact_cosine(doc_ids, doc_vectors, query_vectors, queries) -> dict[str, list[str]]:
    sims = query_vectors @ doc_vectors.T  # both unit-normalised
    top = np.argsort(-sims, axis=1, kind="stable")[:, :100]
    return {qid: [doc_ids[j] for j in row] for (qid, _), row in zip(queries, top)}


def naive_rrf(a: list[str], b: list[str], k: int = 60) -> list[str]:
    scores: dict[str, float] = {}
    for ranking in (a[:100], b[:100]):
        for rank, doc in enumerate(ranking, 1):
            scores[doc] = scores.get(doc, 0.0) + 1.0 / (k + rank)
    return [d for d, _ in sorted(scores.items(), key=lambda x: (-x[1], x[0]))][:100]


# --- the run ---------------------------------------------------------------------------------------------------


def metrics(run, qrels) -> dict[str, float]:
    from genloom.retrieval.beir import score_run

    scored = score_run(run, qrels)
    return {"ndcg@10": round(scored["ndcg@10"], 4), "recall@100": round(scored["recall@100"], 4)}


BM25_VARIANTS = {
    "distinct lexemes (before)": {"query_tf": False},
    "query tf (default)": {"query_tf": True},
    "query tf, k1 1.2 b 0.75": {"query_tf": True, "k1": 1.2, "b": 0.75},
}


def evaluate_collection(name: str, spec: dict, log) -> dict:
    from genloom.db.engine import session_scope
    from genloom.retrieval.collections import get_collection
    from genloom.retrieval.search import search
    from genloom.retrieval.vector import model_for_collection

    queries, qrels, collection = spec["queries"], spec["qrels"], spec["collection"]
    with session_scope() as s:
        model = model_for_collection(s, get_collection(s, collection).embedding_model_id)
        model_name = model.name
    timings = {}
    started = time.perf_counter()
    vectors = query_embeddings(model_name, [t for _, t in queries])
    timings["embed_queries_s"] = round(time.perf_counter() - started, 1)

    started = time.perf_counter()
    bm25_runs = {label_: branch(collection, queries, mode="bm25", **opts) for label_, opts in BM25_VARIANTS.items()}
    vec = branch(collection, queries, mode="vector", embeddings=vectors)
    timings["branches_s"] = round(time.perf_counter() - started, 1)
    log(f"{name}: branches fetched in {timings['branches_s']} s")

    started = time.perf_counter()
    ref_bm25 = reference_bm25(spec["corpus"], queries)
    doc_ids, doc_vectors = first_chunk_embeddings(collection)
    ref_vec = exact_cosine(doc_ids, doc_vectors, vectors, queries)
    ref_rrf = {q: naive_rrf(ref_bm25[q], ref_vec[q]) for q, _ in queries}
    timings["references_s"] = round(time.perf_counter() - started, 1)

    bm = bm25_runs["query tf (default)"]
    started = time.perf_counter()
    rm3 = rm3_branch(collection, queries, bm)
    timings["rm3_s"] = round(time.perf_counter() - started, 1)
    report = {
        "collection": collection,
        "queries": len(queries),
        "mean_query_words": round(float(np.mean([len(t.split()) for _, t in queries])), 1),
        "example_query": queries[0][1],
        "genloom": {
            **{f"bm25 {k}": metrics({q: documents(r[q]) for q in r}, qrels) for k, r in bm25_runs.items()},
            "vector (HNSW)": metrics({q: documents(vec[q]) for q in vec}, qrels),
            "bm25 query tf + RM3 (10 chunks, 10 terms, 0.5; bench only)": metrics(
                {q: documents(rm3[q]) for q in rm3}, qrels),
            "default fusion over BM25 + RM3 and vector (replay)": metrics(
                {q: fuse(rm3[q], vec[q], fusion="weighted", w=0.5, depth=DEPTH) for q, _ in queries}, qrels),
            "naive RRF of genloom's branches (k 60, by document)": metrics(
                {q: naive_rrf(documents(bm[q]), documents(vec[q])) for q, _ in queries}, qrels),
        },
        "reference": {
            "bm25s": metrics(ref_bm25, qrels),
            "exact MiniLM cosine": metrics(ref_vec, qrels),
            "naive RRF of the references (k 60)": metrics(ref_rrf, qrels),
        },
        "fusion_grid": {},
        "timings": timings,
    }
    for variant, bm_run in (("query tf (default)", bm), ("distinct lexemes (before)",
                                                          bm25_runs["distinct lexemes (before)"])):
        for cfg in fusion_grid():
            if variant != "query tf (default)" and cfg["level"] != "chunk":
                continue  # the 'before' BM25 is only replayed with the 'before' fusion level
            run = {q: fuse(bm_run[q], vec[q], **cfg) for q, _ in queries}
            report["fusion_grid"][f"{label(cfg)} | bm25 {variant}"] = metrics(run, qrels)

    # The product's default, through the real SQL: one statement per query, by document, k = 100.
    started = time.perf_counter()
    run = {}
    with session_scope() as s:
        for (qid, text), vector in zip(queries, vectors):
            run[qid] = [h.doc_id for h in search(s, text, collection=collection, k=100, by_document=True,
                                                 query_embedding=vector)]
    report["genloom"]["hybrid default (SQL)"] = metrics(run, qrels)
    timings["default_sql_s"] = round(time.perf_counter() - started, 1)
    log(f"{name}: {json.dumps({k: v['ndcg@10'] for k, v in {**report['genloom'], **report['reference']}.items()})}")
    return report


def choose(reports: dict[str, dict]) -> list[dict]:
    """Rank fusion settings by their worst margin over the best of their own branches, then mean nDCG@10."""
    rows = []
    for key in next(iter(reports.values()))["fusion_grid"]:
        per = {}
        for name, r in reports.items():
            ndcg = r["fusion_grid"][key]["ndcg@10"]
            best_branch = max(r["genloom"]["bm25 query tf (default)"]["ndcg@10"], r["genloom"]["vector (HNSW)"]["ndcg@10"])
            per[name] = {"ndcg@10": ndcg, "over_best_branch": round(ndcg - best_branch, 4),
                         "over_reference_rrf": round(ndcg - r["reference"]["naive RRF of the references (k 60)"]["ndcg@10"], 4)}
        rows.append({"setting": key, "mean_ndcg@10": round(float(np.mean([p["ndcg@10"] for p in per.values()])), 4),
                     "worst_over_best_branch": min(p["over_best_branch"] for p in per.values()),
                     "worst_over_reference_rrf": min(p["over_reference_rrf"] for p in per.values()),
                     "per_collection": per})
    rows.sort(key=lambda r: -r["mean_ndcg@10"])
    return rows


def environment() -> dict:
    from genloom.db.engine import session_scope

    def version(package):
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return None

    with session_scope() as s:
        server = s.scalar(sa.text("SHOW server_version"))
        vector = s.scalar(sa.text("SELECT extversion FROM pg_extension WHERE extname = 'vector'"))
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                                capture_output=True, text=True, check=False).stdout.strip())
    load = [round(x, 2) for x in os.getloadavg()]
    return {
        # What re-runs this measurement; bench/check_results.py requires command, a clean git_sha,
        # versions and load_average.
        "command": " ".join(["python", *sys.argv]),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{host_platform.machine()}, {os.cpu_count()} cores, no GPU",
        "load_average": load,
        "load_average_1_5_15_at_start": load,
        "git_sha": sha + ("-dirty" if dirty else ""),
        "versions": {"python": host_platform.python_version(), "postgres": server, "pgvector": vector,
                     **{p: version(p) for p in ("bm25s", "PyStemmer", "sentence-transformers", "torch", "numpy")}},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="the shared data folder (default: ../shared/data)")
    parser.add_argument("--collections", default=",".join(COLLECTIONS))
    parser.add_argument("--squad-queries", type=int, default=1000, help="seeded sample of SQuAD dev questions")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "retrieval_quality.json")
    args = parser.parse_args()
    names = [n for n in args.collections.split(",") if n]
    unknown = set(names) - set(COLLECTIONS)
    if unknown:
        raise SystemExit(f"unknown collection(s) {', '.join(sorted(unknown))}; use: {', '.join(COLLECTIONS)}")
    data = find_data(args.data)

    def log(message):
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    started = time.perf_counter()
    out = {"benchmark": "retrieval_quality", **environment(), "seed": args.seed, "depth_fetched": DEPTH,
           "squad_queries": args.squad_queries, "collections": {}}
    specs = build_collections(data, names, args.squad_queries, args.seed)
    for corpus_name in sorted({spec["collection"] for spec in specs.values()}):
        spec = next(s for s in specs.values() if s["collection"] == corpus_name)
        log(f"ingest {corpus_name} (idempotent)")
        ingest_corpus(corpus_name, spec["corpus"], data)
    for name, spec in specs.items():
        out["collections"][name] = evaluate_collection(name, spec, log)
    out["fusion_choice"] = choose(out["collections"])[:15]
    out["load_average_1_5_15_at_end"] = [round(x, 2) for x in os.getloadavg()]
    out["seconds"] = round(time.perf_counter() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
