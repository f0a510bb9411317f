"""collections.reader_model_id: a trained reader as a collection's default answerer

`genloom collections set C --reader MODEL` makes a registered span reader (genloom train reader)
the collection's default: `genloom ask` in C answers with its spans when no --model is given. The
switch is recorded in the audit log like the embedding-model and reranker defaults (0018).

On a Citus cluster whose tables are already distributed (genloom.db.distribute), Citus refuses this
`ON DELETE SET NULL` reference to `models` (its key lacks the distribution column), so there the
column is added without it: a soft reference, like the other SET NULL references on a cluster. A
fresh cluster gets the same result, since `distribute` drops the reference after Alembic.

Revision ID: 0028
Revises: 0027
"""

import sqlalchemy as sa
from alembic import op

revision = "0028"
down_revision = "0027"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("collections", sa.Column("reader_model_id", sa.BigInteger, nullable=True))
    if not _distributed("collections"):
        op.create_foreign_key(
            "collections_reader_model_id_fkey", "collections", "models", ["reader_model_id"], ["id"], ondelete="SET NULL"
        )


def _distributed(table: str) -> bool:
    """Whether Citus already distributes `table` here (False on a plain PostgreSQL)."""
    bind = op.get_bind()
    if bind.execute(sa.text("SELECT to_regclass('pg_catalog.pg_dist_partition')")).scalar() is None:
        return False
    found = "SELECT count(*) FROM pg_catalog.pg_dist_partition WHERE logicalrelid = to_regclass(:t)"
    return bool(bind.execute(sa.text(found), {"t": table}).scalar())


def downgrade() -> None:
    op.drop_column("collections", "reader_model_id")
