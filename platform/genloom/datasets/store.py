"""Content-addressed items, numbered dataset versions, membership, and streaming into tensors.

The public API other modules build on (callers own sessions; nothing here commits):

    ids = put_items(session, [image_item(arr, label="3"), text_item("hello")])   # dedup by sha256
    v = create_version(session, "digits", modality="image", created_by_run_id=run_id)  # unsealed, parent = latest
    add_members(session, v, zip(ids, splits))
    seal_version(session, v)                                  # item_count + manifest; immutable afterwards
    v = resolve_version(session, "digits@2")                  # NotFound with a helpful message
    info = describe_version(session, v)                       # modality, image shape, labels, split sizes
    for batch in stream_batches(v.id, "train", 128, shuffle=True, seed=0, epoch=3):
        batch.x, batch.y, batch.labels, batch.texts, batch.item_ids

Items are immutable and addressed by the sha256 of their canonical bytes (modality,
dtype, shape, payload), so the same image imported twice, or into two datasets, is one
row. Labels are not part of the address: when a version gives an item another label than
the item's own (a relabelled import), the membership row carries it (`dataset_members.label`,
migration 0009), and every reader here uses `EFFECTIVE_LABEL`. Images are stored as raw uint8 C×H×W bytes; texts as UTF-8 (also in `items.text`
so SQL reads them directly). Sealed versions and their membership are immutable in the
database itself (triggers in migration 0001).
"""

from __future__ import annotations

import contextvars
import dataclasses
import hashlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from genloom.datasets.shards import packable, shard_batches
from genloom.db.models import Dataset, DatasetMember, DatasetVersion, Item, SPLITS
from genloom.db.tenancy import apply_raw
from genloom.errors import BadInput, NotFound
from genloom.refs import format_ref, parse_ref

# --------------------------------------------------------------------------- items


@dataclasses.dataclass
class ItemSpec:
    """An item before it is stored. Build with `image_item` / `text_item`."""

    modality: str
    payload: bytes
    dtype: str | None = None
    shape: list[int] | None = None
    text: str | None = None
    label: str | None = None
    origin: str = "real"
    run_id: int | None = None
    model_id: int | None = None
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def sha256(self) -> str:
        return item_sha256(self.modality, self.dtype, self.shape, self.payload)


def item_sha256(modality: str, dtype: str | None, shape: Sequence[int] | None, payload: bytes) -> str:
    """sha256 over a canonical header + payload: equal content ⇔ equal address."""
    header = "genloom-item-v1\0{}\0{}\0{}\0".format(
        modality, dtype or "", ",".join(str(int(d)) for d in shape) if shape else ""
    ).encode()
    return hashlib.sha256(header + payload).hexdigest()


