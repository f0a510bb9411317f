"""datasets training: issue 5: datasets and training-job additions

Indexes for the queries the datasets and training jobs run (per-item scores, origin
filters, resumable-run lookup), and `item_lineage`: one row per item with the chain
item → sampling run → model → training run → input dataset version, so "where did this
synthetic image come from?" is one SELECT.

Revision ID: 0004
Revises: 0003
"""
from alembic import op
import sqlalchemy as sa

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

LINEAGE_VIEW = """
CREATE VIEW item_lineage AS
SELECT i.id                AS item_id,
       i.sha256,
       i.origin,
       i.label,
       sr.id               AS sampling_run_id,
       m.id                AS model_id,
       m.name || '@' || m.version AS model,
       m.architecture,
       tr.id               AS training_run_id,
       dv.id               AS training_version_id,
       d.name || '@' || dv.version AS training_dataset
FROM items i
LEFT JOIN runs sr ON sr.id = i.run_id AND sr.kind = 'sample'
LEFT JOIN models m ON m.id = i.model_id
LEFT JOIN runs tr ON tr.id = m.run_id
LEFT JOIN dataset_versions dv ON dv.id = COALESCE(tr.input_version_id, m.input_version_id)
LEFT JOIN datasets d ON d.id = dv.dataset_id
"""


def upgrade() -> None:
    # Per-item metrics (anomaly scores) are looked up by item.
    op.create_index("ix_metrics_item", "metrics", ["item_id"], postgresql_where=sa.text("item_id IS NOT NULL"))
    op.create_index("ix_items_origin", "items", ["origin"])
    # --resume finds the newest unfinished train run of a model name.
    op.execute("CREATE INDEX ix_runs_train_name ON runs ((params->>'name'), id) WHERE kind = 'train'")
    op.execute(LINEAGE_VIEW)


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS item_lineage")
    op.execute("DROP INDEX IF EXISTS ix_runs_train_name")
    op.drop_index("ix_items_origin", table_name="items")
    op.drop_index("ix_metrics_item", table_name="metrics")
