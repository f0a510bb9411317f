"""Hybrid search latency at 100k chunks, and HNSW recall@10 against exact search.

    python bench/retrieval_latency.py [--chunks 100000] [--queries 200] [--ef-search 100]

Builds (once; reused on later runs) a collection `bench-latency` of synthetic chunks:
text drawn from a Zipf-distributed vocabulary (so BM25 postings look like real text)
and 384-d unit vectors from a 24-d latent space plus noise (so the HNSW graph has the
structure real embeddings have; uniformly random 384-d vectors have none). Then it times
`search()` with a precomputed query vector, so the SQL alone is measured, times the
query embedding separately with the real model, and times the two together end to end
(embed the question, then search: what a user's query costs). Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sqlalchemy as sa  # noqa: E402

COLLECTION = "bench-latency"
MODEL = "bench-synthetic-384"
DIM = 384


def vocabulary(size: int, rng) -> list[str]:
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = set()
    while len(words) < size:
        words.add("".join(rng.choice(letters, size=rng.integers(4, 10))))
    return sorted(words)


def make_vectors(n: int, rng, basis) -> np.ndarray:
    latent = rng.normal(size=(n, basis.shape[0])).astype(np.float32)
    v = latent @ basis + 0.15 * rng.normal(size=(n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def basis_path() -> Path:
    """The latent basis of the vectors, kept beside the store it built (not in a /tmp shared by every run)."""
    from genloom.config import genloom_home

    return genloom_home() / "bench-cache" / "latency_basis.npy"


def build(n_chunks: int, rng) -> None:
    from genloom.db.engine import session_scope
    from genloom.retrieval import bm25
    from genloom.retrieval.collections import ensure_collection
    from genloom.retrieval.vector import ensure_embedding_model, hnsw_index_name
    from genloom.db.bulk import PreparedDocument, write_documents

    with session_scope() as s:
        model = ensure_embedding_model(s, MODEL, DIM)
        coll = ensure_collection(s, COLLECTION, embedding_model_id=model.id)
        have = s.scalar(sa.text("SELECT n_chunks FROM retrieval_collection_stats WHERE collection_id = :c"), {"c": coll.id})
        model_id, coll_id = model.id, coll.id
    if have >= n_chunks:
        return
    if have:
        raise SystemExit(f"collection {COLLECTION} is half-built ({have} chunks); delete it and rerun")
    words = np.array(vocabulary(20000, rng))
    ranks = np.arange(1, len(words) + 1)
    p = 1.0 / ranks ** 1.07
    p /= p.sum()
    basis = rng.normal(size=(24, DIM)).astype(np.float32)
    basis_path().parent.mkdir(parents=True, exist_ok=True)
    np.save(basis_path(), basis)
    with session_scope() as s:  # bulk-load first, build the HNSW graph once at the end (much faster)
        s.execute(sa.text(f"DROP INDEX IF EXISTS {hnsw_index_name(model_id)}"))
        s.execute(sa.text("ANALYZE"))
    started = time.perf_counter()
    batch = 5000
    for start in range(0, n_chunks, batch):
        count = min(batch, n_chunks - start)
        vectors = make_vectors(count, rng, basis)
        docs = []
        lengths = rng.integers(40, 120, size=count)
        tokens = rng.choice(len(words), size=(count, 120), p=p)  # one draw for the batch: fast
        for i in range(count):
            length = int(lengths[i])
            text = " ".join(words[tokens[i, :length]]) + "."
            docs.append(PreparedDocument(
                external_id=f"syn-{start + i}", version=1, sha256=f"{start + i:064x}", title=None, uri=None,
                mime_type="text/plain", metadata={"shard": str((start + i) % 100)},
                chunk_texts=[text], token_counts=[length], vectors=vectors[i : i + 1],
            ))
        with session_scope() as s:
            bm25.lock_collection_stats(s, coll_id)
            _, chunk_ids = write_documents(s, coll_id, model_id, docs)
            bm25.index_chunks(s, coll_id, "english", chunk_ids)
        print(f"loaded {start + count} chunks in {time.perf_counter() - started:.0f}s", file=sys.stderr, flush=True)
    from genloom.db.engine import get_engine

    with get_engine().connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("SET maintenance_work_mem = '1GB'"))
        t0 = time.perf_counter()
        from genloom.retrieval.vector import HnswConfig

        hnsw = HnswConfig()
        conn.execute(sa.text(
            f"CREATE INDEX {hnsw_index_name(model_id)} ON embeddings USING hnsw "
            f"((embedding::vector({DIM})) vector_cosine_ops) WITH (m = {hnsw.m}, ef_construction = {hnsw.ef_construction}) "
            f"WHERE embedding_model_id = {model_id}"
        ))
        print(f"HNSW build {time.perf_counter() - t0:.0f}s", file=sys.stderr, flush=True)
        conn.execute(sa.text("VACUUM ANALYZE"))


def percentile(values, q):
    return float(np.percentile(np.array(values) * 1000, q))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--ef-search", type=int, default=100)
    parser.add_argument("--out", default=None, help="also write the JSON to bench/results/OUT")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from benchlib import environment, write_result

    measured_on = environment()  # commit and load at the start: what runs is the code of this commit
    rng = np.random.default_rng(0)
    build(args.chunks, rng)

    from genloom.db.engine import session_scope
    from genloom.retrieval.search import search

    basis = np.load(basis_path())
    with session_scope() as s:
        vocab_rows = s.execute(sa.text(
            "SELECT term FROM retrieval_term_stats ts JOIN collections c ON c.id = ts.collection_id "
            "WHERE c.name = :n AND df BETWEEN 50 AND 5000 ORDER BY term"), {"n": COLLECTION}).scalars().all()
    qrng = np.random.default_rng(1)
    queries = [" ".join(qrng.choice(vocab_rows, size=int(qrng.integers(2, 6)))) for _ in range(args.queries)]
    qvecs = make_vectors(args.queries, qrng, basis)

    import os

    report: dict = {"chunks": args.chunks, "queries": args.queries, "ef_search": args.ef_search,
                    "load_average_1min_at_start": round(os.getloadavg()[0], 2), "cpus": os.cpu_count()}
    with session_scope() as s:
        for q, v in zip(queries[:20], qvecs[:20]):  # warm caches
            search(s, q, collection=COLLECTION, k=10, query_embedding=v, ef_search=args.ef_search)
        for mode in ("hybrid", "bm25", "vector"):
            times = []
            for q, v in zip(queries, qvecs):
                t0 = time.perf_counter()
                search(s, q, collection=COLLECTION, mode=mode, k=10, query_embedding=v, ef_search=args.ef_search)
                times.append(time.perf_counter() - t0)
            report[f"{mode}_ms"] = {"p50": round(percentile(times, 50), 2), "p95": round(percentile(times, 95), 2)}
        times = []
        for q, v in zip(queries, qvecs):  # 1 %-selective metadata filter
            t0 = time.perf_counter()
            hits = search(s, q, collection=COLLECTION, k=10, query_embedding=v, where={"shard": "7"},
                          ef_search=args.ef_search)
            times.append(time.perf_counter() - t0)
            assert len(hits) == 10
        report["hybrid_filtered_1pct_ms"] = {"p50": round(percentile(times, 50), 2), "p95": round(percentile(times, 95), 2)}

        # HNSW recall@10 against exact search (index scans off = sequential scan + sort).
        model_id = s.scalar(sa.text("SELECT id FROM embedding_models WHERE name = :n"), {"n": MODEL})
        exact_sql = sa.text(
            f"SELECT e.chunk_id FROM embeddings e WHERE e.embedding_model_id = {model_id} "
            f"ORDER BY (e.embedding::vector({DIM})) <=> CAST(:q AS vector({DIM})) LIMIT 10")
        recalls: dict[int, list[float]] = {}
        for ef in sorted({40, args.ef_search, 200}):
            recalls[ef] = []
        n_recall = min(100, args.queries)
        for v in qvecs[:n_recall]:
            lit = "[" + ",".join(f"{x:.7g}" for x in v) + "]"
            s.execute(sa.text("SET LOCAL enable_indexscan = off"))
            exact = set(s.execute(exact_sql, {"q": lit}).scalars())
            s.execute(sa.text("SET LOCAL enable_indexscan = on"))
            for ef in recalls:
                hits = search(s, "unused", collection=COLLECTION, mode="vector", k=10, depth=10, query_embedding=v, ef_search=ef)
                recalls[ef].append(len(exact & {h.chunk_id for h in hits}) / 10)
        report["hnsw_recall@10"] = {str(ef): round(float(np.mean(r)), 4) for ef, r in recalls.items()}

    # The query embedding, measured apart: the real model on short questions.
    from genloom.embeddings import embed

    embed(["warm up"])
    times = []
    for q in queries[:50]:
        t0 = time.perf_counter()
        embed([q])
        times.append(time.perf_counter() - t0)
    report["query_embedding_ms"] = {"p50": round(percentile(times, 50), 2), "p95": round(percentile(times, 95), 2)}

    # End to end, as a user's query runs: embed the question with the real model, then search.
    with session_scope() as s:
        times = []
        for q in queries:
            t0 = time.perf_counter()
            v = embed([q])[0]
            search(s, q, collection=COLLECTION, k=10, query_embedding=v, ef_search=args.ef_search)
            times.append(time.perf_counter() - t0)
    report["hybrid_end_to_end_with_query_embedding_ms"] = {"p50": round(percentile(times, 50), 2),
                                                           "p95": round(percentile(times, 95), 2)}
    report["load_average_1min_at_end"] = round(os.getloadavg()[0], 2)
    if args.out:
        write_result(args.out, {"environment": measured_on, **report})
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
