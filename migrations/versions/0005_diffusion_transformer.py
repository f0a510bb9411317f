"""diffusion transformer: issue 6 needs no schema of its own (models, runs, items and metrics hold it all);
kept as an empty revision so the chain that later migrations name stays linear.

Revision ID: 0005
Revises: 0004
"""
from alembic import op
import sqlalchemy as sa

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
