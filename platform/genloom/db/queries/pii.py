"""Named queries of PII detection (genloom/pii.py): where findings were, never what they were."""

from __future__ import annotations

import json

import sqlalchemy as sa
from sqlalchemy.orm import Session

# One row per PII type: its count and its spans as int4ranges, from one JSON parameter
# [{"type", "n", "starts", "ends"}, …] (a statement per finding would cost a round trip each).
_INSERT_FINDINGS_SQL = """
INSERT INTO pii_findings (object_kind, object_id, field, pii_type, count, spans, mode)
SELECT :k, :o, :f, t.type, t.n,
       ARRAY(SELECT int4range(s, e) FROM unnest(t.starts, t.ends) AS u(s, e)), :m
FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS t(type text, n int, starts int[], ends int[])
"""


def insert_findings(
    session: Session,
    *,
    object_kind: str,
    object_id: int,
    field: str,
    mode: str,
    spans_by_type: dict[str, list[tuple[int, int]]],
) -> None:
    """Record the (start, end) spans found per PII type in one field of one object."""
    rows = [
        {"type": t, "n": len(spans), "starts": [s for s, _ in spans], "ends": [e for _, e in spans]}
        for t, spans in spans_by_type.items()
    ]
    session.execute(
        sa.text(_INSERT_FINDINGS_SQL),
        {"k": object_kind, "o": object_id, "f": field, "m": mode, "rows": json.dumps(rows)},
    )
