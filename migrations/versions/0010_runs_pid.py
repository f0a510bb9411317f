"""runs.pid: the process that runs a job, so a job whose process died can be marked failed

A run is committed as `running` before its work starts. If the process is killed (kill -9,
a crash, power loss) nothing marks it finished, and it stayed `running` forever. With the
host and the pid of its process recorded, any later genloom command on that host can see the
process is gone (or that the pid now belongs to a younger process) and mark the run failed.
Runs started before this revision have no pid and are left as they are.

Revision ID: 0010
Revises: 0009
"""

from alembic import op
import sqlalchemy as sa

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("pid", sa.Integer, nullable=True))
    # The reconcile query looks up running runs of one host: keep it an index scan.
    op.create_index("ix_runs_running_host", "runs", ["host"], postgresql_where=sa.text("status = 'running'"))


def downgrade() -> None:
    op.drop_index("ix_runs_running_host", table_name="runs")
    op.drop_column("runs", "pid")
