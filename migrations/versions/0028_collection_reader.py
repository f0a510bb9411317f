"""collections.reader_model_id: a trained reader as a collection's default answerer

`genloom collections set C --reader MODEL` makes a registered span reader (genloom train reader)
the collection's default: `genloom ask` in C answers with its spans when no --model is given. The
switch is recorded in the audit log like the embedding-model and reranker defaults (0018).

Revision ID: 0028
Revises: 0026
"""

import sqlalchemy as sa
from alembic import op

revision = "0028"
down_revision = "0026"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "collections",
        sa.Column("reader_model_id", sa.BigInteger, sa.ForeignKey("models.id", ondelete="SET NULL"), nullable=True),
    )


def downgrade() -> None:
    op.drop_column("collections", "reader_model_id")
