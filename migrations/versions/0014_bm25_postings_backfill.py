"""bm25 postings backfill: index the chunks that have no BM25 postings

0002 created the BM25 tables empty: chunks stored before it (and collections created before
it, which have no statistics row) were never indexed, so keyword search missed them until
they were re-ingested. This revision indexes every chunk that has no `retrieval_chunks` row
with the statements ingest uses (`genloom.retrieval.bm25`):

1. a `retrieval_collection_stats` row (N = 0, total length 0) for each collection lacking one;
2. per collection, under a lock on its statistics row as ingest takes it, INDEX_CHUNKS_SQL
   over the unindexed chunks in batches (postings, chunk lengths, df += 1 per term, N and
   total length);
3. RETIRE_DOCUMENTS_SQL for the superseded documents among them, so their chunks leave N,
   total length and df again as they do when ingest supersedes a version.

Statistics stay exact: only chunks with no row are indexed, each once. On a store where every
chunk is indexed and every collection has its row, nothing is written. Downgrade leaves the
postings in place (they are what 0002's tables should always have held).

Where the migrating role is held by row-level security (0013: a table owner that is neither
superuser nor BYPASSRLS), FORCE is lifted on the three tenant tables read here for this
transaction only, so chunks of every tenant are indexed, and put back before it commits.

Revision ID: 0014
Revises: 0013
"""
import sqlalchemy as sa
from alembic import op

from genloom.retrieval.bm25 import INDEX_CHUNKS_SQL, RETIRE_DOCUMENTS_SQL

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

BATCH = 5000  # chunks per INDEX_CHUNKS_SQL call: bounds the statement's working set
READ_TABLES = ("collections", "documents", "chunks")

MISSING_STATS = """
INSERT INTO retrieval_collection_stats (collection_id)
SELECT c.id FROM collections c
WHERE NOT EXISTS (SELECT 1 FROM retrieval_collection_stats s WHERE s.collection_id = c.id)
"""

# Per collection: its text search configuration, the chunks with no BM25 row, and which of
# their documents are superseded.
UNINDEXED = """
SELECT d.collection_id, col.text_search_config,
       array_agg(c.id ORDER BY c.id) AS chunk_ids,
       coalesce(array_agg(DISTINCT d.id) FILTER (WHERE d.superseded_at IS NOT NULL), '{}') AS superseded
FROM chunks c
JOIN documents d ON d.id = c.document_id
JOIN collections col ON col.id = d.collection_id
WHERE NOT EXISTS (SELECT 1 FROM retrieval_chunks r WHERE r.chunk_id = c.id)
GROUP BY d.collection_id, col.text_search_config
ORDER BY d.collection_id
"""


def upgrade() -> None:
    bind = op.get_bind()
    held_by_policies = not bind.execute(
        sa.text("SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user")
    ).scalar()
    if held_by_policies:
        for table in READ_TABLES:
            op.execute(f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY")
    bind.execute(sa.text(MISSING_STATS))
    for collection_id, ts_config, chunk_ids, superseded in bind.execute(sa.text(UNINDEXED)).all():
        bind.execute(
            sa.text("SELECT 1 FROM retrieval_collection_stats WHERE collection_id = :c FOR UPDATE"),
            {"c": collection_id},
        )
        for start in range(0, len(chunk_ids), BATCH):
            bind.execute(
                sa.text(INDEX_CHUNKS_SQL),
                {"collection_id": collection_id, "ts_config": ts_config, "chunk_ids": chunk_ids[start : start + BATCH]},
            )
        if superseded:
            bind.execute(
                sa.text(RETIRE_DOCUMENTS_SQL), {"collection_id": collection_id, "document_ids": list(superseded)}
            )
    if held_by_policies:
        for table in READ_TABLES:
            op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")


def downgrade() -> None:
    pass  # the postings of old chunks are correct data for 0002's tables: nothing to undo
