"""Demo step 2: ingest the bundled sample documents into collection `demo`, then search them."""

from __future__ import annotations

from pathlib import Path

TITLE = "retrieval: ingest sample documents into 'demo', hybrid search (BM25 + vectors fused in SQL)"

SAMPLE_DOCS = Path(__file__).resolve().parents[1] / "data" / "sample_docs"
QUESTION = "How does genloom combine keyword and vector search results?"


def run(ctx) -> dict:
    from genloom.db.engine import session_scope
    from genloom.retrieval.search import search
    from ingest.pipeline import IngestOptions, ingest

    # Idempotent: a second demo run finds every document unchanged and writes nothing.
    result = ingest([SAMPLE_DOCS], IngestOptions(collection="demo"))
    with session_scope() as session:
        hits = search(session, QUESTION, collection="demo", k=3)
    return {
        "collection": "demo",
        "ingested": result.documents,
        "unchanged": result.unchanged,
        "chunks": result.chunks,
        "query": QUESTION,
        "rows": [
            {
                "rank": rank,
                "doc": Path(h.doc_id).name,
                "title": h.title,
                "score": round(h.score, 4) if h.score is not None else None,
                "bm25_rank": h.bm25_rank,
                "vector_rank": h.vector_rank,
                "text": h.text[:160],
            }
            for rank, h in enumerate(hits, 1)
        ],
    }
