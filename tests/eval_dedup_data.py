"""Small datasets the issue-7 tests build directly through the datasets store API."""

from __future__ import annotations

import numpy as np


def digits_arrays():
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.rint(d.images / 16.0 * 255.0).astype(np.uint8)  # 8×8, 0..16 → 0..255
    return images, d.target


def make_image_dataset(session, name: str, images, labels, *, seed: int = 0, splits=None, origin: str = "real"):
    """Store images as items and a sealed version 1 with a seeded 80/10/10 split; returns the version."""
    from genloom.datasets.items import image_item, put_items
    from genloom.datasets.versions import add_members, create_version, seal_version

    ids = put_items(session, [image_item(img, label=int(lab), origin=origin) for img, lab in zip(images, labels)])
    if splits is None:
        r = np.random.default_rng(seed).random(len(ids))
        splits = np.where(r < 0.8, "train", np.where(r < 0.9, "val", "test"))
    v = create_version(session, name, modality="image")
    add_members(session, v, zip(ids, splits))
    return seal_version(session, v), ids


def make_text_dataset(session, name: str, texts, *, splits=None):
    from genloom.datasets.items import put_items, text_item
    from genloom.datasets.versions import add_members, create_version, seal_version

    ids = put_items(session, [text_item(t) for t in texts])
    splits = splits or ["train"] * len(ids)
    v = create_version(session, name, modality="text")
    add_members(session, v, zip(ids, splits))
    return seal_version(session, v), ids
