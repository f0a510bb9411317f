"""Documents users manage: retire (sync, delete), purge, update metadata, list and show.

Every function works inside the caller's transaction and keeps the BM25 statistics exact:
a document leaves them when it stops being current (`bm25.retire_documents`). Writers to a
collection serialise on its statistics row (`bm25.lock_collection_stats`), as ingest does.

Retiring keeps the rows (a generation that cited a chunk can still show it); purging deletes
them, and each generation source that pointed at a purged chunk keeps a tombstone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from genloom.db.tenancy import current_tenant, distributed_by_tenant
from genloom.errors import BadInput, NotFound
from genloom.retrieval import bm25


def retire_documents(
    session: Session, collection_id: int, document_ids: Sequence[int], *, run_id: int | None
) -> list[int]:
    """Take current documents out of search and BM25, keeping their rows; return the ids retired."""
    if not document_ids:
        return []
    retired = list(
        session.scalars(
            sa.text(
                """
                UPDATE documents SET superseded_at = now(), retired_at = now(), retired_by_run_id = :run
                WHERE collection_id = :c AND id = ANY(:ids) AND superseded_at IS NULL
                RETURNING id
                """
            ),
            {"c": collection_id, "ids": list(document_ids), "run": run_id},
        )
    )
    bm25.retire_documents(session, collection_id, retired)
    return retired


# --------------------------------------------------------------------------- reading


def _status(version: Any) -> str:
    """current, superseded, retired, or incomplete (a large file's interrupted ingest; re-run it to finish)."""
    if version["incomplete"]:
        return "incomplete"
    if version["superseded_at"] is None:
        return "current"
    return "retired" if version["retired_at"] else "superseded"


def _document_versions(session: Session, collection_id: int, ref: str) -> list[Any]:
    """All versions of the document `ref` names: a document id (any version) or an external id."""
    by_external = (
        session.execute(
            sa.text("SELECT * FROM documents WHERE collection_id = :c AND external_id = :e ORDER BY version"),
            {"c": collection_id, "e": ref},
        )
        .mappings()
        .all()
    )
    if by_external:
        return list(by_external)
    if ref.isdigit():
        external = session.scalar(
            sa.text("SELECT external_id FROM documents WHERE collection_id = :c AND id = :i"),
            {"c": collection_id, "i": int(ref)},
        )
        if external is not None:
            return _document_versions(session, collection_id, external)
    # A file path as the user typed it: documents of files are keyed by their resolved path.
    import os

    resolved = os.path.realpath(ref)
    if resolved != ref:
        found = (
            session.execute(
                sa.text("SELECT * FROM documents WHERE collection_id = :c AND external_id = :e ORDER BY version"),
                {"c": collection_id, "e": resolved},
            )
            .mappings()
            .all()
        )
        if found:
            return list(found)
    raise NotFound(f"no document {ref!r} in this collection (give its id or external id; see: genloom documents list)")


def list_documents(
    session: Session,
    collection_id: int,
    *,
    status: str = "current",
    where: dict | None = None,
    limit: int = 100,
    offset: int = 0,
    after: str | None = None,
) -> list[dict[str, Any]]:
    """Documents with chunk counts, by status: "current" (with incomplete ones: an interrupted
    large file), "retired", or "any" (both); `after` an external id: the page that follows it (keyset)."""
    if status not in ("current", "retired", "any"):
        raise ValueError(f"status must be current, retired or any (got {status!r})")
    from genloom.retrieval.filters import to_jsonpath

    path = to_jsonpath(where)
    # On a Citus cluster the chunk count is a correlated subquery across two distributed tables:
    # Citus plans it only when it joins on the distribution column and the tenant is a parameter
    # (a router query on the tenant's shard; the policies keep the same rows).
    tenant_sql, tenant = "", {}
    if distributed_by_tenant(session):
        tenant_sql, tenant = " AND c.tenant = d.tenant", {"tenant": current_tenant()}
    rows = session.execute(
        sa.text(
            f"""
            SELECT d.id, d.external_id, d.version, d.title, d.mime_type, d.metadata, d.created_at, d.retired_at,
                   d.superseded_at, d.incomplete,
                   (SELECT count(*) FROM chunks c WHERE c.document_id = d.id{tenant_sql}) AS chunks
            FROM documents d
            WHERE d.collection_id = :c{" AND d.tenant = :tenant" if tenant else ""}
              AND CASE :status
                    WHEN 'current' THEN d.superseded_at IS NULL OR d.incomplete
                    WHEN 'retired' THEN d.retired_at IS NOT NULL
                    ELSE d.superseded_at IS NULL OR d.incomplete OR d.retired_at IS NOT NULL
                  END
              AND (CAST(:where AS jsonpath) IS NULL OR d.metadata @@ CAST(:where AS jsonpath))
              AND (CAST(:after AS text) IS NULL OR d.external_id > CAST(:after AS text))
            ORDER BY d.external_id, d.version
            LIMIT :limit OFFSET :offset
            """
        ),
        {"c": collection_id, "status": status, "where": path, "limit": limit, "offset": offset, "after": after}
        | tenant,
    ).mappings()
    return [
        {k: v for k, v in row.items() if k not in ("superseded_at", "incomplete")} | {"status": _status(row)}
        for row in rows
    ]


def document_detail(session: Session, collection_id: int, ref: str) -> dict[str, Any]:
    """Every version of a document, its chunks, and the generations that cited it."""
    versions = _document_versions(session, collection_id, ref)
    ids = [v["id"] for v in versions]
    cited = session.execute(
        sa.text(
            """
            SELECT gs.generation_id, count(*) AS sources
            FROM generation_sources gs JOIN chunks c ON c.id = gs.chunk_id
            WHERE c.document_id = ANY(:ids) GROUP BY gs.generation_id ORDER BY gs.generation_id
            """
        ),
        {"ids": ids},
    ).all()
    chunks: dict[int, int] = dict(
        session.execute(
            sa.text("SELECT document_id, count(*) FROM chunks WHERE document_id = ANY(:ids) GROUP BY document_id"),
            {"ids": ids},
        ).all()
    )
    latest = versions[-1]
    return {
        "external_id": latest["external_id"],
        "title": latest["title"],
        "status": _status(latest),
        "metadata": latest["metadata"],
        "user_metadata": latest["user_metadata"],
        "versions": [
            {
                "id": v["id"],
                "version": v["version"],
                "sha256": v["sha256"],
                "created_at": v["created_at"],
                "superseded_at": v["superseded_at"],
                "retired_at": v["retired_at"],
                "status": _status(v),
                "chunks": chunks.get(v["id"], 0),
            }
            for v in versions
        ],
        "cited_by_generations": [row.generation_id for row in cited],
    }


# --------------------------------------------------------------------------- changing


def purge_impact(session: Session, document_ids: Sequence[int]) -> dict[str, Any]:
    """What purging these document rows breaks: the generations whose sources point at their chunks."""
    row = session.execute(
        sa.text(
            """
            SELECT count(DISTINCT c.id) AS chunks, count(DISTINCT gs.generation_id) AS generations,
                   coalesce(array_agg(DISTINCT gs.generation_id) FILTER (WHERE gs.generation_id IS NOT NULL), '{}') AS ids
            FROM chunks c LEFT JOIN generation_sources gs ON gs.chunk_id = c.id
            WHERE c.document_id = ANY(:ids)
            """
        ),
        {"ids": list(document_ids)},
    ).one()
    return {
        "documents": len(document_ids),
        "chunks": row.chunks,
        "generations_citing": row.generations,
        "generation_ids": sorted(row.ids)[:100],
    }


# The tombstones are built in a CTE, not in the UPDATE's SET: jsonb_build_object is STABLE, and Citus
# refuses an UPDATE that calls a STABLE function on columns. (One node inlines the CTE: the same plan.)
# The source's chunk_id is nulled here too: one node's foreign key would do it when the chunk goes
# (ON DELETE SET NULL), but on a cluster that reference is soft (genloom.db.distribute).
# {t_c}, {t_gs}: on a Citus cluster each table is filtered on `:tenant` (_write_tombstones).
_TOMBSTONE_TEMPLATE = """
WITH purged AS (
    SELECT c.id AS chunk_id,
           jsonb_build_object(
               'external_id', d.external_id, 'title', d.title, 'version', d.version, 'collection', col.name,
               'chunk_id', c.id, 'purged_at', now(), 'purged_by_run_id', CAST(:run AS bigint)) AS tombstone
    FROM chunks c
    JOIN documents d ON d.id = c.document_id
    JOIN collections col ON col.id = d.collection_id
    WHERE c.document_id = ANY(:ids){t_c}
)
UPDATE generation_sources gs
SET tombstone = purged.tombstone, chunk_id = NULL
FROM purged
WHERE gs.chunk_id = purged.chunk_id{t_gs}
"""
_TOMBSTONE_SQL = _TOMBSTONE_TEMPLATE.format(t_c="", t_gs="")


def _write_tombstones(session: Session, document_ids: Sequence[int], run_id: int | None) -> None:
    """Each generation source citing a chunk of these documents keeps a tombstone of what it cited.

    On a Citus cluster (every table distributed by tenant, genloom.db.distribute) each table is
    filtered on the tenant too, so the statement is a router query on the tenant's shard (Citus
    routes on constants and parameters only; the policies keep the same rows)."""
    sql, tenant = _TOMBSTONE_SQL, {}
    if distributed_by_tenant(session):
        sql = _TOMBSTONE_TEMPLATE.format(
            t_c=" AND c.tenant = :tenant AND d.tenant = :tenant AND col.tenant = :tenant",
            t_gs=" AND gs.tenant = :tenant",
        )
        tenant = {"tenant": current_tenant()}
    session.execute(sa.text(sql), {"ids": list(document_ids), "run": run_id, **tenant})


def purge_documents(session: Session, collection_id: int, document_ids: Sequence[int], *, run_id: int | None) -> dict:
    """Delete document rows for good: current ones leave BM25 first; cited sources keep a tombstone."""
    ids = list(document_ids)
    impact = purge_impact(session, ids)
    bm25.lock_collection_stats(session, collection_id)
    current = list(
        session.scalars(
            sa.text("SELECT id FROM documents WHERE id = ANY(:ids) AND superseded_at IS NULL"), {"ids": ids}
        )
    )
    bm25.retire_documents(session, collection_id, current)
    _write_tombstones(session, ids, run_id)
    # chunks, embeddings, postings, duplicates go by ON DELETE CASCADE (sources were unlinked above).
    session.execute(sa.text("DELETE FROM documents WHERE id = ANY(:ids)"), {"ids": ids})
    return impact


def delete_document(
    session: Session, collection_id: int, ref: str, *, purge: bool = False, run_id: int | None = None
) -> dict[str, Any]:
    """Retire a document (default: rows kept for past citations) or purge every version of it."""
    versions = _document_versions(session, collection_id, ref)
    ids = [v["id"] for v in versions]
    external_id = versions[-1]["external_id"]
    if purge:
        impact = purge_documents(session, collection_id, ids, run_id=run_id)
        return {"action": "purge", "external_id": external_id, "versions": len(ids), **impact}
    bm25.lock_collection_stats(session, collection_id)
    retired = retire_documents(session, collection_id, ids, run_id=run_id)
    if not retired:
        raise BadInput(
            f"document {external_id!r} is not current (already retired or superseded); remove its rows with --purge"
        )
    return {"action": "retire", "external_id": external_id, "versions": len(ids), "retired_document_ids": retired}


def set_metadata(
    session: Session, collection_id: int, ref: str, changes: dict[str, str | None], *, run_id: int | None = None
) -> dict[str, Any]:
    """Set (or, with None, remove) metadata keys on the current version; later versions inherit them."""
    if not changes:
        raise BadInput("give at least one key=value (key= removes a key)")
    versions = _document_versions(session, collection_id, ref)
    current = next((v for v in versions if v["superseded_at"] is None), None)
    if current is None:
        raise BadInput(
            f"document {versions[-1]['external_id']!r} is not current; only a current document takes metadata"
        )
    user = dict(current["user_metadata"] or {})
    metadata = dict(current["metadata"] or {})
    for key, value in changes.items():
        if value is None:
            user.pop(key, None)
            metadata.pop(key, None)
        else:
            user[key] = value
            metadata[key] = value
    import json

    session.execute(
        sa.text("UPDATE documents SET metadata = CAST(:m AS jsonb), user_metadata = CAST(:u AS jsonb) WHERE id = :i"),
        {"m": json.dumps(metadata, ensure_ascii=False), "u": json.dumps(user, ensure_ascii=False), "i": current["id"]},
    )
    return {
        "document_id": current["id"],
        "external_id": current["external_id"],
        "metadata": metadata,
        "changed": changes,
    }


def set_metadata_where(
    session: Session,
    collection_id: int,
    where: dict | None,
    changes: dict[str, str | None],
    *,
    run_id: int | None = None,
) -> dict[str, Any]:
    """set_metadata on every current document the filter matches, in the caller's transaction."""
    if not where:
        raise BadInput("give a filter (--where) to choose the documents, or one document")
    from genloom.retrieval.filters import to_jsonpath

    ids = (
        session.execute(
            sa.text(
                "SELECT id FROM documents WHERE collection_id = :c AND superseded_at IS NULL "
                "AND metadata @@ CAST(:where AS jsonpath) ORDER BY external_id"
            ),
            {"c": collection_id, "where": to_jsonpath(where)},
        )
        .scalars()
        .all()
    )
    if not ids:
        raise BadInput("no current document matches the filter: nothing changed")
    done = [set_metadata(session, collection_id, str(i), changes, run_id=run_id) for i in ids]
    return {"documents": len(done), "changed": changes, "external_ids": [d["external_id"] for d in done]}


def record_change(action: str, collection: str, change, *, engine=None, **params: Any) -> dict[str, Any]:
    """Run `change(session, collection_id, run_id)` in ONE transaction, recorded as a 'manage' run
    whose summary is what it changed (the run is marked succeeded in that same transaction)."""
    from genloom.db.engine import session_scope
    from genloom.retrieval.collections import get_collection
    from genloom.runs import tracked_run

    with session_scope(engine) as s:
        collection_id = get_collection(s, collection).id
    with tracked_run(
        "manage", params={"action": action, "collection": collection, **params}, collection_id=collection_id
    ) as run:
        with session_scope(engine) as s:
            summary = change(s, collection_id, run.id)
            run.finish(summary=_jsonable(summary), session=s)
    return {**summary, "run_id": run.id}


def _jsonable(value: Any) -> Any:
    import datetime as dt

    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    return value


def delete_collection(session: Session, name: str, *, force: bool = False, run_id: int | None = None) -> dict:
    """Delete a collection and everything in it, in the caller's transaction.

    Refused (one line, naming them) when datasets were imported from it, unless force: their
    items are copies and stay valid, but their lineage then points at a collection that is gone.
    Generations that cited its chunks keep their answers, and their sources a tombstone.
    """
    from genloom.retrieval.collections import datasets_from_collection, get_collection

    collection = get_collection(session, name)
    datasets = datasets_from_collection(session, name)
    if datasets and not force:
        shown = ", ".join(datasets[:5]) + (f" and {len(datasets) - 5} more" if len(datasets) > 5 else "")
        raise BadInput(
            f"collection {name!r} is the source of dataset {shown}; their items are copies and stay valid, "
            f"but their lineage would point at a deleted collection: delete anyway with --force"
        )
    ids = list(session.scalars(sa.text("SELECT id FROM documents WHERE collection_id = :c"), {"c": collection.id}))
    impact = purge_impact(session, ids)
    _write_tombstones(session, ids, run_id)
    session.execute(sa.text("DELETE FROM collections WHERE id = :c"), {"c": collection.id})  # cascades
    return {"collection": name, "datasets_imported_from_it": datasets, **impact}


def document_chunks(
    session: Session, document_id: int, *, after: int | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    """A document version's chunks in order, `limit` of them past ordinal `after` (keyset), with their locations."""
    from genloom.retrieval.locations import location_fields

    rows = session.execute(
        sa.text(
            "SELECT id, ordinal, text, token_count, metadata FROM chunks "
            "WHERE document_id = :d AND ordinal > :after ORDER BY ordinal LIMIT :limit"
        ),
        {"d": document_id, "after": -1 if after is None else after, "limit": limit},
    ).mappings()
    return [dict(r) | location_fields(r["metadata"]) for r in rows]


def chunk_detail(session: Session, chunk_id: int) -> dict[str, Any]:
    """One chunk with its document's title, collection and location (page, heading, ...): what a citation opens."""
    from genloom.retrieval.locations import format_location, location_fields

    row = (
        session.execute(
            sa.text(
                """
            SELECT c.id, c.ordinal, c.text, c.metadata, d.id AS document_id, d.external_id, d.title, d.version,
                   col.name AS collection
            FROM chunks c JOIN documents d ON d.id = c.document_id JOIN collections col ON col.id = d.collection_id
            WHERE c.id = :id
            """
            ),
            {"id": chunk_id},
        )
        .mappings()
        .first()
    )
    if row is None:
        raise NotFound(f"no chunk {chunk_id}")
    return (
        dict(row)
        | location_fields(row["metadata"])
        | {"location": format_location(row["title"], row["external_id"], row["metadata"])}
    )
