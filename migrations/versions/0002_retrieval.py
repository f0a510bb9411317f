"""retrieval: issue 3: BM25 postings, chunk lengths, collection and term statistics

BM25 needs, per collection, N (current chunks), the average chunk length, each
term's document frequency, and per (term, chunk) the term frequency and the chunk's
length. Ingestion maintains all of them in the same transaction that writes the
chunks, and moves them when a document version is superseded, so a search reads
them with index-only scans instead of re-tokenising anything.

The per-embedding-model HNSW index (a partial expression index) is created at run
time when a model is first used, because its dimension and id are only known then
(`genloom.retrieval.vector.ensure_hnsw_index`); downgrade drops any that exist.

Revision ID: 0002
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # One row per chunk: its BM25 length (number of lexeme occurrences) and whether its
    # document version is current. Chunks with no lexemes still count in N.
    op.create_table(
        "retrieval_chunks",
        sa.Column("chunk_id", sa.BigInteger(), sa.ForeignKey("chunks.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("collection_id", sa.BigInteger(), sa.ForeignKey("collections.id", ondelete="CASCADE"), nullable=False),
        sa.Column("document_id", sa.BigInteger(), sa.ForeignKey("documents.id", ondelete="CASCADE"), nullable=False),
        sa.Column("length", sa.Integer(), nullable=False),
        sa.Column("current", sa.Boolean(), server_default=sa.true(), nullable=False),
    )
    op.create_index("ix_retrieval_chunks_document", "retrieval_chunks", ["document_id"])
    op.create_index(
        "ix_retrieval_chunks_current", "retrieval_chunks", ["collection_id", "chunk_id"],
        postgresql_where=sa.text("current"),
    )

    # Postings: (term, chunk) -> term frequency; the chunk length is copied in so BM25
    # scoring is one index-only scan over the partial index below, with no join.
    op.create_table(
        "retrieval_postings",
        sa.Column("chunk_id", sa.BigInteger(), sa.ForeignKey("chunks.id", ondelete="CASCADE"), nullable=False),
        sa.Column("term", sa.Text(), nullable=False),
        sa.Column("collection_id", sa.BigInteger(), sa.ForeignKey("collections.id", ondelete="CASCADE"), nullable=False),
        sa.Column("tf", sa.Integer(), nullable=False),
        sa.Column("chunk_length", sa.Integer(), nullable=False),
        sa.Column("current", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.PrimaryKeyConstraint("chunk_id", "term"),
    )
    op.execute(
        "CREATE INDEX ix_retrieval_postings_current ON retrieval_postings "
        "(collection_id, term) INCLUDE (chunk_id, tf, chunk_length) WHERE current"
    )

    # Document frequency of each term over the collection's current chunks.
    op.create_table(
        "retrieval_term_stats",
        sa.Column("collection_id", sa.BigInteger(), sa.ForeignKey("collections.id", ondelete="CASCADE"), nullable=False),
        sa.Column("term", sa.Text(), nullable=False),
        sa.Column("df", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("collection_id", "term"),
    )

    # N and the total length (avglen = total_length / n_chunks) over current chunks.
    op.create_table(
        "retrieval_collection_stats",
        sa.Column("collection_id", sa.BigInteger(), sa.ForeignKey("collections.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("n_chunks", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("total_length", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    )


def downgrade() -> None:
    # Per-model HNSW indexes made at run time by genloom.retrieval.vector.
    op.execute(
        """
        DO $$
        DECLARE idx text;
        BEGIN
            FOR idx IN SELECT indexname FROM pg_indexes
                       WHERE tablename = 'embeddings' AND indexname LIKE 'ix_embeddings_hnsw_%'
            LOOP
                EXECUTE format('DROP INDEX IF EXISTS %I', idx);
            END LOOP;
        END $$;
        """
    )
    op.drop_table("retrieval_collection_stats")
    op.drop_table("retrieval_term_stats")
    op.execute("DROP INDEX IF EXISTS ix_retrieval_postings_current")
    op.drop_table("retrieval_postings")
    op.drop_index("ix_retrieval_chunks_current", table_name="retrieval_chunks")
    op.drop_index("ix_retrieval_chunks_document", table_name="retrieval_chunks")
    op.drop_table("retrieval_chunks")