def image_item(image: Any, *, label: Any = None, origin: str = "real", run_id: int | None = None,
               model_id: int | None = None, metadata: dict[str, Any] | None = None) -> ItemSpec:
    """An image item from an array: uint8 H×W / C×H×W, or float in [0, 1] (quantised to uint8)."""
    arr = np.asarray(image.detach().cpu().numpy() if hasattr(image, "detach") else image)
    if arr.dtype != np.uint8:
        arr = np.clip(np.rint(arr.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise BadInput(f"an image must be H×W or C×H×W, got shape {tuple(arr.shape)}")
    arr = np.ascontiguousarray(arr)
    return ItemSpec(
        modality="image", payload=arr.tobytes(), dtype="uint8", shape=[int(d) for d in arr.shape],
        label=None if label is None else str(label), origin=origin, run_id=run_id, model_id=model_id,
        metadata=dict(metadata or {}),
    )


def text_item(text: str, *, label: Any = None, origin: str = "real", run_id: int | None = None,
              model_id: int | None = None, metadata: dict[str, Any] | None = None) -> ItemSpec:
    return ItemSpec(
        modality="text", payload=text.encode("utf-8"), dtype="utf-8", text=text,
        label=None if label is None else str(label), origin=origin, run_id=run_id, model_id=model_id,
        metadata=dict(metadata or {}),
    )


# An item's label within a version (m = dataset_members, i = items); '' on a member means "no label".
EFFECTIVE_LABEL = "NULLIF(COALESCE(m.label, i.label), '')"


def label_override(stored: str | None, wanted: str | None) -> str | None:
    """What dataset_members.label must hold for an item stored with label `stored` to carry `wanted`."""
    if stored == wanted:
        return None
    return "" if wanted is None else wanted


def label_overrides(session: Session, ids: Sequence[int], labels: Sequence[str | None]) -> list[str | None]:
    """Per-member overrides for items `ids` that should carry `labels` in a version (None: no override)."""
    stored = dict(session.execute(sa.text("SELECT id, label FROM items WHERE id = ANY(:ids)"), {"ids": list(set(ids))}).all())
    return [label_override(stored[i], want) for i, want in zip(ids, labels)]


def put_items(session: Session, items: Sequence[ItemSpec], *, chunk: int = 2000) -> list[int]:
    """Store items (existing content is kept, not duplicated); return their ids in input order."""
    ids: dict[str, int] = {}
    for start in range(0, len(items), chunk):
        part = items[start : start + chunk]
        rows: dict[str, dict[str, Any]] = {}
        for it in part:
            rows.setdefault(it.sha256, {
                "sha256": it.sha256, "modality": it.modality, "payload": it.payload, "text": it.text,
                "shape": it.shape, "dtype": it.dtype, "label": it.label, "origin": it.origin,
                "run_id": it.run_id, "model_id": it.model_id, "metadata": it.metadata,
            })
        # per tenant (0013): the same content in two tenants is two items
        stmt = pg_insert(Item).on_conflict_do_nothing(index_elements=["tenant", "sha256"])
        session.execute(stmt, [
            {**{k: v for k, v in r.items() if k != "metadata"}, "metadata_": r["metadata"]} for r in rows.values()
        ])
        found = session.execute(sa.select(Item.sha256, Item.id).where(Item.sha256.in_(list(rows))))
        ids.update({sha: id_ for sha, id_ in found})
    return [ids[it.sha256] for it in items]


# --------------------------------------------------------------------------- datasets and versions


def get_dataset(session: Session, name: str) -> Dataset:
    ds = session.scalar(sa.select(Dataset).where(Dataset.name == name))
    if ds is None:
        known = session.scalars(sa.select(Dataset.name).order_by(Dataset.name).limit(20)).all()
        hint = f" (datasets: {', '.join(known)})" if known else " (none yet: try `genloom datasets import digits --name digits`)"
        raise NotFound(f"no dataset {name!r}{hint}")
    return ds


def resolve_version(session: Session, ref: str, *, sealed_only: bool = True) -> DatasetVersion:
    """'NAME' → its latest sealed version; 'NAME@V' → that version. NotFound says what exists."""
    name, number = parse_ref(ref)
    ds = get_dataset(session, name)
    query = sa.select(DatasetVersion).where(DatasetVersion.dataset_id == ds.id)
    if number is None:
        if sealed_only:
            query = query.where(DatasetVersion.sealed)
        query = query.order_by(DatasetVersion.version.desc()).limit(1)
    else:
        query = query.where(DatasetVersion.version == number)
    version = session.scalars(query).first()
    if version is None:
        existing = session.scalars(
            sa.select(DatasetVersion.version).where(DatasetVersion.dataset_id == ds.id).order_by(DatasetVersion.version)
        ).all()
        have = ", ".join(format_ref(name, v) for v in existing) or "none"
        what = f"version {number}" if number is not None else "sealed version"
        raise NotFound(f"dataset {name!r} has no {what} (versions: {have})")
    return version


def version_ref(session: Session, version: DatasetVersion | int) -> str:
    vid = version if isinstance(version, int) else version.id
    row = session.execute(
        sa.select(Dataset.name, DatasetVersion.version).join(Dataset).where(DatasetVersion.id == vid)
    ).one()
    return format_ref(row[0], row[1])


def create_version(
    session: Session,
    name: str,
    *,
    modality: str | None = None,
    parent: DatasetVersion | None | str = "latest",
    created_by_run_id: int | None = None,
    description: str | None = None,
    metadata: dict[str, Any] | None = None,
    copy_parent: bool = False,
) -> DatasetVersion:
    """A new unsealed version NAME@(latest+1), creating the dataset when absent.

    parent="latest" links it to the newest existing version (None for none); copy_parent
    starts the membership as a copy of the parent's (e.g. adding synthetic items to it).
    """
    # Numbering serialises per dataset name, as the model registry does.
    session.execute(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext("genloom.datasets." + name))))
    ds = session.scalar(sa.select(Dataset).where(Dataset.name == name))
    if ds is None:
        ds = Dataset(name=name, modality=modality)
        session.add(ds)
        session.flush()
    elif modality and ds.modality and ds.modality != modality:
        raise BadInput(f"dataset {name!r} holds {ds.modality} items, not {modality}: choose another --name/--into")
    latest = session.scalars(
        sa.select(DatasetVersion).where(DatasetVersion.dataset_id == ds.id).order_by(DatasetVersion.version.desc()).limit(1)
    ).first()
    parent_version = latest if parent == "latest" else parent
    version = DatasetVersion(
        dataset_id=ds.id,
        version=(latest.version if latest else 0) + 1,
        parent_id=parent_version.id if parent_version is not None else None,
        created_by_run_id=created_by_run_id,
        description=description,
        metadata_=dict(metadata or {}),
    )
    session.add(version)
    session.flush()
    if copy_parent and parent_version is not None:
        session.execute(
            sa.text(
                "INSERT INTO dataset_members (version_id, item_id, split, label) "
                "SELECT :new, item_id, split, label FROM dataset_members WHERE version_id = :old"
            ),
            {"new": version.id, "old": parent_version.id},
        )
    return version


