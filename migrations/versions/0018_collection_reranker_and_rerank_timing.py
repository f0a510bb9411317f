"""collections.reranker_model_id / rerank_depth, generations.rerank_ms: trained rerankers as a collection default

`genloom collections set C --reranker MODEL` makes a registered cross-encoder the collection's
default (search and ask rerank their top `rerank_depth` hits with it unless told --no-rerank);
the switch itself is recorded in the audit log with the eval run that justified it. A generation
logs its rerank time apart from its retrieval time, so analytics can see what reranking costs.

Revision ID: 0018
Revises: 0015
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "collections",
        sa.Column("reranker_model_id", sa.BigInteger, sa.ForeignKey("models.id", ondelete="SET NULL"), nullable=True),
    )
    op.add_column("collections", sa.Column("rerank_depth", sa.Integer, nullable=True))
    op.create_check_constraint("ck_collections_rerank_depth", "collections", "rerank_depth IS NULL OR rerank_depth > 0")
    op.add_column("generations", sa.Column("rerank_ms", sa.Float, nullable=True))


def downgrade() -> None:
    op.drop_column("generations", "rerank_ms")
    op.drop_constraint("ck_collections_rerank_depth", "collections")
    op.drop_column("collections", "rerank_depth")
    op.drop_column("collections", "reranker_model_id")
