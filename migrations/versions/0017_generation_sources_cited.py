"""generation_sources.cited: which sources the answer cites, not just which were retrieved

Every source retrieved into a prompt was counted as a citation: an answer citing only [2] of five
sources credited all five documents with the citation and with the answer's feedback. The log now
records, per source, whether the answer's [n] markers name it; the citation views (v_chunk_citations,
v_document_citations, v_documents_never_cited, v_feedback_sources) count and credit only cited
sources, keep `retrievals` beside them, and v_feedback_explained shows the flag per source.

Existing rows are filled from the logged answer: a source is cited when the answer holds its
`[rank]` marker. An answer sealed with GENLOOM_ENCRYPTION_KEY cannot be read by SQL: its sources
stay NULL (unknown), which the views count as cited, as they did before.

The views are re-created from the copy pinned with this revision (migrations/views/0017/), with
the caller's rights (security_invoker: CREATE OR REPLACE resets a view's options) and readable by
genloom_reader.

Revision ID: 0017
Revises: 0015
"""

from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

VIEWS = Path(__file__).resolve().parents[1] / "views"
READER = "genloom_reader"
CHANGED = ["v_chunk_citations", "v_document_citations", "v_documents_never_cited", "v_feedback_explained",
           "v_feedback_sources"]

BACKFILL = r"""
UPDATE generation_sources s
SET cited = (g.status = 'ok' AND g.output LIKE '%[' || s.rank || ']%')
FROM generations g
WHERE g.id = s.generation_id AND (g.output IS NULL OR g.output NOT LIKE 'gle1:%')
"""


def _create_views(folder: Path, *, replace: bool) -> None:
    """Each changed view from `folder`, with the caller's rights and readable by genloom_reader."""
    for name in CHANGED:
        sql = (folder / f"{name}.sql").read_text(encoding="utf-8")
        op.execute(f"CREATE {'OR REPLACE ' if replace else ''}VIEW {name} AS\n{sql}")
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
    op.add_column("generation_sources", sa.Column("cited", sa.Boolean, nullable=True))
    op.execute(BACKFILL)
    _create_views(VIEWS / "0017", replace=True)


def downgrade() -> None:
    # The older views have fewer columns: CREATE OR REPLACE cannot drop columns, so drop first.
    for name in reversed(CHANGED):
        op.execute(f"DROP VIEW {name}")
    _create_views(VIEWS / "0013", replace=False)
    op.drop_column("generation_sources", "cited")
