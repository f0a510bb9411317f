"""Exact duplicates: equal content hash, or equal hash after normalisation.

Within one dataset version two members never share a content hash (items are
content-addressed and membership is keyed by item), so the content-hash pass finds
duplicates only when a caller feeds items from several sources; the normalised pass
is what finds copies in practice: text that differs only in case, Unicode form or
whitespace; images whose pixels are equal after rounding to 8 bits.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable

import numpy as np

from genloom.dedup import Decision

_SPACE = re.compile(r"\s+")


def normalise_text(text: str) -> str:
    """NFKC, case-folded, whitespace collapsed and trimmed."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def text_key(text: str) -> str:
    return hashlib.sha256(normalise_text(text).encode("utf-8")).hexdigest()


def image_key(pixels: np.ndarray) -> str:
    """Hash of the image quantised to 8 bits, so float and uint8 encodings of one image match."""
    arr = np.asarray(pixels)
    if arr.dtype != np.uint8:
        arr = np.clip(np.rint(arr.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    return hashlib.sha256(repr(arr.shape).encode() + arr.tobytes()).hexdigest()


def exact_duplicates(keyed: Iterable[tuple[int, str]], *, method: str = "exact") -> list[Decision]:
    """`keyed` is (id, key) in keep-priority order: the first id of each key is kept,
    every later one is dropped in its favour."""
    first: dict[str, int] = {}
    decisions = []
    for item_id, key in keyed:
        kept = first.setdefault(key, item_id)
        if kept != item_id:
            decisions.append(Decision(dropped=item_id, kept=kept, method=method, similarity=1.0))
    return decisions
