"""Named queries over the audit trail (genloom/audit.py): its page view and the hash chain's check.

Each runs in the caller's session; the tenant policy limits both to the caller's tenant.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session


def audit_page(
    session: Session, *, limit: int, action: str | None = None, before: int | None = None
) -> list[dict[str, Any]]:
    """Newest first from v_audit_log (which adds the key's public prefix); ACTION matches itself and
    its sub-actions (`key` matches `key.create`); BEFORE (an id) pages by keyset."""
    conditions = (["(action = :a OR action LIKE :prefix)"] if action else []) + (
        ["id < :before"] if before is not None else []
    )
    query = "SELECT * FROM v_audit_log" + (" WHERE " + " AND ".join(conditions) if conditions else "")
    rows = session.execute(
        sa.text(query + " ORDER BY id DESC LIMIT :n"),
        {"a": action, "prefix": f"{action}.%", "n": limit, "before": before},
    ).mappings()
    return [dict(r) for r in rows]


# Per tenant, in chain order: each row's stored hash, the hash recomputed from its columns (the
# same function the insert trigger uses), and the row before it, to find gaps and broken links.
_CHAIN_SQL = """
SELECT tenant, chain_seq, id, prev_hash, hash,
       audit_log_row_hash(prev_hash, chain_seq, id, at, tenant, key_id, os_user, role, action, object,
                          outcome, detail) AS recomputed,
       lag(hash) OVER w AS previous_hash,
       lag(chain_seq) OVER w AS previous_seq
FROM audit_log
WINDOW w AS (PARTITION BY tenant ORDER BY chain_seq)
ORDER BY tenant, chain_seq
"""


def audit_chain(session: Session) -> list[sa.Row[Any]]:
    """(tenant, chain_seq, id, prev_hash, hash, recomputed, previous_hash, previous_seq) per entry."""
    return list(session.execute(sa.text(_CHAIN_SQL)))
