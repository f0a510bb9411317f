"""Ad-hoc SQL that cannot write: `genloom sql`.

The safety (a login role with SELECT grants only, checked before every statement; a READ ONLY
transaction; one statement per call; a watchdog) is the store's: genloom/db/reader.py. This
module is the job over it: run one statement and record it in the audit trail.
"""

from __future__ import annotations

from genloom.db.reader import DEFAULT_LIMIT, DEFAULT_TIMEOUT_S, SqlResult, run_readonly

__all__ = ["DEFAULT_LIMIT", "DEFAULT_TIMEOUT_S", "SqlResult", "run_sql"]


def run_sql(query: str, *, limit: int = DEFAULT_LIMIT, timeout_s: float = DEFAULT_TIMEOUT_S) -> SqlResult:
    """Run one statement as the read-only role; keep at most `limit` rows.

    Fetches limit + 1 rows and stops the server there, so `truncated` is exact and a
    huge result costs no more than the rows kept. The audit trail gets the statement's
    sha256 (not its text, which may hold values) and the outcome.
    """
    from genloom import audit
    from genloom.db.engine import session_scope

    outcome = "error"
    try:
        result = run_readonly(query, limit=limit, timeout_s=timeout_s)
        outcome = "ok"
        return result
    finally:
        if query.strip():
            with session_scope() as s:
                audit.record(s, "sql.run", audit.statement_hash(query.strip()), outcome=outcome)
