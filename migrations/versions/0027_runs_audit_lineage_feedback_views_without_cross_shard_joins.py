"""v_runs, v_audit_log, v_dataset_lineage and v_feedback_sources without cross-shard joins, for Citus

On a Citus 14 cluster (genloom.db.distribute: every table distributed by tenant) three views failed:
v_runs and v_audit_log with "complex joins are only supported when all distributed tables are
co-located and joined on their distribution columns" (outer joins and correlated subqueries on ids
alone), v_dataset_lineage with "recursive CTEs are only supported when they contain a filter on the
distribution column"; and `EXPLAIN ANALYZE` of v_feedback_sources, which `genloom analytics
summary` runs to time each view, repartitioned its five joins and exhausted the coordinator's memory
(Citus 14.0.1; a plain SELECT worked). Now:

- v_runs joins each table on the tenant too, and its per-run aggregates as grouped subqueries;
- v_feedback_sources joins each table on the tenant too (co-located on each shard);
- v_audit_log joins the API keys as a subquery (a refused request is logged under the request's
  tenant, not necessarily the key's, so not on the tenant);
- v_dataset_lineage reads its tables in plain CTEs and nests the recursive walk in one of them,
  which Citus plans on its own (on the coordinator, over the tenant's rows).

Under the tenant policy every row a caller sees has the caller's tenant, so on one node each view
returns what it did (tests/test_cluster.py compares every view on both topologies).

The views are re-created from the copy pinned with this revision (migrations/views/0027/), with the
caller's rights (security_invoker: CREATE OR REPLACE resets a view's options) and readable by
genloom_reader. Their columns are unchanged, so CREATE OR REPLACE works both ways.

Revision ID: 0027
Revises: 0026
"""

from pathlib import Path

from alembic import op

revision = "0027"
down_revision = "0026"
branch_labels = None
depends_on = None

VIEWS = Path(__file__).resolve().parents[1] / "views"
READER = "genloom_reader"
CHANGED = ["v_dataset_lineage", "v_runs", "v_audit_log", "v_feedback_sources"]


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
    _create_views(VIEWS / "0027")


def downgrade() -> None:
    _create_views(VIEWS / "0026")
