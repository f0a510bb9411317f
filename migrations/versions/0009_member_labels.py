"""member labels: an item's label belongs to its membership in a version when the two differ

Items are addressed by content alone, so the same image imported again under another label
(a relabelled dataset) is the same item. Until now it silently kept the label of its first
import. `dataset_members.label` holds the label an item has in one version when it differs
from `items.label` ('' for "no label"); NULL means "the item's own label". The label of an
item in a version is therefore NULLIF(COALESCE(m.label, i.label), ''); the view
`v_dataset_items` spells that out for SQL users. Manifests of sealed versions are unchanged
(a member without an override hashes as before).

Revision ID: 0009
Revises: 0008
"""
from alembic import op
import sqlalchemy as sa

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

VIEW = """
CREATE VIEW v_dataset_items AS
SELECT d.name AS dataset, v.version, m.version_id, m.item_id, m.split,
       NULLIF(COALESCE(m.label, i.label), '') AS label, i.origin, i.modality, i.sha256, i.run_id, i.model_id
FROM dataset_members m
JOIN items i ON i.id = m.item_id
JOIN dataset_versions v ON v.id = m.version_id
JOIN datasets d ON d.id = v.dataset_id
"""


def upgrade() -> None:
    op.add_column("dataset_members", sa.Column("label", sa.Text, nullable=True))
    op.execute(VIEW)


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS v_dataset_items")
    op.drop_column("dataset_members", "label")
