"""Named queries of deduplication (genloom/dedup): item vectors in pgvector and their k-NN.

Each runs in the caller's session and transaction. Identifiers that appear inlined in the SQL
(table and column names of a `VectorSpace`, embedder ids, dimensions) are values the store owns,
never user input; they are inlined where the planner must see them to use a partial index.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session


@dataclasses.dataclass(frozen=True)
class VectorSpace:
    """Where the vectors of one embedder live: `item_embeddings` for dataset items, or issue
    3's `embeddings` (chunk vectors per embedding model) for collections. Both tables have
    the same partial-index shape, so one k-NN query serves both."""

    table: str
    id_column: str
    model_column: str
    model_id: int
    dim: int


def item_index_name(embedder_id: int) -> str:
    return f"ix_item_embeddings_hnsw_{int(embedder_id)}"


def create_item_index(session: Session, embedder_id: int, dim: int) -> None:
    """The embedder's partial HNSW index (cosine); IF NOT EXISTS makes it idempotent.

    The caller holds an advisory lock on the index name so two first runs do not build it twice.
    """
    session.execute(
        sa.text(
            f"CREATE INDEX IF NOT EXISTS {item_index_name(embedder_id)} ON item_embeddings "
            f"USING hnsw ((embedding::vector({int(dim)})) vector_cosine_ops) "
            f"WHERE embedder_id = {int(embedder_id)}"
        )
    )


def items_without_vector(session: Session, embedder_id: int, item_ids: Sequence[int]) -> list[int]:
    """The ITEM_IDS (in their order) that have no vector under the embedder yet.

    One node: an anti-join of the ids with item_embeddings. A Citus cluster refuses that
    correlated subquery over a set-returning function, so there the ids that have a vector are
    read and left out here (about 2× slower at 60,000 ids on one node, hence not everywhere)."""
    from genloom.db.tenancy import distributed_by_tenant

    ids = list(map(int, item_ids))
    if not distributed_by_tenant(session):
        sql = (
            "SELECT i FROM unnest(CAST(:ids AS bigint[])) AS i "
            "WHERE NOT EXISTS (SELECT 1 FROM item_embeddings e WHERE e.item_id = i AND e.embedder_id = :e)"
        )
        return [int(i) for i in session.execute(sa.text(sql), {"ids": ids, "e": embedder_id}).scalars()]
    sql = "SELECT item_id FROM item_embeddings WHERE embedder_id = :e AND item_id = ANY(CAST(:ids AS bigint[]))"
    have = set(session.execute(sa.text(sql), {"ids": ids, "e": embedder_id}).scalars())
    return [i for i in ids if i not in have]


def copy_item_embeddings(session: Session, embedder_id: int, item_ids: Sequence[int], vectors: np.ndarray) -> None:
    """Binary COPY into item_embeddings (pgvector's psycopg adapter), in the caller's transaction."""
    from pgvector.psycopg import register_vector

    from genloom.db.tenancy import copy_in

    conn: Any = session.connection().connection.driver_connection
    register_vector(conn)
    with conn.cursor() as cur:
        with copy_in(cur, "item_embeddings", ["item_id", "embedder_id", "embedding"]) as copy:
            copy.set_types(["int8", "int8", "vector"])
            for item_id, vec in zip(item_ids, vectors):
                copy.write_row((int(item_id), int(embedder_id), np.asarray(vec, dtype=np.float32)))


def fill_candidates(session: Session, ids: Sequence[int], table: str = "dedup_candidates") -> None:
    """A temporary table of the ids neighbours may be drawn from (dropped at commit)."""
    session.execute(sa.text(f"CREATE TEMP TABLE IF NOT EXISTS {table} (item_id bigint PRIMARY KEY) ON COMMIT DROP"))
    session.execute(sa.text(f"TRUNCATE {table}"))
    session.execute(sa.text(f"INSERT INTO {table} SELECT unnest(CAST(:ids AS bigint[]))"), {"ids": list(map(int, ids))})
    session.execute(sa.text(f"ANALYZE {table}"))  # the planner's row estimate decides index vs scan


def set_hnsw_search(session: Session, ef_search: int) -> None:
    """HNSW settings for the rest of the transaction: candidate list size, and iterative scan so a
    filtered k-NN keeps returning rows when the filter rejects some."""
    session.execute(sa.text(f"SET LOCAL hnsw.ef_search = {int(ef_search)}"))
    session.execute(sa.text("SET LOCAL hnsw.iterative_scan = relaxed_order"))


def neighbours_sql(space: VectorSpace, candidates_table: str | None) -> sa.TextClause:
    """Per query id (:ids), its :k nearest among the candidates within cosine distance 1 - :threshold.

    One node: the candidates are CANDIDATES_TABLE (a temporary table, `fill_candidates`), which
    the planner sizes by its ANALYZE. A Citus cluster (`candidates_table=None`): a temporary table
    lives on the coordinator only, and Citus refuses to join it to the LATERAL k-NN over a
    distributed table ("complex joins are only supported when all distributed tables are
    co-located"); there the candidates come inline as :candidates (bigint[]) and both sides say
    `tenant = :tenant`, so the statement is one router query on the tenant's shard, with the same
    rows (the tenant policy filters the same ones). The candidate array travels with every batch.

    Model id and dimension are inlined (integers we own) so the planner can match the partial
    index's predicate and expression; bind parameters would hide them.
    """
    dim, mid, t, idc, mc = int(space.dim), int(space.model_id), space.table, space.id_column, space.model_column
    if candidates_table is None:
        among, e_tenant, q_tenant = (
            "= ANY(CAST(:candidates AS bigint[]))",
            "AND e.tenant = :tenant",
            "AND q.tenant = :tenant",
        )
    else:
        among, e_tenant, q_tenant = f"IN (SELECT item_id FROM {candidates_table})", "", ""
    return sa.text(f"""
        SELECT q.{idc} AS query, n.{idc} AS neighbour, 1 - n.distance AS similarity
        FROM {t} q
        CROSS JOIN LATERAL (
            SELECT e.{idc}, e.embedding::vector({dim}) <=> q.embedding::vector({dim}) AS distance
            FROM {t} e
            WHERE e.{mc} = {mid} {e_tenant}
              AND e.{idc} {among}
            ORDER BY e.embedding::vector({dim}) <=> q.embedding::vector({dim})
            LIMIT :k
        ) n
        WHERE q.{mc} = {mid} {q_tenant} AND q.{idc} = ANY(CAST(:ids AS bigint[]))
          AND n.{idc} <> q.{idc} AND n.distance <= 1 - :threshold
        ORDER BY q.{idc}, n.distance, n.{idc}
    """)


def current_chunk_texts(session: Session, collection_id: int) -> list[tuple[int, str]]:
    """(chunk id, text) of the collection's current documents, in document and chunk order.

    The join matches the tenant too (the same rows under the tenant policy): on a Citus cluster it
    is then co-located, not a repartition join, whose worker-side DDL made the transaction's next
    read of a reference table (embedding_models) fail ("… parallel DDL access to … chunks")."""
    rows = session.execute(
        sa.text(
            "SELECT c.id, c.text FROM chunks c JOIN documents d ON d.id = c.document_id AND d.tenant = c.tenant "
            "WHERE d.collection_id = :c AND d.superseded_at IS NULL ORDER BY d.id, c.ordinal"
        ),
        {"c": collection_id},
    )
    return [(int(i), str(t)) for i, t in rows]
