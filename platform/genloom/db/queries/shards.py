"""Named queries of the training read path (genloom/datasets/loading.py and shards.py).

These run on the psycopg connection of `stream_connection()` (server-side cursors, binary
bytea), not on a Session: a training epoch streams far more rows than an ORM result should
hold. The caller owns that connection and its transactions. Packed shards are a cache of
`items` and `dataset_members` (migration 0008): deleting them is always safe.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import Any

from genloom.db.queries.datasets import dataset_items

# Pack a split's images into rows of PER items each, in a fixed pseudo-random order (md5 of each
# item's content hash), so every shard is a uniform sample of the split.
_PACK_SQL = """
INSERT INTO dataset_shards (version_id, split, shard_no, item_count, shape, item_ids, labels, payload)
SELECT %(v)s, %(split)s, rn / %(per)s, count(*), %(shape)s,
       array_agg(id ORDER BY rn), array_agg(label ORDER BY rn), string_agg(payload, ''::bytea ORDER BY rn)
FROM (
    SELECT item_id AS id, label, payload, row_number() OVER (ORDER BY md5(sha256 || 'genloom-shard')) - 1 AS rn
    FROM ({members}) AS di
) AS packed
GROUP BY rn / %(per)s
""".format(members=dataset_items("%(v)s", split="%(split)s"))

# A split's members for a row stream; shuffled reads order by md5(sha256 || 'seed:epoch').
_STREAM_SQL = (
    "SELECT item_id, modality, payload, shape, label, text "
    f"FROM ({dataset_items('%s', split='%s')}) AS di ORDER BY {{order}}"
)


def version_packable(conn: Any, version_id: int) -> bool:
    """Whether the version is sealed and holds images (only those are packed)."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT v.sealed AND d.modality = 'image' FROM dataset_versions v JOIN datasets d ON d.id = v.dataset_id "
            "WHERE v.id = %s",
            (version_id,),
        )
        row = cur.fetchone()
    return bool(row and row[0])


def lock_split(cur: Any, version_id: int, split: str) -> None:
    """Serialise packers of one split until the transaction ends (DDP ranks, parallel jobs)."""
    cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"genloom.shards:{version_id}:{split}",))


def split_shapes(cur: Any, version_id: int, split: str) -> list[tuple[int, ...]]:
    """Up to two distinct image shapes of the split (more than one: it cannot be packed); () for none."""
    cur.execute(f"SELECT DISTINCT shape FROM ({dataset_items('%s', split='%s')}) AS di LIMIT 2", (version_id, split))
    return [tuple(r[0] or ()) for r in cur.fetchall()]


def pack_split(cur: Any, version_id: int, split: str, *, per: int, shape: tuple[int, ...]) -> None:
    """Write the split's shards, PER images each (the caller holds lock_split)."""
    cur.execute(_PACK_SQL, {"v": version_id, "split": split, "per": per, "shape": list(shape)})


def list_shards(cur: Any, version_id: int, split: str) -> list[tuple[int, int]]:
    """(shard_no, item_count) of the split's packed shards, in order ([] when not packed yet)."""
    cur.execute(
        "SELECT shard_no, item_count FROM dataset_shards WHERE version_id = %s AND split = %s ORDER BY shard_no",
        (version_id, split),
    )
    return [(r[0], r[1]) for r in cur.fetchall()]


def fetch_shards(conn: Any, version_id: int, split: str, shard_nos: list[int]) -> Iterator[tuple]:
    """(shape, item_ids, labels, payload) of each shard in turn, bytea as raw bytes; ends the read transaction."""
    with conn.cursor(binary=True) as cur:
        for shard_no in shard_nos:
            cur.execute(
                "SELECT shape, item_ids, labels, payload FROM dataset_shards "
                "WHERE version_id = %s AND split = %s AND shard_no = %s",
                (version_id, split, shard_no),
            )
            yield cur.fetchone()
    conn.rollback()


def stream_split(
    conn: Any, version_id: int, split: str, *, shuffle_key: str | None, itersize: int
) -> Generator[tuple, None, None]:
    """(item_id, modality, payload, shape, label, text) of the split through a server-side cursor,
    by item id, or shuffled by md5(sha256 || SHUFFLE_KEY); ITERSIZE rows per round trip."""
    order = "md5(sha256 || %s)" if shuffle_key is not None else "item_id"
    params: tuple[Any, ...] = (version_id, split) + ((shuffle_key,) if shuffle_key is not None else ())
    # binary: bytea arrives as raw bytes instead of hex text (half the bytes, no parsing).
    with conn.cursor(name=f"genloom_stream_{version_id}_{split}", binary=True) as cur:
        cur.itersize = itersize
        cur.execute(_STREAM_SQL.format(order=order), params)
        yield from cur
