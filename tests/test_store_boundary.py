"""The store is the only place that writes SQL by hand or talks to the driver.

Raw SQL (`sa.text(...)`, `exec_driver_sql(...)`) belongs in genloom/db (named queries next to the
schema) and genloom/retrieval (the documented search SQL). Every module elsewhere that still has
some is listed below with its count and the reason; the count may only go down. A new raw SQL
string outside the store fails here: put it in a named query in genloom/db instead.
"""

from __future__ import annotations

import ast
from collections import Counter

from conftest import REPO_ROOT

STORE = ("platform/genloom/db/", "platform/genloom/retrieval/")

NOT_YET_MOVED = "raw SQL not yet moved into genloom/db (issue 24, step 6)"
# module → (raw SQL sites it may have, why)
ALLOWED: dict[str, tuple[int, str]] = {
    "ingest/pipeline.py": (17, NOT_YET_MOVED + ": the ingest writes and BM25 indexing calls; the run's collection (issue 25)"),
    "ingest/embed_models.py": (4, NOT_YET_MOVED),
    "ingest/writer.py": (3, NOT_YET_MOVED + ": COPY staging and RETURNING inserts"),
    "platform/genloom/analytics/report.py": (3, NOT_YET_MOVED),
    "platform/genloom/analytics/retention.py": (4, NOT_YET_MOVED + ": the retention deletes"),
    "platform/genloom/analytics/sql.py": (2, "genloom sql checks the role it really logged in as, on its own login"),
    "platform/genloom/analytics/summary.py": (4, NOT_YET_MOVED),
    "platform/genloom/audit.py": (3, NOT_YET_MOVED + " (models.AuditLog exists now; + the hash-chain verify query)"),
    "platform/genloom/crypto.py": (2, NOT_YET_MOVED),
    "platform/genloom/datasets/captions.py": (2, NOT_YET_MOVED + ": captioning a version (issue 31)"),
    "platform/genloom/datasets/export.py": (1, "reads the documented dataset_items() query (datasets/items.py)"),
    "platform/genloom/datasets/importers.py": (4, NOT_YET_MOVED),
    "platform/genloom/datasets/retrieval_pairs.py": (3, NOT_YET_MOVED + ": qrels/feedback pairs (issue 27)"),
    "platform/genloom/datasets/versions.py": (8, NOT_YET_MOVED + " (+2 for the UI's version pages)"),
    "platform/genloom/dedup/collection.py": (2, NOT_YET_MOVED),
    "platform/genloom/dedup/job.py": (1, "reads the documented dataset_items() query (datasets/items.py)"),
    "platform/genloom/dedup/semantic.py": (9, NOT_YET_MOVED + ": pgvector neighbour queries"),
    "platform/genloom/generation/feedback.py": (1, NOT_YET_MOVED + ": the generation's PII mode (issue 25)"),
    "platform/genloom/generation/log.py": (4, NOT_YET_MOVED + ": the UI's generation browser (issue 26)"),
    "platform/genloom/keys.py": (5, NOT_YET_MOVED + " (models.ApiKey exists now; + UI sessions)"),
    "platform/genloom/pii.py": (1, NOT_YET_MOVED + " (models.PiiFinding exists now)"),
    "platform/genloom/registry.py": (1, NOT_YET_MOVED + ": the UI's model list (issue 26)"),
}


def raw_sql_sites() -> Counter[str]:
    """`sa.text(...)` and `.exec_driver_sql(...)` calls per module of the library, outside the store."""
    counts: Counter[str] = Counter()
    for base in ("platform/genloom", "ingest"):
        for path in sorted((REPO_ROOT / base).rglob("*.py")):
            rel = path.relative_to(REPO_ROOT).as_posix()
            if rel.startswith(STORE):
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                    continue
                func = node.func
                sa_text = (
                    func.attr == "text" and isinstance(func.value, ast.Name) and func.value.id in ("sa", "sqlalchemy")
                )
                if sa_text or func.attr == "exec_driver_sql":
                    counts[rel] += 1
    return counts


def test_raw_sql_lives_with_the_store():
    found = raw_sql_sites()
    over = {
        module: f"{n} raw SQL sites, {ALLOWED.get(module, (0, ''))[0]} allowed"
        for module, n in found.items()
        if n > ALLOWED.get(module, (0, ""))[0]
    }
    assert not over, f"raw SQL outside genloom/db and genloom/retrieval (write a named query in genloom/db): {over}"


def test_the_allowed_list_is_no_longer_than_the_code():
    """A module that lost its raw SQL leaves the list (so the list stays the truth)."""
    found = raw_sql_sites()
    stale = {m: (n, found.get(m, 0)) for m, (n, _) in ALLOWED.items() if found.get(m, 0) < n}
    assert not stale, f"lower these counts in ALLOWED (allowed, found): {stale}"
