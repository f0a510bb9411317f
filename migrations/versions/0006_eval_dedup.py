"""eval dedup: issue 7: evaluation and dedup tables (dedup decisions, ...)

- dedup_decisions: one row per item a dedup run dropped: the item kept in its place,
  the method, the similarity and the run (joins to runs/metrics and both versions).
- item_embedders / item_embeddings: item vectors for semantic dedup, per embedder
  (sentence model for text, feature network or aligned pixels for images). Like
  `embeddings`, the vector column has no fixed dimension; each embedder gets a
  partial expression HNSW index, `((embedding::vector(DIM)) vector_cosine_ops) WHERE
  embedder_id = ID`, created by `genloom.dedup.semantic.ensure_index` when the
  embedder is first used (its dimension is only known then).
- chunk_duplicates: near-duplicate chunks of a collection, flagged by
  `genloom dedup --collection NAME`, so search can collapse them with an anti-join.

Revision ID: 0006
Revises: 0005
"""
from alembic import op
import sqlalchemy as sa
from pgvector.sqlalchemy import Vector
from sqlalchemy.dialects.postgresql import JSONB

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

DEDUP_METHODS = "('exact', 'normalized', 'minhash', 'semantic')"


def upgrade() -> None:
    op.create_table(
        "dedup_decisions",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("run_id", sa.BigInteger, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("input_version_id", sa.BigInteger, sa.ForeignKey("dataset_versions.id", ondelete="CASCADE"), nullable=False),
        sa.Column("output_version_id", sa.BigInteger, sa.ForeignKey("dataset_versions.id", ondelete="CASCADE")),
        sa.Column("dropped_item_id", sa.BigInteger, sa.ForeignKey("items.id"), nullable=False),
        sa.Column("kept_item_id", sa.BigInteger, sa.ForeignKey("items.id"), nullable=False),
        sa.Column("method", sa.Text, nullable=False),
        sa.Column("similarity", sa.Float, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint(f"method IN {DEDUP_METHODS}", name="ck_dedup_decisions_method"),
        sa.CheckConstraint("dropped_item_id <> kept_item_id", name="ck_dedup_decisions_distinct"),
    )
    op.create_index("ix_dedup_decisions_run", "dedup_decisions", ["run_id"])
    op.create_index("ix_dedup_decisions_output", "dedup_decisions", ["output_version_id"])
    op.create_index("ix_dedup_decisions_dropped", "dedup_decisions", ["dropped_item_id"])

    op.create_table(
        "item_embedders",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("name", sa.Text, nullable=False, unique=True),
        sa.Column("modality", sa.Text, nullable=False),
        sa.Column("dim", sa.Integer, nullable=False),
        sa.Column("model_id", sa.BigInteger, sa.ForeignKey("models.id", ondelete="SET NULL")),
        sa.Column("metadata", JSONB, server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint("dim > 0 AND dim <= 16000", name="ck_item_embedders_dim"),
    )
    op.create_table(
        "item_embeddings",
        sa.Column("item_id", sa.BigInteger, sa.ForeignKey("items.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("embedder_id", sa.BigInteger, sa.ForeignKey("item_embedders.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("embedding", Vector(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    )

    op.create_table(
        "chunk_duplicates",
        sa.Column("chunk_id", sa.BigInteger, sa.ForeignKey("chunks.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("duplicate_of_chunk_id", sa.BigInteger, sa.ForeignKey("chunks.id", ondelete="CASCADE"), nullable=False),
        sa.Column("collection_id", sa.BigInteger, sa.ForeignKey("collections.id", ondelete="CASCADE"), nullable=False),
        sa.Column("method", sa.Text, nullable=False),
        sa.Column("similarity", sa.Float, nullable=False),
        sa.Column("run_id", sa.BigInteger, sa.ForeignKey("runs.id", ondelete="SET NULL")),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint(f"method IN {DEDUP_METHODS}", name="ck_chunk_duplicates_method"),
        sa.CheckConstraint("chunk_id <> duplicate_of_chunk_id", name="ck_chunk_duplicates_distinct"),
    )
    op.create_index("ix_chunk_duplicates_collection", "chunk_duplicates", ["collection_id"])
    op.create_index("ix_chunk_duplicates_of", "chunk_duplicates", ["duplicate_of_chunk_id"])


def downgrade() -> None:
    # The per-embedder HNSW indexes live on item_embeddings and go with it.
    op.drop_table("chunk_duplicates")
    op.drop_table("item_embeddings")
    op.drop_table("item_embedders")
    op.drop_table("dedup_decisions")
