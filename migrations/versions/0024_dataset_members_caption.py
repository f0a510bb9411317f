"""dataset_members.caption: an item's caption in one dataset version

Captions condition the text-conditional models (clip, text-conditional diffusion, latent
diffusion). They belong to a version's membership, not to the content-addressed item: the
same image can be captioned differently in two versions, and re-captioning makes a new
version while the old one keeps its captions (versions are immutable). NULL: no caption
(the models then phrase the item's label, genloom.architectures.captions).

Revision ID: 0024
Revises: 0023
"""

import sqlalchemy as sa
from alembic import op

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("dataset_members", sa.Column("caption", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("dataset_members", "caption")