def add_members(session: Session, version: DatasetVersion, members: Iterable[tuple], *, chunk: int = 5000) -> int:
    """Add (item_id, split) or (item_id, split, label_override) tuples; an item already in the version keeps its first.

    label_override (see label_override()) is None when the item keeps its own label."""
    if version.sealed:
        raise BadInput(f"dataset version {version.id} is sealed: create a new version instead")
    rows = []
    for item_id, split, *override in members:
        if split not in SPLITS:
            raise BadInput(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
        rows.append({"version_id": version.id, "item_id": int(item_id), "split": split,
                     "label": override[0] if override else None})
    stmt = pg_insert(DatasetMember).on_conflict_do_nothing(index_elements=["version_id", "item_id"])
    for start in range(0, len(rows), chunk):
        session.execute(stmt, rows[start : start + chunk])
    return len(rows)


def seal_version(session: Session, version: DatasetVersion) -> DatasetVersion:
    """Record item_count and manifest_sha256 and seal; the database refuses changes afterwards."""
    count = session.scalar(sa.select(sa.func.count()).where(DatasetMember.version_id == version.id))
    if not count:
        raise BadInput(f"dataset version {version_ref(session, version)} has no items: nothing to seal")
    # sha256 over the sorted (item sha256, split[, label override]) lines: equal manifests mean equal
    # versions. A member without an override hashes as it did before overrides existed.
    manifest = session.scalar(
        sa.text(
            "SELECT encode(sha256(convert_to(string_agg(i.sha256 || ':' || m.split || COALESCE(':' || m.label, ''), E'\\n' "
            "ORDER BY i.sha256, m.split), 'UTF8')), 'hex') "
            "FROM dataset_members m JOIN items i ON i.id = m.item_id WHERE m.version_id = :v"
        ),
        {"v": version.id},
    )
    session.execute(
        sa.update(DatasetVersion)
        .where(DatasetVersion.id == version.id)
        .values(item_count=count, manifest_sha256=manifest, sealed=True, sealed_at=sa.func.now())
    )
    session.refresh(version)
    from genloom import audit

    audit.record(session, "dataset.seal", version_ref(session, version), detail={"items": count, "manifest": manifest})
    return version


# --------------------------------------------------------------------------- counting (datasets show / list / diff)


def _counts(session: Session, version_id: int, column: str) -> dict[str, int]:
    rows = session.execute(
        sa.text(
            f"SELECT {column} AS k, count(*) FROM dataset_members m JOIN items i ON i.id = m.item_id "
            "WHERE m.version_id = :v GROUP BY 1"
        ),
        {"v": version_id},
    ).all()
    return {("" if k is None else str(k)): int(n) for k, n in rows}


def label_sort_key(label: str) -> tuple[int, Any]:
    """Numbers in numeric order, then words: '2' < '10' < 'cat'."""
    return (0, int(label)) if label.lstrip("-").isdigit() else (1, label)


def version_summary(session: Session, version: DatasetVersion) -> dict[str, Any]:
    """What `genloom datasets show --json` prints."""
    by_split = _counts(session, version.id, "m.split")
    by_origin = _counts(session, version.id, "i.origin")
    by_label = _counts(session, version.id, EFFECTIVE_LABEL)
    parent = version_ref(session, version.parent_id) if version.parent_id else None
    name = session.scalar(sa.select(Dataset.name).where(Dataset.id == version.dataset_id))
    return {
        "name": name,
        "version": version.version,
        "parent": parent,
        "items": sum(by_split.values()),
        "by_split": {s: by_split.get(s, 0) for s in SPLITS},
        "by_origin": {"real": by_origin.get("real", 0), "synthetic": by_origin.get("synthetic", 0)},
        "by_label": {k: by_label[k] for k in sorted(by_label, key=label_sort_key)},
        "created_by_run": version.created_by_run_id,
    }


def list_versions(session: Session) -> list[dict[str, Any]]:
    rows = session.execute(
        sa.select(Dataset.name, Dataset.modality, DatasetVersion.version, DatasetVersion.item_count,
                  DatasetVersion.sealed, DatasetVersion.parent_id, DatasetVersion.created_by_run_id,
                  DatasetVersion.created_at)
        .join(DatasetVersion, DatasetVersion.dataset_id == Dataset.id)
        .order_by(Dataset.name, DatasetVersion.version)
    ).all()
    return [
        {"name": r.name, "version": r.version, "ref": format_ref(r.name, r.version), "modality": r.modality,
         "items": r.item_count, "sealed": r.sealed, "created_by_run": r.created_by_run_id, "created_at": r.created_at}
        for r in rows
    ]


def diff_versions(session: Session, a: DatasetVersion, b: DatasetVersion) -> dict[str, Any]:
    """Items only in A, only in B, in both but in another split or with another label; added items by origin."""
    row = session.execute(
        sa.text(
            f"""
            WITH a AS (SELECT m.item_id, m.split, {EFFECTIVE_LABEL} AS label
                       FROM dataset_members m JOIN items i ON i.id = m.item_id WHERE m.version_id = :a),
                 b AS (SELECT m.item_id, m.split, {EFFECTIVE_LABEL} AS label
                       FROM dataset_members m JOIN items i ON i.id = m.item_id WHERE m.version_id = :b)
            SELECT
              (SELECT count(*) FROM a WHERE item_id NOT IN (SELECT item_id FROM b)) AS removed,
              (SELECT count(*) FROM b WHERE item_id NOT IN (SELECT item_id FROM a)) AS added,
              (SELECT count(*) FROM a JOIN b USING (item_id) WHERE a.split <> b.split) AS moved,
              (SELECT count(*) FROM a JOIN b USING (item_id) WHERE a.label IS DISTINCT FROM b.label) AS relabelled,
              (SELECT count(*) FROM a JOIN b USING (item_id) WHERE a.split = b.split
                                                              AND a.label IS NOT DISTINCT FROM b.label) AS same
            """
        ),
        {"a": a.id, "b": b.id},
    ).one()
    added_by_origin = dict(
        session.execute(
            sa.text(
                "SELECT i.origin, count(*) FROM dataset_members m JOIN items i ON i.id = m.item_id "
                "WHERE m.version_id = :b AND m.item_id NOT IN (SELECT item_id FROM dataset_members WHERE version_id = :a) "
                "GROUP BY 1"
            ),
            {"a": a.id, "b": b.id},
        ).all()
    )
    return {
        "a": version_ref(session, a), "b": version_ref(session, b),
        "added": int(row.added), "removed": int(row.removed), "moved_split": int(row.moved),
        "relabelled": int(row.relabelled), "unchanged": int(row.same),
        "added_by_origin": {k: int(v) for k, v in added_by_origin.items()},
    }


# --------------------------------------------------------------------------- describing a version for training


@dataclasses.dataclass
class DataInfo:
    """What an architecture needs to know about its input version before building a network."""

    version_id: int
    ref: str  # NAME@V
    modality: str  # 'image' or 'text'
    shape: tuple[int, ...] | None  # (C, H, W) for images
    label_names: list[str]  # sorted; the class index of label L is label_names.index(L)
    split_counts: dict[str, int]

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    def label_index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.label_names)}


