"""BM25 bookkeeping: postings, chunk lengths and collection/term statistics.

Scoring itself is in `genloom.retrieval.hybrid.HYBRID_SQL`. This module keeps what it
reads correct, inside the caller's transaction (the one that writes the chunks):

- `index_chunks`: lexemes of `to_tsvector(config, title || text)` → postings (tf = number
  of positions), the chunk's length (sum of tf), df += 1 per term, N and total length.
- `retire_documents`: a superseded version's chunks leave the statistics (their rows stay,
  flagged not current, so past answers can still cite them).

Writers to one collection serialise on its statistics row (`lock_collection_stats`),
which keeps N, total length and df exact under concurrent ingests and rules out deadlocks
on the term rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.orm import Session

from genloom.db.tenancy import current_tenant, distributed_by_tenant

# One pass over the chunks: each chunk's tsvector and length (sum of tf), then its lexemes.
# No step joins one CTE to another: with the statistics of a table that was empty when last
# analysed (a new store), the planner took the chunks for one row and joined the lexemes to
# them in a nested loop, 14x slower on 4,096 chunks; scans and per-row unnest cannot go wrong.
INDEX_CHUNKS_TEMPLATE = """
WITH chunk AS MATERIALIZED (
    SELECT c.id AS chunk_id, c.document_id, v.tsv,
           (SELECT coalesce(sum(coalesce(array_length(u.positions, 1), 1)), 0) FROM unnest(v.tsv) u)::int AS length
    FROM chunks c
    JOIN documents d ON d.id = c.document_id{t_d}
    CROSS JOIN LATERAL (SELECT to_tsvector(CAST(:ts_config AS regconfig), coalesce(d.title, '') || E'\\n' || c.text)
                        AS tsv) v
    WHERE c.id = ANY(:chunk_ids){t_c}
),
lex AS MATERIALIZED (
    SELECT chunk.chunk_id, chunk.length, l.lexeme AS term, coalesce(array_length(l.positions, 1), 1) AS tf
    FROM chunk CROSS JOIN LATERAL unnest(chunk.tsv) l
),
new_chunks AS (
    INSERT INTO retrieval_chunks ({tc}chunk_id, collection_id, document_id, length)
    SELECT {tv}chunk_id, :collection_id, document_id, length FROM chunk
),
new_postings AS (
    INSERT INTO retrieval_postings ({tc}chunk_id, term, collection_id, tf, chunk_length)
    SELECT {tv}chunk_id, term, :collection_id, tf, length FROM lex
),
new_df AS (
    INSERT INTO retrieval_term_stats ({tc}collection_id, term, df)
    SELECT {tv}:collection_id, term, count(*) FROM lex GROUP BY term ORDER BY term
    ON CONFLICT ({tc}collection_id, term) DO UPDATE SET df = retrieval_term_stats.df + excluded.df
)
UPDATE retrieval_collection_stats
SET n_chunks = n_chunks + (SELECT count(*) FROM chunk),
    total_length = total_length + (SELECT coalesce(sum(length), 0) FROM chunk),
    updated_at = now()
WHERE collection_id = :collection_id{t}
"""

RETIRE_DOCUMENTS_TEMPLATE = """
WITH old AS (
    UPDATE retrieval_chunks SET current = false
    WHERE document_id = ANY(:document_ids) AND current{t}
    RETURNING chunk_id, length
),
old_postings AS (
    UPDATE retrieval_postings SET current = false
    WHERE chunk_id IN (SELECT chunk_id FROM old) AND current{t}
    RETURNING term
),
old_df AS (
    UPDATE retrieval_term_stats ts SET df = ts.df - gone.n
    FROM (SELECT term, count(*) AS n FROM old_postings GROUP BY term) gone
    WHERE ts.collection_id = :collection_id AND ts.term = gone.term{t_ts}
)
UPDATE retrieval_collection_stats
SET n_chunks = n_chunks - (SELECT count(*) FROM old),
    total_length = total_length - (SELECT coalesce(sum(length), 0) FROM old),
    updated_at = now()
WHERE collection_id = :collection_id{t}
"""

# {t…}: a Citus cluster's tenant filters (_by_tenant); empty on one node, where these are the statements.
_NO_TENANT = {"t": "", "t_c": "", "t_d": "", "t_ts": "", "tc": "", "tv": ""}
INDEX_CHUNKS_SQL = INDEX_CHUNKS_TEMPLATE.format(**_NO_TENANT)
RETIRE_DOCUMENTS_SQL = RETIRE_DOCUMENTS_TEMPLATE.format(**_NO_TENANT)


def _by_tenant(session: Session, sql: str) -> tuple[str, dict]:
    """On a Citus cluster (every table distributed by tenant, genloom.db.distribute) each table is
    filtered on, and each row written with, `:tenant`, so the statement is a router query: one
    shard, one worker (Citus runs modifying CTEs and FOR UPDATE only as router queries)."""
    if not distributed_by_tenant(session):
        return sql.format(**_NO_TENANT), {}
    return sql.format(
        t=" AND tenant = :tenant", t_c=" AND c.tenant = :tenant", t_d=" AND d.tenant = :tenant",
        t_ts=" AND ts.tenant = :tenant", tc="tenant, ", tv=":tenant, ",
    ), {"tenant": current_tenant()}  # fmt: skip


def lock_collection_stats(session: Session, collection_id: int) -> None:
    sql, tenant = _by_tenant(session, "SELECT 1 FROM retrieval_collection_stats WHERE collection_id = :c{t} FOR UPDATE")
    session.execute(sa.text(sql), {"c": collection_id, **tenant})


def index_chunks(session: Session, collection_id: int, ts_config: str, chunk_ids: Sequence[int]) -> None:
    if chunk_ids:
        sql, tenant = _by_tenant(session, INDEX_CHUNKS_TEMPLATE)
        session.execute(
            sa.text(sql),
            {"collection_id": collection_id, "ts_config": ts_config, "chunk_ids": list(chunk_ids), **tenant},
        )


def retire_documents(session: Session, collection_id: int, document_ids: Sequence[int]) -> None:
    if document_ids:
        sql, tenant = _by_tenant(session, RETIRE_DOCUMENTS_TEMPLATE)
        session.execute(sa.text(sql), {"collection_id": collection_id, "document_ids": list(document_ids), **tenant})


def query_lexemes(session: Session, ts_config: str, query: str) -> list[tuple[str, int]]:
    """The lexemes BM25 scores a query by, each with its count in the query (what the search SQL computes)."""
    return [
        (lexeme, count)
        for lexeme, count in session.execute(
            sa.text(
                "SELECT lexeme, coalesce(array_length(positions, 1), 1) "
                "FROM unnest(to_tsvector(CAST(:c AS regconfig), :q)) ORDER BY 1"
            ),
            {"c": ts_config, "q": query},
        )
    ]
