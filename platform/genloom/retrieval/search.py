"""The search API every other part of genloom uses (generation, the HTTP API, the CLI).

    from genloom.retrieval.search import search, SearchHit
    hits = search(session, "how does BM25 score?", collection="demo", k=5)

One SQL statement (`genloom.retrieval.hybrid.HYBRID_SQL`) does the BM25 branch, the
vector branch, the fusion, the filters and the per-document collapse; Python only
embeds the query and turns rows into `SearchHit`s.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from genloom.db.models import Collection
from genloom.db.tenancy import current_tenant, distributed_by_tenant, set_local
from genloom.errors import BadInput
from genloom.progress import ProgressFn, report as report_progress
from genloom.retrieval.collections import get_collection
from genloom.retrieval.embed_models import resolve_search_model
from genloom.retrieval.filters import to_jsonpath
from genloom.retrieval.hybrid import DEFAULT_BM25_WEIGHT, DEFAULT_FUSION, DEFAULT_RRF_K, render_sql
from genloom.retrieval.vector import HnswConfig, vector_literal

MODES = ("hybrid", "bm25", "vector")
FUSIONS = ("rrf", "weighted")
DEFAULT_K1 = 0.9  # Anserini's BM25 defaults for BEIR
DEFAULT_B = 0.4


@dataclasses.dataclass
class SearchHit:
    """A retrieved chunk: what search returns, and (numbered, as generation.backend.Source) what an
    answer cites. The one type of a retrieved chunk; the defaults serve chunks built by hand (tests)."""

    chunk_id: int
    document_id: int
    doc_id: str  # the document's external id (file path, BEIR _id, JSONL id)
    title: str | None
    text: str
    score: float | None = None  # fused score in hybrid mode, else the branch's own score
    bm25_rank: int | None = None
    bm25_score: float | None = None
    vector_rank: int | None = None
    vector_score: float | None = None  # cosine similarity
    document_version: int | None = None
    metadata: dict[str, Any] | None = None  # the document's metadata, updated with the chunk's
    rerank_score: float | None = None  # set by genloom.retrieval.rerank when a reranker reordered the hits

    @property
    def location(self) -> str:
        """'title · page 4 · §Installation › Verify' (see genloom.retrieval.locations)."""
        from genloom.retrieval.locations import format_location

        return format_location(self.title, self.doc_id, self.metadata)

    def to_dict(self) -> dict[str, Any]:
        from genloom.retrieval.locations import location_fields

        return {**dataclasses.asdict(self), **location_fields(self.metadata), "location": self.location}


# (texts, model name) -> L2-normalised vectors: genloom.embeddings.embed, or a running server's.
Embedder = Callable[[list[str], str], Any]


def _embed(texts: list[str], name: str) -> Any:
    from genloom.embeddings import embed, embed_query

    if len(texts) == 1:  # one query: through the small LRU cache (a server sees repeats)
        return [embed_query(texts[0], name=name)]
    return embed(texts, name=name)


def search(
    session: Session,
    query: str,
    *,
    collection: str | Collection,
    k: int = 10,
    mode: str = "hybrid",
    where: dict[str, Any] | None = None,
    by_document: bool = False,
    include_superseded: bool = False,
    query_embedding=None,
    fusion: str = DEFAULT_FUSION,
    rrf_k: int = DEFAULT_RRF_K,
    bm25_weight: float = DEFAULT_BM25_WEIGHT,
    depth: int | None = None,
    k1: float = DEFAULT_K1,
    b: float = DEFAULT_B,
    query_tf: bool = True,
    ef_search: int | None = None,
    embedder: Embedder | None = None,
    embedding_model: str | None = None,
    distinct_text: bool = True,
) -> list[SearchHit]:
    """Top-k chunks (or documents, with by_document) of `collection` for `query`.

    mode: 'hybrid' (BM25 + vector fused in SQL), 'bm25' or 'vector'.
    where: a metadata filter document (`genloom.retrieval.filters`), e.g. {"lang": "en"} or
    {"$or": [{"year": {"$gte": 2020}}, {"lang": {"$in": ["en", "fr"]}}]}.
    include_superseded: also search old document versions (default: current ones only).
    query_embedding: a precomputed query vector (batch mode embeds many queries at once).
    embedder: how to embed the query (default genloom.embeddings.embed; the CLI passes a
    running server's, api/local.py).
    fusion: 'weighted' (default: each branch's scores min-max normalised over its candidates,
    bm25_weight for BM25) or 'rrf' (reciprocal rank fusion, constant rrf_k). query_tf: weight a
    query lexeme by how often the query repeats it (as Lucene and bm25s do); False counts it once.
    depth: candidates per branch (default max(100, k), tripled with by_document so that k distinct
    documents survive the collapse). embedding_model: another model with vectors in this
    collection (`genloom embed`); default the collection's own. distinct_text: keep the best of
    chunks whose text is the same (case, spacing and punctuation ignored), so copies of one file do not take
    several of the k slots.
    """
    if query is None or not str(query).strip():
        raise BadInput("empty query: give the text to search for")
    if mode not in MODES:
        raise BadInput(f"unknown mode {mode!r}; use one of: {', '.join(MODES)}")
    if fusion not in FUSIONS:
        raise BadInput(f"unknown fusion {fusion!r}; use one of: {', '.join(FUSIONS)}")
    if k < 1:
        raise BadInput(f"k must be at least 1 (got {k})")
    if not 0.0 <= bm25_weight <= 1.0:
        raise BadInput(f"bm25_weight must be within [0, 1] (got {bm25_weight})")
    where_path = to_jsonpath(where)  # validates before any work
    # A caller that already holds the collection (generation.call.prepare) passes it: one lookup.
    coll = collection if isinstance(collection, Collection) else get_collection(session, collection)

    if depth is None:
        depth = max(100, k) * (3 if by_document else 1)
    if depth < 1:
        raise BadInput(f"depth must be at least 1 (got {depth})")
    model = resolve_search_model(session, coll.id, coll.embedding_model_id, embedding_model)
    use_vector = mode in ("hybrid", "vector")
    if use_vector and model is None:
        if mode == "vector":
            raise BadInput(f"collection {coll.name!r} has no embeddings yet; ingest documents first")
        use_vector = False

    embedding_text = None
    if use_vector and model is not None:  # (use_vector is False when there is no model, above)
        if query_embedding is None:
            query_embedding = (embedder or _embed)([query], model.name)[0]
        if len(query_embedding) != model.dim:
            raise BadInput(f"query embedding has dimension {len(query_embedding)}, the collection's model {model.dim}")
        embedding_text = vector_literal(query_embedding)
        ef = max(ef_search or HnswConfig().ef_search, 1)
        # Transaction-local: iterative scan so filtered queries still fill the branch.
        set_local(session, {"hnsw.ef_search": str(min(ef, 1000)), "hnsw.iterative_scan": "relaxed_order"})

    by_tenant = distributed_by_tenant(session)
    sql = render_sql(
        dim=model.dim if model else None,
        model_id=model.id if model else None,
        current_only=not include_superseded,
        filtered=where_path is not None,
        by_tenant=by_tenant,
    )
    params = {
        **({"tenant": current_tenant()} if by_tenant else {}),
        "query": query,
        "ts_config": coll.text_search_config,
        "query_embedding": embedding_text,
        "collection_id": coll.id,
        "where": where_path,
        "k1": float(k1),
        "b": float(b),
        "query_tf": bool(query_tf),
        "bm25_depth": depth if mode in ("hybrid", "bm25") else 0,
        "vector_depth": depth if use_vector else 0,
        "mode": mode,
        "fusion": fusion,
        "rrf_k": float(rrf_k),
        "bm25_weight": float(bm25_weight),
        "by_document": bool(by_document),
        "distinct_text": bool(distinct_text),
        "k": int(k),
    }
    rows = session.execute(sa.text(sql), params).mappings().all()
    return [
        SearchHit(
            chunk_id=row["chunk_id"],
            document_id=row["document_id"],
            doc_id=row["external_id"],
            title=row["title"],
            text=row["text"],
            score=float(row["score"]) if row["score"] is not None else 0.0,
            bm25_rank=row["bm25_rank"],
            bm25_score=float(row["bm25_score"]) if row["bm25_score"] is not None else None,
            vector_rank=row["vector_rank"],
            vector_score=float(row["vector_score"]) if row["vector_score"] is not None else None,
            document_version=row["version"],
            metadata={**(row["document_metadata"] or {}), **(row["chunk_metadata"] or {})},
        )
        for row in rows
    ]


__all__ = ["SearchHit", "search", "search_many", "MODES", "FUSIONS"]


def search_many(
    session: Session,
    queries: list[tuple[str, str]],
    *,
    collection: str,
    mode: str = "hybrid",
    embed_batch_size: int = 64,
    progress: ProgressFn | None = None,
    embedder: Embedder | None = None,
    **kwargs,
):
    """Yield (query_id, hits) for many (id, text) queries, embedding them in batches first."""
    coll = get_collection(session, collection)
    model = resolve_search_model(session, coll.id, coll.embedding_model_id, kwargs.get("embedding_model"))
    embeddings = [None] * len(queries)
    if mode in ("hybrid", "vector") and model is not None and queries:
        texts = [text for _, text in queries]
        if embedder is None:
            from genloom.embeddings import embed

            embeddings = list(embed(texts, name=model.name, batch_size=embed_batch_size))
        else:
            embeddings = list(embedder(texts, model.name))
    for i, ((query_id, text), vector) in enumerate(zip(queries, embeddings)):
        yield query_id, search(session, text, collection=collection, mode=mode, query_embedding=vector, **kwargs)
        report_progress(progress, "queries", i + 1, len(queries))
