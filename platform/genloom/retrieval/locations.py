"""Where a chunk came from, as a reader can find it: `title · page 4 · §Installation › Verify`.

Ingest records in each chunk's metadata its character offsets (`start`, `end`, in the
document's extracted text), the PDF page (`page`, and `page_range` [first, last] when it
spans several) and the heading path (`heading`, a list) for markdown, HTML and .docx. Every place
that shows a citation (CLI, JSON, HTTP API, `generations show`) formats it here.
"""

from __future__ import annotations

from pathlib import PurePath
from typing import Any


def location_fields(metadata: dict[str, Any] | None) -> dict[str, Any]:
    """`page` (where there is one) and `heading` (a list, where there is one), for JSON."""
    metadata = metadata or {}
    out: dict[str, Any] = {}
    if metadata.get("page") is not None:
        out["page"] = metadata["page"]
    if isinstance(metadata.get("page_range"), list):
        out["page_range"] = metadata["page_range"]
    if metadata.get("heading"):
        out["heading"] = metadata["heading"]
    return out


def format_location(title: str | None, doc_id: str | None, metadata: dict[str, Any] | None) -> str:
    """'title · folder/file · page 4 · §Installation › Verify' (path, page and heading only where
    they are known; the path only for a file in a subfolder of what was ingested)."""
    metadata = metadata or {}
    name = title or (PurePath(doc_id).name if doc_id else "") or "untitled"
    parts = [name]
    path = metadata.get("path")  # where the file sits under the folder ingested (ingest's path metadata)
    if isinstance(path, str) and "/" in path and path != name:
        parts.append(path)  # "README · wget/README": bare file names in many folders stay apart
    pages = metadata.get("page_range")
    if isinstance(pages, list) and pages and pages[0] != pages[-1]:
        parts.append(f"pages {pages[0]}–{pages[-1]}")
    elif metadata.get("page") is not None:
        parts.append(f"page {metadata['page']}")
    heading = list(metadata.get("heading") or [])
    if heading and heading[0] == name:
        heading = heading[1:]  # a top heading that is the title says nothing new
    if heading:
        parts.append("§" + " › ".join(heading))
    return " · ".join(parts)
