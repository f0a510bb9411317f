"""Reading a dataset version into tensors: streamed batches for training, whole splits for evaluation.

    for batch in stream_batches(v.id, "train", 128, shuffle=True, seed=0, epoch=3):
        batch.x, batch.y, batch.labels, batch.texts, batch.item_ids

Memory stays bounded whatever the dataset's size; shuffled reads of sealed image
versions use packed shards (shards.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

import numpy as np

from genloom.datasets.items import image_batch, item_text
from genloom.datasets.prefetch import prefetched
from genloom.datasets.shards import packable, shard_batches
from genloom.db.models import SPLITS
from genloom.db.queries.shards import stream_split
from genloom.errors import BadInput

__all__ = ["Batch", "load_split", "prefetched", "stream_batches"]


@dataclasses.dataclass
class Batch:
    item_ids: list[int]
    labels: list[str | None]
    x: Any = None  # images: float32 tensor N×C×H×W in [0, 1]
    y: Any = None  # class indices (LongTensor, -1 for unlabelled) when a label index was given
    texts: list[str] | None = None  # text items

    def __len__(self) -> int:
        return len(self.item_ids)


def stream_batches(
    version_id: int,
    split: str,
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
    epoch: int = 0,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool = False,
    label_index: dict[str, int] | None = None,
    engine: Any = None,
    fetch_rows: int | None = None,
    packed: bool = True,
) -> Iterator[Batch]:
    """Yield batches of one split, streamed from Postgres; memory stays bounded whatever the dataset's size.

    Shuffled reads of a sealed image version (training) read packed shards
    (genloom.datasets.shards: a seeded block shuffle, built on the first such read). Other
    reads stream rows through a server-side (named) cursor; shuffled ones order by
    md5(sha256 || seed:epoch) in Postgres. Under DDP each rank keeps every world_size-th item.
    packed=False forces the row stream (benchmarks compare the two).
    """
    import torch

    from genloom.db.engine import stream_connection

    if split not in SPLITS:
        raise BadInput(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    # The stream's rows (packed shards it writes) carry the caller's tenant: stream_connection sets it.
    with stream_connection(engine) as conn:
        if shuffle and packed and packable(conn, version_id, split):
            for x, ids, labels, y in shard_batches(
                conn,
                version_id,
                split,
                batch_size,
                seed=seed,
                epoch=epoch,
                rank=rank,
                world_size=world_size,
                drop_last=drop_last,
                label_index=label_index,
            ):
                batch = Batch(item_ids=ids.tolist(), labels=labels.tolist())
                batch.x = torch.from_numpy(x).to(torch.float32).div_(255.0)
                if label_index is not None:
                    batch.y = torch.from_numpy(y)
                yield batch
            return
        rows = stream_split(
            conn,
            version_id,
            split,
            shuffle_key=f"{seed}:{epoch}" if shuffle else None,
            # rows per network round trip: a few batches amortises latency
            itersize=fetch_rows or max(batch_size * 4, 512),
        )
        with contextlib.closing(rows):  # the server-side cursor closes before the connection goes
            pending: list[tuple] = []
            index = 0
            for row in rows:
                if world_size > 1:
                    index += 1
                    if (index - 1) % world_size != rank:
                        continue
                pending.append(row)
                if len(pending) == batch_size:
                    yield _to_batch(pending, label_index, torch)
                    pending = []
            if pending and not drop_last:
                yield _to_batch(pending, label_index, torch)
        conn.rollback()


def _to_batch(rows: list[tuple], label_index: dict[str, int] | None, torch) -> Batch:
    ids = [r[0] for r in rows]
    labels = [r[4] for r in rows]
    batch = Batch(item_ids=ids, labels=labels)
    if rows[0][1] == "image":
        flat = image_batch([r[2] for r in rows], tuple(rows[0][3]), len(rows))
        batch.x = torch.from_numpy(flat.astype(np.float32) / 255.0)
    else:
        batch.texts = [item_text(r[5], r[2]) for r in rows]
    if label_index is not None:
        batch.y = torch.tensor([label_index.get(l, -1) if l is not None else -1 for l in labels], dtype=torch.long)
    return batch


def load_split(
    version_id: int,
    split: str,
    *,
    label_index: dict[str, int] | None = None,
    limit: int | None = None,
    engine: Any = None,
) -> Batch:
    """A whole (small) split as one batch, in a stable order: validation sets, tests, benchmarks."""
    import torch

    parts: list[Batch] = []
    total = 0
    for b in stream_batches(version_id, split, 4096, label_index=label_index, engine=engine):
        parts.append(b)
        total += len(b)
        if limit is not None and total >= limit:
            break
    if not parts:
        return Batch(item_ids=[], labels=[], texts=[])
    out = Batch(
        item_ids=[i for b in parts for i in b.item_ids],
        labels=[l for b in parts for l in b.labels],
    )
    if parts[0].x is not None:
        out.x = torch.cat([b.x for b in parts])
    if parts[0].texts is not None:
        out.texts = [t for b in parts for t in b.texts or []]
    if parts[0].y is not None:
        out.y = torch.cat([b.y for b in parts])
    if limit is not None:
        out.item_ids, out.labels = out.item_ids[:limit], out.labels[:limit]
        out.x = out.x[:limit] if out.x is not None else None
        out.y = out.y[:limit] if out.y is not None else None
        out.texts = out.texts[:limit] if out.texts is not None else None
    return out
