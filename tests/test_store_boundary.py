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

# module → (raw SQL sites it may have, why). At most MAX_SITES in all, each with its reason.
# None today: every query outside genloom/retrieval is a named function in genloom/db (issue 24).
ALLOWED: dict[str, tuple[int, str]] = {}
MAX_SITES = 10  # issue 24: the exceptions stay a short list, not a second home for queries


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


def test_the_exceptions_stay_few():
    found = raw_sql_sites()
    assert sum(n for n, _ in ALLOWED.values()) <= MAX_SITES, "the allowed list outgrew its bound: move queries to genloom/db"
    assert sum(found.values()) <= MAX_SITES, f"{sum(found.values())} raw SQL sites outside the store: {dict(found)}"
    assert all(reason.strip() for _, reason in ALLOWED.values()), "every exception says why"
