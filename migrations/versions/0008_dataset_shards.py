"""dataset shards: a packed read cache for shuffled training reads of sealed image versions

One row holds about 8 MiB of one split's images back to back (`payload`), with their
item ids, labels and the common shape, so an epoch reads a few large rows instead of one
row per image. Rows are derived from `items` + `dataset_members` of a sealed (immutable)
version, built on first use by `genloom.datasets.shards`; deleting them is always safe.
`payload` is stored uncompressed (STORAGE EXTERNAL): pixels barely compress with pglz and
decompressing would cost more than the bytes saved.

Revision ID: 0008
Revises: 0007
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, BYTEA

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dataset_shards",
        sa.Column("version_id", sa.BigInteger, sa.ForeignKey("dataset_versions.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("split", sa.Text, primary_key=True),
        sa.Column("shard_no", sa.Integer, primary_key=True),
        sa.Column("item_count", sa.Integer, nullable=False),
        sa.Column("shape", ARRAY(sa.Integer), nullable=False),
        sa.Column("item_ids", ARRAY(sa.BigInteger), nullable=False),
        sa.Column("labels", ARRAY(sa.Text), nullable=False),
        sa.Column("payload", BYTEA, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    )
    op.execute("ALTER TABLE dataset_shards ALTER COLUMN payload SET STORAGE EXTERNAL")


def downgrade() -> None:
    op.drop_table("dataset_shards")
