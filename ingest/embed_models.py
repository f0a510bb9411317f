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
from typing import Any

from genloom.errors import BadInput
from genloom.progress import ProgressFn, report as report_progress


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
    progress: ProgressFn | None = None,
    engine=None,
) -> EmbedResult:
    """Embed the collection's current chunks with `model` (a local sentence-transformers folder)."""
    from genloom import embeddings as embedding
    from genloom.db.bulk import copy_embeddings
    from genloom.db.engine import session_scope
    from genloom.db.queries import documents as queries
    from genloom.retrieval.collections import get_collection
    from genloom.retrieval.vector import ensure_embedding_model
    from genloom.runs import tracked_run
    from ingest.chunking import embedding_text

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
        total, current, longest = queries.embed_counts(s, collection_id, model_id)
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
                rows = queries.chunks_to_embed(s, collection_id, model_id, batch)
                if not rows:
                    break
                vectors = embedding.embed([embedding_text(r.title, r.text) for r in rows], name=model)
                copy_embeddings(s, model_id, [r.id for r in rows], vectors)
            result.embedded += len(rows)  # committed: a re-run starts after this batch
            report_progress(progress, f"embed {collection}", result.embedded, total)
        result.seconds = time.perf_counter() - started
        run.finish(summary=result.to_json())
    return result
