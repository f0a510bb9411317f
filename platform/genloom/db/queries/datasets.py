"""Named queries of datasets: a version's members (`dataset_items`, the one query every reader
selects from), its counts, manifest, diff and lineage, and the lookups of the importers.

Each runs in the caller's session and transaction (genloom/datasets owns the rules: sealing,
splits, labels; these only read and write rows).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

# An item's label within a version (m = dataset_members, i = items); '' on a member means "no label".
# The view v_dataset_items (analytics/views/v_dataset_items.sql) spells out the same expression.
EFFECTIVE_LABEL = "NULLIF(COALESCE(m.label, i.label), '')"


def dataset_items(version: str, *, split: str | None = None) -> str:
    """The one query for a dataset version's members: every reader (training streams, shards,
    export, dedup, counts) selects from it instead of joining members and items itself.

    `version` and `split` are placeholders in the caller's parameter style (":v", "%(v)s",
    "%s"). Columns: item_id, split, label (the effective label in this version),
    label_override (dataset_members.label as stored), caption (this version's, or NULL), modality,
    origin, sha256, dtype, shape, payload, text, run_id, model_id. Postgres inlines it as a subquery, so unused columns cost nothing.
    """
    where = f"m.version_id = {version}" + (f" AND m.split = {split}" if split else "")
    return (
        f"SELECT i.id AS item_id, m.split, {EFFECTIVE_LABEL} AS label, m.label AS label_override, m.caption, "
        "i.modality, i.origin, i.sha256, i.dtype, i.shape, i.payload, i.text, i.run_id, i.model_id "
        f"FROM dataset_members m JOIN items i ON i.id = m.item_id WHERE {where}"
    )


# --------------------------------------------------------------------------- versions


def copy_members(session: Session, new_version_id: int, old_version_id: int) -> None:
    """A new version starts with its parent's members, splits, labels and captions."""
    session.execute(
        sa.text(
            "INSERT INTO dataset_members (version_id, item_id, split, label, caption) "
            "SELECT :new, item_id, split, label, caption FROM dataset_members WHERE version_id = :old"
        ),
        {"new": new_version_id, "old": old_version_id},
    )


# sha256 over the sorted "item sha256:split[:label override][\tcaption=…]" lines, one per member.
# A member without an override or caption hashes as it did before they existed; the importers
# compute the same in Python (datasets/importers.manifest_of) to find an identical sealed version.
_MANIFEST_SQL = (
    "SELECT encode(sha256(convert_to(string_agg(sha256 || ':' || split || COALESCE(':' || label_override, '') "
    "|| COALESCE(E'\\tcaption=' || caption, ''), "
    "E'\\n' ORDER BY sha256, split), 'UTF8')), 'hex') "
    f"FROM ({dataset_items(':v')}) AS di"
)


def manifest_sha256(session: Session, version_id: int) -> str | None:
    """The version's manifest hash; None when it has no members."""
    return session.scalar(sa.text(_MANIFEST_SQL), {"v": version_id})


_COUNTED = ("label", "origin", "split")  # the member columns versions are counted by


def member_counts(session: Session, version_id: int, column: str) -> dict[str, int]:
    """Members per value of COLUMN (label, origin or split); a NULL counts under ''."""
    if column not in _COUNTED:
        raise ValueError(f"members are counted by one of {_COUNTED}, not {column!r}")
    rows = session.execute(
        sa.text(f"SELECT {column} AS k, count(*) FROM ({dataset_items(':v')}) AS di GROUP BY 1"),
        {"v": version_id},
    ).all()
    return {("" if k is None else str(k)): int(n) for k, n in rows}


def modality_shapes(session: Session, version_id: int) -> list[tuple[str, list[int] | None, int]]:
    """(modality, shape, members) per kind of item in the version: training needs exactly one."""
    rows = session.execute(
        sa.text(f"SELECT modality, shape, count(*) FROM ({dataset_items(':v')}) AS di GROUP BY 1, 2"),
        {"v": version_id},
    ).all()
    return [(str(m), shape, int(n)) for m, shape, n in rows]


# Items only in A, only in B, and in both with another split, label or caption (or the same).
_DIFF_SQL = f"""
WITH a AS (SELECT item_id, split, label, caption FROM ({dataset_items(":a")}) AS di),
     b AS (SELECT item_id, split, label, caption FROM ({dataset_items(":b")}) AS di)
SELECT
  (SELECT count(*) FROM a WHERE item_id NOT IN (SELECT item_id FROM b)) AS removed,
  (SELECT count(*) FROM b WHERE item_id NOT IN (SELECT item_id FROM a)) AS added,
  (SELECT count(*) FROM a JOIN b USING (item_id) WHERE a.split <> b.split) AS moved,
  (SELECT count(*) FROM a JOIN b USING (item_id) WHERE a.label IS DISTINCT FROM b.label) AS relabelled,
  (SELECT count(*) FROM a JOIN b USING (item_id) WHERE a.caption IS DISTINCT FROM b.caption) AS recaptioned,
  (SELECT count(*) FROM a JOIN b USING (item_id) WHERE a.split = b.split
                                                  AND a.label IS NOT DISTINCT FROM b.label
                                                  AND a.caption IS NOT DISTINCT FROM b.caption) AS same
"""

# Items of B that A does not hold, per origin (real, synthetic, …).
_ADDED_BY_ORIGIN_SQL = (
    f"SELECT origin, count(*) FROM ({dataset_items(':b')}) AS di "
    "WHERE item_id NOT IN (SELECT item_id FROM dataset_members WHERE version_id = :a) GROUP BY 1"
)


def diff_counts(session: Session, a_id: int, b_id: int) -> tuple[dict[str, int], dict[str, int]]:
    """(removed/added/moved/relabelled/recaptioned/same counts, items added by origin) from A to B."""
    row = session.execute(sa.text(_DIFF_SQL), {"a": a_id, "b": b_id}).one()
    by_origin = session.execute(sa.text(_ADDED_BY_ORIGIN_SQL), {"a": a_id, "b": b_id}).all()
    return {k: int(v) for k, v in row._mapping.items()}, {str(k): int(v) for k, v in by_origin}


def members_page(session: Session, version_id: int, *, after: int, limit: int) -> list[dict[str, Any]]:
    """LIMIT members with item id past AFTER (keyset, item id order), payloads included."""
    rows = session.execute(
        sa.text(
            f"SELECT item_id, split, label, modality, origin, dtype, shape, payload, text, run_id, model_id "
            f"FROM ({dataset_items(':v')}) AS di WHERE item_id > :after ORDER BY item_id LIMIT :limit"
        ),
        {"v": version_id, "after": after, "limit": limit},
    ).mappings()
    return [dict(r) for r in rows]


def stream_members(session: Session, version_id: int) -> Iterator[sa.Row[Any]]:
    """Every member with all dataset_items columns, in item id order, streamed 1,000 rows at a time."""
    yield from session.execute(
        sa.text(f"SELECT * FROM ({dataset_items(':v')}) AS di ORDER BY item_id"),
        {"v": version_id},
        execution_options={"yield_per": 1000},  # a version may not fit in memory
    )


def members_for_dedup(session: Session, version_id: int, *, images: bool) -> list[tuple[Any, ...]]:
    """(item_id, split, origin, sha256, text, payload, shape, label_override) per member; payload
    and shape only for an image version (NULL otherwise: a text version's payloads are not read)."""
    cols = "item_id, split, origin, sha256, text, " + ("payload, shape" if images else "NULL, NULL")
    rows = session.execute(
        sa.text(f"SELECT {cols}, label_override FROM ({dataset_items(':v')}) AS di"), {"v": version_id}
    )
    return [tuple(r) for r in rows]


def member_texts(session: Session, version_id: int, split: str | None = None) -> list[str | None]:
    """The text of every member (of one split, when given), in item id order."""
    sql = f"SELECT text FROM ({dataset_items(':v', split=':s' if split else None)}) AS m ORDER BY item_id"
    params = {"v": version_id, **({"s": split} if split else {})}
    return [text for (text,) in session.execute(sa.text(sql), params)]


def version_lineage(session: Session, version_id: int) -> list[dict[str, Any]]:
    """Rows of the v_dataset_lineage view for the version (parents, and the models and runs upstream)."""
    rows = session.execute(sa.text("SELECT * FROM v_dataset_lineage WHERE version_id = :v"), {"v": version_id})
    return [dict(r) for r in rows.mappings()]


# --------------------------------------------------------------------------- captions


def member_captions(session: Session, version_id: int) -> dict[int, str]:
    """{item_id: caption} of a version's captioned members."""
    rows = session.execute(
        sa.text("SELECT item_id, caption FROM dataset_members WHERE version_id = :v AND caption IS NOT NULL"),
        {"v": version_id},
    ).all()
    return {int(item_id): caption for item_id, caption in rows}


def members_with_item_metadata(session: Session, version_id: int) -> list[tuple[Any, ...]]:
    """(item_id, split, label_override, label, metadata) per member in item id order (captioning)."""
    rows = session.execute(
        sa.text(
            "SELECT di.item_id, di.split, di.label_override, di.label, i.metadata "
            f"FROM ({dataset_items(':v')}) AS di JOIN items i ON i.id = di.item_id ORDER BY di.item_id"
        ),
        {"v": version_id},
    )
    return [tuple(r) for r in rows]


# --------------------------------------------------------------------------- importers


# One array parameter: IN (...) would exceed the 65,535-parameter limit at MNIST's size.
def stored_item_labels(session: Session, sha256s: Sequence[str]) -> dict[str, str | None]:
    """{sha256: the stored item's own label} for those of SHA256S already stored."""
    rows = session.execute(
        sa.text("SELECT sha256, label FROM items WHERE sha256 = ANY(CAST(:h AS char(64)[]))"), {"h": list(sha256s)}
    )
    return {str(h): label for h, label in rows}


def count_stored_items(session: Session, sha256s: Sequence[str]) -> int:
    """How many of SHA256S are stored items already."""
    return int(
        session.scalar(
            sa.text("SELECT count(*) FROM items WHERE sha256 = ANY(CAST(:h AS char(64)[]))"), {"h": list(sha256s)}
        )
        or 0
    )
