"""`genloom embed`: a second (third, …) embedding model for a collection, next to the one it was ingested with.

    embed_collection("handbook", "/models/bge-small")      # resumable; its own HNSW index
    search(session, "refunds", collection="handbook", embedding_model="/models/bge-small")

Vectors of every model share the `embeddings` table (one row per chunk and model); each model
has its own partial HNSW index (`genloom.retrieval.vector`). The collection's own model (the
one ingest uses) stays the default for search; `embedding_model=` picks another that has
vectors for the collection. Chunks keep the size the ingest model chose: a model with a
shorter max sequence length than that truncates them (sentence-transformers cuts silently),
which `embed_collection` reports up front.

Embedding is resumable: each batch commits, and a re-run embeds only the current chunks that
have no vector from that model yet (new documents ingested since, or what an interrupted run
left). Retired and superseded versions are not embedded.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from genloom.errors import BadInput

_TODO_SQL = """
SELECT c.id, d.title, c.text
FROM chunks c
JOIN documents d ON d.id = c.document_id
WHERE d.collection_id = :c AND d.superseded_at IS NULL
  AND NOT EXISTS (SELECT 1 FROM embeddings e WHERE e.chunk_id = c.id AND e.embedding_model_id = :m)
ORDER BY c.id
LIMIT :n
"""

_COUNT_SQL = _TODO_SQL.replace("SELECT c.id, d.title, c.text", "SELECT count(*)").replace("ORDER BY c.id\nLIMIT :n", "")


@dataclasses.dataclass
class EmbedResult:
    collection: str
    model: str
    embedded: int = 0  # chunks embedded by this run
    already: int = 0  # current chunks that had a vector from this model before
    seconds: float = 0.0
    run_id: int | None = None
    truncation_warning: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"seconds": round(self.seconds, 3)}


def embed_collection(
    collection: str,
    model: str,
    *,
    batch: int = 256,
    progress: Callable[[int, int], None] | None = None,
    engine=None,
) -> EmbedResult:
    """Embed the collection's current chunks with `model` (a local sentence-transformers folder)."""
    from genloom import embeddings as embedding
    from genloom.db.engine import session_scope
    from genloom.db.tenancy import copy_in
    from genloom.retrieval.collections import get_collection
    from genloom.retrieval.vector import ensure_embedding_model
    from genloom.runs import tracked_run
    from ingest.chunking import embedding_text
    from ingest.writer import _psycopg

    if batch < 1:
        raise BadInput("--batch must be at least 1")
    from genloom.retrieval.embed_models import local_embedding_model

    with session_scope(engine) as s:
        model = local_embedding_model(s, model) or model  # a registered NAME[@V] → its folder
    try:
        name = embedding.model_name(model)
        dim = embedding.embedding_dim(model)
        max_tokens = embedding.max_tokens(model)
    except embedding.EmbeddingModelError as exc:
        raise BadInput(str(exc)) from None
    started = time.perf_counter()
    with session_scope(engine) as s:
        coll = get_collection(s, collection)
        emb = ensure_embedding_model(s, name, dim)
        collection_id, model_id = coll.id, emb.id
        if coll.embedding_model_id == model_id:
            raise BadInput(f"collection {collection!r} is already embedded with {name!r} (its ingest model)")
        total = s.scalar(sa.text(_COUNT_SQL), {"c": collection_id, "m": model_id})
        current = s.scalar(
            sa.text(
                "SELECT count(*) FROM chunks c JOIN documents d ON d.id = c.document_id "
                "WHERE d.collection_id = :c AND d.superseded_at IS NULL"
            ),
            {"c": collection_id},
        )
        longest = (
            s.scalar(
                sa.text(
                    "SELECT max(c.token_count) FROM chunks c JOIN documents d ON d.id = c.document_id "
                    "WHERE d.collection_id = :c AND d.superseded_at IS NULL"
                ),
                {"c": collection_id},
            )
            or 0
        )
    result = EmbedResult(collection=collection, model=name, already=current - total)
    if longest + 2 > max_tokens:
        result.truncation_warning = (
            f"{name} reads at most {max_tokens} tokens; the longest chunk has {longest} (ingest-model tokens): "
            "longer chunks are truncated for this model"
        )
    with tracked_run(
        "ingest",
        params={"action": "embed", "collection": collection, "embedding_model": name},
        collection_id=collection_id,
    ) as run:
        result.run_id = run.id
        while True:
            with session_scope(engine) as s:
                rows = s.execute(sa.text(_TODO_SQL), {"c": collection_id, "m": model_id, "n": batch}).all()
                if not rows:
                    break
                vectors = embedding.embed([embedding_text(r.title, r.text) for r in rows], name=model)
                with _psycopg(s).cursor() as cur:
                    # through a staging table: COPY cannot target a table under row-level security
                    with copy_in(cur, "embeddings", ["chunk_id", "embedding_model_id", "embedding"]) as copy:
                        copy.set_types(["int8", "int8", "vector"])
                        for row, vector in zip(rows, vectors):
                            copy.write_row((row.id, model_id, vector))
            result.embedded += len(rows)  # committed: a re-run starts after this batch
            if progress:
                progress(result.embedded, total)
        result.seconds = time.perf_counter() - started
        run.finish(summary=result.to_json())
    return result
