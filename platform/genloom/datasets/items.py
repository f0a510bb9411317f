"""Content-addressed items: the canonical bytes of an image or a text, and their sha256.

Items are immutable and addressed by the sha256 of their canonical bytes (modality,
dtype, shape, payload), so the same image imported twice, or into two datasets, is one
row. Labels are not part of the address: when a version gives an item another label than
the item's own (a relabelled import), the membership row carries it (`dataset_members.label`,
migration 0009), and every reader uses `EFFECTIVE_LABEL` (genloom/db/queries/datasets.py, with
`dataset_items`, the one query for a version's members). Images are stored as raw uint8
C×H×W bytes; texts as UTF-8 (also in `items.text` so SQL reads them directly).

    ids = put_items(session, [image_item(arr, label="3"), text_item("hello")])   # dedup by sha256
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from genloom.db.models import Item
from genloom.errors import BadInput


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


def image_item(
    image: Any,
    *,
    label: Any = None,
    origin: str = "real",
    run_id: int | None = None,
    model_id: int | None = None,
    metadata: dict[str, Any] | None = None,
) -> ItemSpec:
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
        modality="image",
        payload=arr.tobytes(),
        dtype="uint8",
        shape=[int(d) for d in arr.shape],
        label=None if label is None else str(label),
        origin=origin,
        run_id=run_id,
        model_id=model_id,
        metadata=dict(metadata or {}),
    )


def text_item(
    text: str,
    *,
    label: Any = None,
    origin: str = "real",
    run_id: int | None = None,
    model_id: int | None = None,
    metadata: dict[str, Any] | None = None,
) -> ItemSpec:
    return ItemSpec(
        modality="text",
        payload=text.encode("utf-8"),
        dtype="utf-8",
        text=text,
        label=None if label is None else str(label),
        origin=origin,
        run_id=run_id,
        model_id=model_id,
        metadata=dict(metadata or {}),
    )


# --------------------------------------------------------------------------- the item codec
# Images are stored as raw C×H×W bytes (uint8 unless `dtype` says otherwise), texts as UTF-8
# (and in items.text). These are the only functions that turn payloads back into data.


def image_array(payload: bytes | memoryview, shape: Sequence[int], dtype: str | None = "uint8") -> np.ndarray:
    """An image item's payload as the array image_item stored: C×H×W, uint8 by default (read-only view)."""
    try:
        return np.frombuffer(payload, dtype=np.dtype(dtype or "uint8")).reshape(tuple(shape))
    except (TypeError, ValueError):
        raise BadInput(
            f"an image payload of {len(payload)} bytes does not hold shape {list(shape)} ({dtype})"
        ) from None


def image_floats(payload: bytes | memoryview, shape: Sequence[int]) -> np.ndarray:
    """An image item as float32 C×H×W in [0, 1] (what networks and metrics take)."""
    return image_array(payload, shape).astype(np.float32) / 255.0


def image_png(payload: bytes | memoryview, shape: Sequence[int], dtype: str | None = "uint8") -> bytes:
    """An image item as PNG bytes (what a browser shows): grey for 1 channel, RGB for 3."""
    import io

    from PIL import Image

    array = image_array(payload, shape, dtype)
    if array.dtype != np.uint8:
        array = (np.clip(array.astype(np.float32), 0.0, 1.0) * 255).astype(np.uint8)
    hwc = np.ascontiguousarray(array.transpose(1, 2, 0)) if array.ndim == 3 else array
    if hwc.ndim == 3 and hwc.shape[2] == 1:
        hwc = hwc[:, :, 0]
    out = io.BytesIO()
    Image.fromarray(hwc).save(out, format="PNG")
    return out.getvalue()


def image_batch(payloads: bytes | Sequence[bytes], shape: Sequence[int], n: int) -> np.ndarray:
    """n images of one shape, stored back to back (a packed shard) or as a list, as uint8 N×C×H×W."""
    data = payloads if isinstance(payloads, (bytes, memoryview)) else b"".join(bytes(p) for p in payloads)
    try:
        return np.frombuffer(data, dtype=np.uint8).reshape((n, *shape))
    except ValueError:
        raise BadInput("images of mismatched sizes in one dataset version: re-import with --resize H W") from None


def decode_image(payload: bytes, shape: list[int] | None, dtype: str | None) -> np.ndarray | None:
    """An image item (raw C×H×W bytes, or a PNG/JPEG file's bytes) → H×W (grey) or H×W×3 float array
    in [0, 1], for display (the report's sample grids); None when not decodable."""
    data = bytes(payload)
    if data[:8] == b"\x89PNG\r\n\x1a\n" or data[:3] == b"\xff\xd8\xff":
        import io

        from PIL import Image

        arr = np.asarray(Image.open(io.BytesIO(data)).convert("L" if shape and len(shape) == 2 else "RGB"))
    else:
        if not shape:
            return None
        try:
            arr = image_array(data, shape, dtype)
        except BadInput:
            return None
    arr = arr.astype(np.float32)
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = np.moveaxis(arr, 0, -1)  # C×H×W → H×W×C
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3):
        return None
    if arr.max() > 1.0:
        arr = arr / 255.0
    return np.clip(arr, 0.0, 1.0)


def item_text(text: str | None, payload: bytes | memoryview) -> str:
    """A text item's text (items.text, else its UTF-8 payload)."""
    return text if text is not None else bytes(payload).decode("utf-8")


def label_override(stored: str | None, wanted: str | None) -> str | None:
    """What dataset_members.label must hold for an item stored with label `stored` to carry `wanted`."""
    if stored == wanted:
        return None
    return "" if wanted is None else wanted


def label_overrides(session: Session, ids: Sequence[int], labels: Sequence[str | None]) -> list[str | None]:
    """Per-member overrides for items `ids` that should carry `labels` in a version (None: no override)."""
    stored: dict[int, str | None] = dict(
        session.execute(sa.select(Item.id, Item.label).where(Item.id.in_(set(ids)))).all()
    )
    return [label_override(stored[i], want) for i, want in zip(ids, labels)]


def put_items(session: Session, items: Sequence[ItemSpec], *, chunk: int = 2000) -> list[int]:
    """Store items (existing content is kept, not duplicated); return their ids in input order."""
    ids: dict[str, int] = {}
    for start in range(0, len(items), chunk):
        part = items[start : start + chunk]
        rows: dict[str, dict[str, Any]] = {}
        for it in part:
            rows.setdefault(
                it.sha256,
                {
                    "sha256": it.sha256,
                    "modality": it.modality,
                    "payload": it.payload,
                    "text": it.text,
                    "shape": it.shape,
                    "dtype": it.dtype,
                    "label": it.label,
                    "origin": it.origin,
                    "run_id": it.run_id,
                    "model_id": it.model_id,
                    "metadata": it.metadata,
                },
            )
        # per tenant (0013): the same content in two tenants is two items
        stmt = pg_insert(Item).on_conflict_do_nothing(index_elements=["tenant", "sha256"])
        session.execute(
            stmt,
            [{**{k: v for k, v in r.items() if k != "metadata"}, "metadata_": r["metadata"]} for r in rows.values()],
        )
        found = session.execute(sa.select(Item.sha256, Item.id).where(Item.sha256.in_(list(rows))))
        ids.update({sha: id_ for sha, id_ in found})
    return [ids[it.sha256] for it in items]