def describe_version(session: Session, version: DatasetVersion) -> DataInfo:
    """Modality, the single image shape, labels and split sizes; BadInput when mixed."""
    ref = version_ref(session, version)
    kinds = session.execute(
        sa.text(
            "SELECT i.modality, i.shape, count(*) FROM dataset_members m JOIN items i ON i.id = m.item_id "
            "WHERE m.version_id = :v GROUP BY 1, 2"
        ),
        {"v": version.id},
    ).all()
    if not kinds:
        raise BadInput(f"dataset {ref} has no items")
    modalities = {k[0] for k in kinds}
    if len(modalities) > 1:
        raise BadInput(f"dataset {ref} mixes modalities ({', '.join(sorted(modalities))}): train on one at a time")
    modality = modalities.pop()
    shape = None
    if modality == "image":
        shapes = sorted({tuple(k[1]) for k in kinds})
        if len(shapes) > 1:
            listed = ", ".join("×".join(map(str, s)) for s in shapes[:4])
            raise BadInput(f"dataset {ref} has images of mismatched sizes ({listed}): re-import with --resize H W")
        shape = shapes[0]
    labels = [l for l in _counts(session, version.id, EFFECTIVE_LABEL) if l != ""]
    splits = _counts(session, version.id, "m.split")
    return DataInfo(
        version_id=version.id, ref=ref, modality=modality, shape=shape,
        label_names=sorted(labels, key=label_sort_key), split_counts={s: splits.get(s, 0) for s in SPLITS},
    )


