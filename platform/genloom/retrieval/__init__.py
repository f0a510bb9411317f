"""Retrieval inside Postgres: true BM25 over postings, HNSW vectors, and their fusion in SQL.

- `collections`: named collections (text-search config, embedding model)
- `bm25`: postings and statistics maintenance (called by ingestion)
- `vector`: embedding models and their per-model HNSW indexes
- `hybrid`: the one SQL statement that scores, fuses and filters
- `search`: the public API, `search(session, query, collection=...) -> list[SearchHit]`
- `beir`: BEIR files and nDCG@10, Recall@100, MRR@10 (the evaluation job is genloom.evaluation.beir)
"""
