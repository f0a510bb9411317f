"""views from sql files: the analytics views are (re)created from .sql files; one list of dedup methods

The views' SQL used to live only inside migration bodies (0007, 0009). Their source is
now one file per view, platform/genloom/analytics/views/v_NAME.sql, with its description
in a header comment. This migration replaces every view from the copy of those files
pinned at this revision (migrations/views/0011/), so replaying it later runs the same SQL.
The SQL is unchanged from 0007/0009: CREATE OR REPLACE keeps grants and dependants.

The dedup_decisions and chunk_duplicates CHECK constraints are rebuilt from the same list
of decision methods that the code uses (genloom.db.models.DEDUP_DECISION_METHODS, pinned
here as a literal).

Revision ID: 0011
Revises: 0010
"""
from pathlib import Path

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

PINNED = Path(__file__).resolve().parents[1] / "views" / "0011"

# Creation order: a view may read one listed before it.
ORDER = [
    "v_model_stats", "v_template_stats", "v_daily", "v_model_daily", "v_chunk_citations", "v_document_citations",
    "v_documents_never_cited", "v_feedback_explained", "v_feedback_sources", "v_dataset_versions", "v_dataset_items",
    "v_dataset_lineage", "v_run_final_metrics", "v_runs", "v_leaderboard",
]

DEDUP_DECISION_METHODS = ("exact", "normalized", "minhash", "semantic")
CHECKS = {"dedup_decisions": "ck_dedup_decisions_method", "chunk_duplicates": "ck_chunk_duplicates_method"}

READER = "genloom_reader"


def _methods_sql(methods) -> str:
    return "method IN (" + ", ".join(f"'{m}'" for m in methods) + ")"


def upgrade() -> None:
    for name in ORDER:
        op.execute(f"CREATE OR REPLACE VIEW {name} AS\n" + (PINNED / f"{name}.sql").read_text(encoding="utf-8"))
    # The reader (migration 0007) may read every view, including any this migration adds.
    op.execute(f"""
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{READER}') THEN
        GRANT SELECT ON {', '.join(ORDER)} TO {READER};
    END IF;
END
$$;
""")
    for table, name in CHECKS.items():
        op.drop_constraint(name, table, type_="check")
        op.create_check_constraint(name, table, _methods_sql(DEDUP_DECISION_METHODS))


def downgrade() -> None:
    # The views' SQL is 0007/0009's own, so they stay as they are; so do the constraints' values.
    pass
