"""documents.incomplete: a large document whose chunks are committed slice by slice

A document too large to hold in memory is streamed: chunked, embedded and written a slice at a
time. Until this revision the whole document was one transaction, so a kill at 90 % of a 500 MB
file lost all of it and the next run started again from the first byte. Now each slice commits
under a document row marked `incomplete` (and superseded, so no search or BM25 statistic sees
it); the next ingest of the same file finds that row, skips the chunks already stored and goes
on, and only its last transaction makes the document current. The unique partial index finds
the interrupted document of an external id, and allows at most one.

Revision ID: 0015
Revises: 0014
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("documents", sa.Column("incomplete", sa.Boolean, server_default=sa.false(), nullable=False))
    op.create_index(
        "uq_documents_incomplete",
        "documents",
        ["collection_id", "external_id"],
        unique=True,
        postgresql_where=sa.text("incomplete"),
    )


def downgrade() -> None:
    # An interrupted large document stays as what older code takes it for: a superseded version
    # (out of search and BM25); its next ingest writes the document again from the start.
    op.drop_index("uq_documents_incomplete", table_name="documents")
    op.drop_column("documents", "incomplete")
