"""Collections: a named set of documents with one text-search config and one embedding model."""

from __future__ import annotations

import re

import sqlalchemy as sa
from sqlalchemy.orm import Session

from genloom.db.models import Collection
from genloom.db.tenancy import current_tenant, distributed_by_tenant
from genloom.errors import BadInput, NotFound

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


def get_collection(session: Session, name: str) -> Collection:
    """The collection called `name`, or NotFound naming the ones that exist."""
    query = sa.select(Collection).where(Collection.name == name)
    if distributed_by_tenant(session):  # a Citus cluster: one shard (the policy filters the same rows)
        query = query.where(Collection.tenant == current_tenant())
    found = session.scalar(query)
    if found is None:
        names = session.scalars(sa.select(Collection.name).order_by(Collection.name).limit(10)).all()
        known = f"; existing: {', '.join(names)}" if names else "; there are no collections yet"
        raise NotFound(
            f"collection {name!r} not found{known}", cli_hint=f"create it with: genloom ingest PATH --collection {name}"
        )
    return found


def validate_name(name: str) -> str:
    if not name or not _NAME.match(name):
        raise BadInput(
            f"invalid collection name {name!r}: use 1-128 letters, digits, '_', '-', '.', ':' (starting with a letter or digit)"
        )
    return name


def check_text_search_config(session: Session, config: str) -> str:
    exists = session.scalar(sa.text("SELECT 1 FROM pg_ts_config WHERE cfgname = :c"), {"c": config})
    if not exists:
        known = session.scalars(sa.text("SELECT cfgname FROM pg_ts_config ORDER BY cfgname")).all()
        raise BadInput(f"unknown text-search config {config!r}; Postgres has: {', '.join(known)}")
    return config


def ensure_collection(
    session: Session,
    name: str,
    *,
    text_search_config: str = "english",
    embedding_model_id: int | None = None,
) -> Collection:
    """Get or create a collection (safe against a concurrent creator), with its BM25 statistics row.

    An existing collection keeps its text-search config; a different embedding model is an
    error, because its vectors would not be comparable with the ones already stored.
    """
    validate_name(name)
    check_text_search_config(session, text_search_config)
    session.execute(
        sa.text(
            "INSERT INTO collections (name, text_search_config, embedding_model_id) "
            "VALUES (:n, :c, :m) ON CONFLICT (tenant, name) DO NOTHING"  # names are unique per tenant (0013)
        ),
        {"n": name, "c": text_search_config, "m": embedding_model_id},
    )
    collection = session.scalar(sa.select(Collection).where(Collection.name == name))
    assert collection is not None
    session.refresh(collection)
    if embedding_model_id is not None:
        if collection.embedding_model_id is None:
            collection.embedding_model_id = embedding_model_id
            session.flush()
        elif collection.embedding_model_id != embedding_model_id:
            model = session.scalar(
                sa.text("SELECT name FROM embedding_models WHERE id = :i"), {"i": collection.embedding_model_id}
            )
            raise BadInput(
                f"collection {name!r} is embedded with {model!r}; ingest with that model or use another collection"
            )
    session.execute(
        sa.text("INSERT INTO retrieval_collection_stats (collection_id) VALUES (:c) ON CONFLICT DO NOTHING"),
        {"c": collection.id},
    )
    return collection


def collection_summary(session: Session, collection: Collection) -> dict:
    """Counts a person wants to see: current documents and chunks, versions, BM25 statistics."""
    row = (
        session.execute(
            sa.text(
                """
            SELECT
              (SELECT count(*) FROM documents WHERE collection_id = :c AND superseded_at IS NULL) AS documents,
              (SELECT count(*) FROM documents WHERE collection_id = :c) AS document_versions,
              s.n_chunks AS chunks,
              s.total_length::float8 / greatest(s.n_chunks, 1) AS avg_chunk_length,
              (SELECT count(*) FROM retrieval_term_stats WHERE collection_id = :c AND df > 0) AS terms
            FROM retrieval_collection_stats s WHERE s.collection_id = :c
            """
            ),
            {"c": collection.id},
        )
        .mappings()
        .first()
    )
    return {
        "collection": collection.name,
        "text_search_config": collection.text_search_config,
        **(dict(row) if row else {}),
        "reader": collection_reader(session, collection),
    }


def list_collections(session: Session, *, after: str | None = None, limit: int | None = None) -> list[dict]:
    """Every collection with its current/retired document counts, chunks and embedding model, by name.

    `after`/`limit` page by keyset: the collections named after `after`, at most `limit` of them.
    """
    rows = session.execute(
        sa.text(
            """
            SELECT c.id, c.name, c.text_search_config, m.name AS embedding_model, c.created_at,
                   count(d.id) FILTER (WHERE d.superseded_at IS NULL) AS documents,
                   count(d.id) FILTER (WHERE d.retired_at IS NOT NULL) AS retired,
                   coalesce(s.n_chunks, 0) AS chunks,
                   max(d.created_at) AS last_sync
            FROM collections c
            LEFT JOIN embedding_models m ON m.id = c.embedding_model_id
            LEFT JOIN documents d ON d.collection_id = c.id
            LEFT JOIN retrieval_collection_stats s ON s.collection_id = c.id
            WHERE c.name > coalesce(CAST(:after AS text), '')
            GROUP BY c.id, m.name, s.n_chunks
            ORDER BY c.name
            LIMIT :limit
            """
        ),
        {"after": after, "limit": limit},  # LIMIT NULL is no limit
    ).mappings()
    return [dict(r) for r in rows]


def rename_collection(session: Session, name: str, new_name: str) -> Collection:
    validate_name(new_name)
    collection = get_collection(session, name)
    if session.scalar(sa.select(Collection.id).where(Collection.name == new_name)) is not None:
        raise BadInput(f"collection {new_name!r} already exists; choose another name")
    collection.name = new_name
    session.flush()
    return collection


