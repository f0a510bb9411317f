"""generation: issue 4: generation log additions (default template, indexes)

Revision ID: 0003
Revises: 0002
"""
from alembic import op
import sqlalchemy as sa

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# Version 1 of the shipped template. Templates are immutable (a trigger from 0001), so a
# changed default ships as version 2 in a later migration, never as an edit of this text.
DEFAULT_TEMPLATE = """Answer the question using only the numbered sources below. \
Cite every claim with the number of its source in brackets, like [1]. \
If the sources do not contain the answer, say that you do not know.

Sources:
{sources}

Question: {question}"""


def upgrade() -> None:
    op.execute(
        sa.text(
            "INSERT INTO prompt_templates (name, version, text, metadata) "
            "VALUES ('default', 1, :text, '{\"shipped\": true}'::jsonb) "
            "ON CONFLICT (name, version) DO NOTHING"
        ).bindparams(text=DEFAULT_TEMPLATE)
    )
    # Registry models used in answers (analytics join generations → models → runs).
    op.create_index("ix_generations_model_id", "generations", ["model_id"])
    # Failures are rare: a small partial index makes "errors in the last day" cheap.
    op.create_index(
        "ix_generations_errors", "generations", ["created_at"], postgresql_where=sa.text("status = 'error'")
    )
    op.create_index("ix_sessions_user", "sessions", ["user_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_sessions_user", table_name="sessions")
    op.drop_index("ix_generations_errors", table_name="generations")
    op.drop_index("ix_generations_model_id", table_name="generations")
    op.execute("DELETE FROM prompt_templates WHERE name = 'default' AND version = 1")