# --------------------------------------------------------------------------- streaming into tensors


@dataclasses.dataclass
class Batch:
    item_ids: list[int]
    labels: list[str | None]
    x: Any = None  # images: float32 tensor N×C×H×W in [0, 1]
    y: Any = None  # class indices (LongTensor, -1 for unlabelled) when a label index was given
    texts: list[str] | None = None  # text items

    def __len__(self) -> int:
        return len(self.item_ids)


_STREAM_SQL = (
    f"SELECT i.id, i.modality, i.payload, i.shape, {EFFECTIVE_LABEL}, i.text "
    "FROM dataset_members m JOIN items i ON i.id = m.item_id "
    "WHERE m.version_id = %s AND m.split = %s ORDER BY {order}"
)


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

    from genloom.db.engine import get_engine

    if split not in SPLITS:
        raise BadInput(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    order = "md5(i.sha256 || %s)" if shuffle else "i.id"
    params: tuple[Any, ...] = (version_id, split) + ((f"{seed}:{epoch}",) if shuffle else ())
    engine = engine or get_engine()
    raw = engine.raw_connection()
    try:
        conn = raw.driver_connection
        apply_raw(conn)  # rows this stream writes (packed shards) carry the caller's tenant
        if shuffle and packed and packable(conn, version_id, split):
            yield from shard_batches(conn, version_id, split, batch_size, seed=seed, epoch=epoch, rank=rank,
                                     world_size=world_size, drop_last=drop_last, label_index=label_index)
            return
        # binary: bytea arrives as raw bytes instead of hex text (half the bytes, no parsing).
        with conn.cursor(name=f"genloom_stream_{version_id}_{split}", binary=True) as cur:
            # itersize: rows per network round trip; a few batches amortises latency.
            cur.itersize = fetch_rows or max(batch_size * 4, 512)
            cur.execute(_STREAM_SQL.format(order=order), params)
            pending: list[tuple] = []
            index = 0
            for row in cur:
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
    finally:
        raw.close()


def _to_batch(rows: list[tuple], label_index: dict[str, int] | None, torch) -> Batch:
    ids = [r[0] for r in rows]
    labels = [r[4] for r in rows]
    batch = Batch(item_ids=ids, labels=labels)
    if rows[0][1] == "image":
        shape = tuple(rows[0][3])
        try:
            flat = np.frombuffer(b"".join(bytes(r[2]) for r in rows), dtype=np.uint8).reshape((len(rows), *shape))
        except ValueError:
            raise BadInput("images of mismatched sizes in one dataset version: re-import with --resize H W") from None
        batch.x = torch.from_numpy(flat.astype(np.float32) / 255.0)
    else:
        batch.texts = [r[5] if r[5] is not None else bytes(r[2]).decode("utf-8") for r in rows]
    if label_index is not None:
        batch.y = torch.tensor([label_index.get(l, -1) if l is not None else -1 for l in labels], dtype=torch.long)
    return batch


def prefetched(iterator: Iterator, depth: int = 2) -> Iterator:
    """Run `iterator` in a daemon thread, `depth` items ahead; errors re-raise in the consumer."""
    import queue
    import threading

    items: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()
    done = object()

    def worker() -> None:
        try:
            for item in iterator:
                while not stop.is_set():
                    try:
                        items.put((True, item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    break
            else:
                items.put((True, done))
        except BaseException as exc:  # handed to the consumer
            items.put((False, exc))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                try:
                    close()  # ends the server-side cursor and returns its connection
                except Exception:
                    pass  # the connection is already gone (server stopped, database dropped)

    # copy_context: the reads run for the caller's tenant (genloom.db.tenancy)
    thread = threading.Thread(target=contextvars.copy_context().run, args=(worker,), name="genloom-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            ok, item = items.get()
            if not ok:
                raise item
            if item is done:
                return
            yield item
    finally:
        stop.set()
        if threading.current_thread() is not thread:
            thread.join(timeout=10)


def load_split(version_id: int, split: str, *, label_index: dict[str, int] | None = None,
               limit: int | None = None, engine: Any = None) -> Batch:
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
        out.texts = [t for b in parts for t in b.texts]
    if parts[0].y is not None:
        out.y = torch.cat([b.y for b in parts])
    if limit is not None:
        out.item_ids, out.labels = out.item_ids[:limit], out.labels[:limit]
        out.x = out.x[:limit] if out.x is not None else None
        out.y = out.y[:limit] if out.y is not None else None
        out.texts = out.texts[:limit] if out.texts is not None else None
    return out
