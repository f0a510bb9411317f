"""The analytics views as source: one `.sql` file per view in this folder.

Each file starts with a header comment `-- v_name: what it answers` (continued on
`--   ` lines), then comments on why the SQL is shaped as it is, then the view's query.
The files are the one definition that everything reads:

- migrations create or replace the views from a pinned copy of these files
  (`migrations/views/<revision>/`, e.g. migration 0011), so an old migration replays the
  SQL it shipped with; changing a view means a new migration with a new copy;
- `genloom analytics views` and the table in docs/analytics.md list them from here;
- tests check that the database's views, these files and the newest pinned copy agree.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

FOLDER = Path(__file__).resolve().parent

# The order docs/analytics.md documents them in; also creation order (a view may read
# one listed before it). Every file is listed, and nothing else (a test checks).
ORDER = [
    "v_model_stats",
    "v_template_stats",
    "v_daily",
    "v_model_daily",
    "v_chunk_citations",
    "v_document_citations",
    "v_documents_never_cited",
    "v_feedback_explained",
    "v_feedback_sources",
    "v_dataset_versions",
    "v_dataset_items",
    "v_dataset_lineage",
    "v_run_final_metrics",
    "v_runs",
    "v_leaderboard",
    "v_audit_log",
]


@dataclasses.dataclass(frozen=True)
class ViewSource:
    name: str
    description: str  # the header's first paragraph, after "v_name: "
    sql: str  # the whole file: what `CREATE OR REPLACE VIEW name AS` takes


def parse(name: str, text: str) -> ViewSource:
    """A view file's description (its header's first paragraph) and SQL."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith(f"-- {name}: "):
        raise ValueError(f"{name}.sql must start with '-- {name}: <what it answers>'")
    parts = [lines[0][len(f"-- {name}: ") :].strip()]
    for line in lines[1:]:
        if not line.startswith("--   "):
            break
        parts.append(line[len("--   ") :].strip())
    return ViewSource(name=name, description=" ".join(parts), sql=text)


def read_views(folder: Path = FOLDER, order: list[str] = ORDER) -> list[ViewSource]:
    """The views in `order`, read from `folder`."""
    return [parse(name, (folder / f"{name}.sql").read_text(encoding="utf-8")) for name in order]


def files(folder: Path = FOLDER) -> set[str]:
    return {p.stem for p in folder.glob("v_*.sql")}


def markdown_table() -> str:
    """The table of views in docs/analytics.md (between its `views:begin`/`views:end` markers)."""
    rows = ["| view | what it answers |", "| --- | --- |"]
    rows += [
        f"| [`{v.name}`](../platform/genloom/analytics/views/{v.name}.sql) | {v.description} |" for v in read_views()
    ]
    return "\n".join(rows)


# name → description, in ORDER: what `genloom analytics views` prints.
VIEWS: dict[str, str] = {v.name: v.description for v in read_views()}
