"""v_model_stats joins the model registry as a subquery, so the view (and `genloom report`) works on Citus

On a Citus 14 cluster (genloom.db.distribute: every table distributed by tenant) the view's outer
join of the aggregated generation log to `models` failed under the tenant policy with "failed to
postpone qual containing lateral reference", and with it `genloom report` and the analytics summary.
The registry is now joined as `(SELECT * FROM models OFFSET 0)`: Citus reads the tenant's registry
rows first and joins them on the coordinator. On one node the result and the plan's shape (a hash
join of a few registry rows) are unchanged.

The view is re-created from the copy pinned with this revision (migrations/views/0026/), with the
caller's rights (security_invoker: CREATE OR REPLACE resets a view's options) and readable by
genloom_reader. Its columns are unchanged, so CREATE OR REPLACE works both ways.

Revision ID: 0026
Revises: 0025
"""

from pathlib import Path

from alembic import op

revision = "0026"
down_revision = "0025"
branch_labels = None
depends_on = None

VIEWS = Path(__file__).resolve().parents[1] / "views"
READER = "genloom_reader"
CHANGED = ["v_model_stats"]


def _create_views(folder: Path) -> None:
    """Each changed view from `folder`, with the caller's rights and readable by genloom_reader."""
    for name in CHANGED:
        sql = (folder / f"{name}.sql").read_text(encoding="utf-8")
        op.execute(f"CREATE OR REPLACE VIEW {name} AS\n{sql}")
        op.execute(f"""
            DO $$
            BEGIN
                IF current_setting('server_version_num')::int >= 150000 THEN
                    ALTER VIEW {name} SET (security_invoker = true);
                END IF;
                IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{READER}') THEN
                    GRANT SELECT ON {name} TO {READER};
                END IF;
            END $$;
        """)


def upgrade() -> None:
    _create_views(VIEWS / "0026")


def downgrade() -> None:
    _create_views(VIEWS / "0017")