def datasets_from_collection(session: Session, name: str) -> list[str]:
    """'dataset@version' for every dataset version imported from the collection called `name`."""
    return list(
        session.scalars(
            sa.text(
                """
                SELECT ds.name || '@' || v.version
                FROM dataset_versions v
                JOIN datasets ds ON ds.id = v.dataset_id
                JOIN runs r ON r.id = v.created_by_run_id
                WHERE r.kind = 'import' AND r.params->>'source' = 'collection' AND r.params->>'collection' = :n
                ORDER BY 1
                """
            ),
            {"n": name},
        )
    )


def set_defaults(
    session: Session,
    name: str,
    *,
    embedding_model: str | None = None,
    reranker: str | None = None,
    rerank_depth: int | None = None,
    no_reranker: bool = False,
    reader: str | None = None,
    no_reader: bool = False,
    eval_run: int | None = None,
) -> dict:
    """Switch a collection's default embedding model, reranker and/or reader; audited with the eval run
    that justified it.

    The embedding model must already have a vector for every current chunk (`genloom embed`), so
    search never mixes two models' vectors; the reranker must be a registered cross-encoder and the
    reader a registered span reader (`genloom train reader`: ask answers with it when no --model is given).
    """
    from genloom import audit
    from genloom.db.models import Model, Run
    from genloom.registry import resolve_model
    from genloom.retrieval.embed_models import resolve_search_model

    if (embedding_model, reranker, rerank_depth, reader) == (None,) * 4 and not (no_reranker or no_reader):
        raise BadInput(
            "nothing to set: give --embedding-model, --reranker, --rerank-depth, --no-reranker, --reader or --no-reader"
        )
    if reranker and no_reranker:
        raise BadInput("give either --reranker MODEL or --no-reranker, not both")
    if reader and no_reader:
        raise BadInput("give either --reader MODEL or --no-reader, not both")
    if rerank_depth is not None and rerank_depth < 1:
        raise BadInput(f"--rerank-depth must be at least 1 (got {rerank_depth})")
    coll = session.scalar(sa.select(Collection).where(Collection.name == name).with_for_update())
    if coll is None:
        get_collection(session, name)  # the helpful NotFound
    assert coll is not None
    if eval_run is not None:
        run = session.get(Run, eval_run)
        if run is None or run.kind != "evaluate" or run.status != "succeeded":
            raise BadInput(f"--eval-run {eval_run} is not a succeeded evaluate run (see: genloom runs list)")
    before = {
        "embedding_model_id": coll.embedding_model_id,
        "reranker_model_id": coll.reranker_model_id,
        "reader_model_id": coll.reader_model_id,
    }
    changes: dict = {}
    if embedding_model is not None:
        model = resolve_search_model(session, coll.id, coll.embedding_model_id, embedding_model)
        assert model is not None
        missing = session.scalar(
            sa.text(
                "SELECT count(*) FROM chunks c JOIN documents d ON d.id = c.document_id "
                "WHERE d.collection_id = :c AND d.superseded_at IS NULL AND NOT EXISTS "
                "(SELECT 1 FROM embeddings e WHERE e.chunk_id = c.id AND e.embedding_model_id = :m)"
            ),
            {"c": coll.id, "m": model.id},
        )
        if missing:
            raise BadInput(
                f"{missing} current chunks of {name!r} have no vector from {model.name!r}: "
                f"run genloom embed --collection {name} --model {embedding_model} first"
            )
        coll.embedding_model_id = model.id
        changes["embedding_model"] = model.name
    if reranker is not None:
        row = resolve_model(session, reranker)
        if row.architecture != "cross-encoder":
            raise BadInput(f"{row.name}@{row.version} is a {row.architecture}, not a reranker (cross-encoder)")
        coll.reranker_model_id = row.id
        changes["reranker"] = f"{row.name}@{row.version}"
    if no_reranker:
        coll.reranker_model_id = None
        changes["reranker"] = None
    if rerank_depth is not None:
        coll.rerank_depth = rerank_depth
        changes["rerank_depth"] = rerank_depth
    if reader is not None:
        row = resolve_model(session, reader)
        if row.architecture != "span-reader":
            raise BadInput(
                f"{row.name}@{row.version} is a {row.architecture}, not a reader (span-reader: genloom train reader)"
            )
        coll.reader_model_id = row.id
        changes["reader"] = f"{row.name}@{row.version}"
    if no_reader:
        coll.reader_model_id = None
        changes["reader"] = None
    session.flush()
    detail = {"before": before, "set": changes, "eval_run": eval_run}
    audit.record(session, "collection.set_defaults", name, detail=detail)
    reranker_ref = session.execute(
        sa.select(Model.name, Model.version).where(Model.id == coll.reranker_model_id)
    ).first()
    reader_ref = collection_reader(session, coll)
    return {
        "collection": name,
        "set": changes,
        "eval_run": eval_run,
        "embedding_model": session.scalar(
            sa.text("SELECT name FROM embedding_models WHERE id = :i"), {"i": coll.embedding_model_id}
        ),
        "reranker": f"{reranker_ref[0]}@{reranker_ref[1]}" if reranker_ref else None,
        "rerank_depth": coll.rerank_depth,
        "reader": reader_ref,
    }


def collection_reader(session: Session, collection: Collection) -> str | None:
    """The collection's default reader (NAME@V), set by `genloom collections set --reader`, or None."""
    from genloom.db.models import Model

    if collection.reader_model_id is None:
        return None
    row = session.execute(sa.select(Model.name, Model.version).where(Model.id == collection.reader_model_id)).first()
    return f"{row.name}@{row.version}" if row else None
