"""Export a version to files: PNG folders (split/label/ITEM.png) or text files, with manifest.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from genloom.datasets.items import image_array, item_text
from genloom.db.models import DatasetVersion
from genloom.db.queries.datasets import stream_members


def _safe(label: str | None) -> str:
    text = "unlabelled" if label is None or label == "" else str(label)
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def export_version(session: Session, version: DatasetVersion, directory: Path) -> dict[str, Any]:
    from PIL import Image

    from genloom.datasets.versions import version_summary

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    entries = []
    rows = stream_members(session, version.id)  # streamed: a version may not fit in memory
    for r in rows:
        folder = directory / r.split / _safe(r.label)
        folder.mkdir(parents=True, exist_ok=True)
        if r.modality == "image":
            arr = image_array(r.payload, r.shape)
            img = Image.fromarray(arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0))
            path = folder / f"{r.item_id}.png"
            img.save(path)
        else:
            path = folder / f"{r.item_id}.txt"
            path.write_text(item_text(r.text, r.payload), encoding="utf-8")
        entries.append(
            {
                "item_id": r.item_id,
                "sha256": r.sha256,
                "split": r.split,
                "label": r.label,
                "origin": r.origin,
                "path": str(path.relative_to(directory)),
            }
        )
    manifest = {**version_summary(session, version), "manifest_sha256": version.manifest_sha256, "files": entries}
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False), encoding="utf-8")
    return {
        "dataset": f"{manifest['name']}@{manifest['version']}",
        "files": len(entries),
        "dir": str(directory),
        "manifest": str(directory / "manifest.json"),
    }
