"""ingest sync, document deletion, prompt-template labels

- documents.retired_at / retired_by_run_id: a document whose file is gone (`ingest --sync`) or
  that was deleted (`documents delete`) is retired: superseded_at is set as well, so it leaves
  search and the BM25 statistics, but its rows stay for the generations that cited it.
- documents.user_metadata: keys set with `documents set-meta`; documents.metadata holds the
  effective metadata (the file's, updated with these), and a new version of the file inherits
  them, so a re-ingest never loses what a user set. sha256 stays the hash of the file's content.
- generation_sources.chunk_id becomes nullable with ON DELETE SET NULL, and `tombstone` says
  what was there: `documents delete --purge` removes rows for good, and a generation that cited
  them keeps its answer text and a tombstone {"external_id", "title", "version", "purged_at"}.
- runs.kind gains 'manage': collection/document edits (delete, purge, rename, set-meta) are
  recorded as runs whose summary lists what changed.
- prompt_template_labels: a label (e.g. 'production') points at one version of a template;
  prompt_template_label_moves records every move (who, when, from, to): rollback is a move back.

Chunk locations (page, heading path, character offsets) live in chunks.metadata: no column.

Revision ID: 0012
Revises: 0011
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

OLD_KINDS = "('ingest', 'train', 'sample', 'evaluate', 'dedup', 'generate', 'import', 'score')"
NEW_KINDS = "('ingest', 'train', 'sample', 'evaluate', 'dedup', 'generate', 'import', 'score', 'manage')"


def upgrade() -> None:
    op.add_column("documents", sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column(
        "documents",
        sa.Column("retired_by_run_id", sa.BigInteger(), sa.ForeignKey("runs.id", ondelete="SET NULL"), nullable=True),
    )

    op.add_column(
        "documents",
        sa.Column("user_metadata", JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False),
    )

    op.alter_column("generation_sources", "chunk_id", nullable=True)
    op.drop_constraint("fk_generation_sources_chunk_id", "generation_sources", type_="foreignkey")
    op.create_foreign_key(
        "fk_generation_sources_chunk_id", "generation_sources", "chunks", ["chunk_id"], ["id"], ondelete="SET NULL"
    )
    op.add_column("generation_sources", sa.Column("tombstone", JSONB(), nullable=True))

    op.drop_constraint("ck_runs_kind", "runs", type_="check")
    op.create_check_constraint("ck_runs_kind", "runs", f"kind IN {NEW_KINDS}")

    op.create_table(
        "prompt_template_labels",
        sa.Column("name", sa.Text(), primary_key=True),
        sa.Column("label", sa.Text(), primary_key=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("moved_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("moved_by", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["name", "version"], ["prompt_templates.name", "prompt_templates.version"]),
    )
    op.create_table(
        "prompt_template_label_moves",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("label", sa.Text(), nullable=False),
        sa.Column("from_version", sa.Integer(), nullable=True),
        sa.Column("to_version", sa.Integer(), nullable=False),
        sa.Column("moved_by", sa.Text(), nullable=True),
        sa.Column("moved_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    )
    op.create_index("ix_prompt_template_label_moves_name", "prompt_template_label_moves", ["name", "label", "moved_at"])


def downgrade() -> None:
    op.drop_index("ix_prompt_template_label_moves_name", table_name="prompt_template_label_moves")
    op.drop_table("prompt_template_label_moves")
    op.drop_table("prompt_template_labels")
    op.execute("DELETE FROM runs WHERE kind = 'manage'")
    op.drop_constraint("ck_runs_kind", "runs", type_="check")
    op.create_check_constraint("ck_runs_kind", "runs", f"kind IN {OLD_KINDS}")
    op.drop_column("generation_sources", "tombstone")
    op.execute("DELETE FROM generation_sources WHERE chunk_id IS NULL")
    op.drop_constraint("fk_generation_sources_chunk_id", "generation_sources", type_="foreignkey")
    op.create_foreign_key("fk_generation_sources_chunk_id", "generation_sources", "chunks", ["chunk_id"], ["id"])
    op.alter_column("generation_sources", "chunk_id", nullable=False)
    op.drop_column("documents", "user_metadata")
    op.drop_column("documents", "retired_by_run_id")
    op.drop_column("documents", "retired_at")
