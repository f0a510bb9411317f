"""Captions of a dataset version's items: stored per member (dataset_members.caption).

A caption belongs to a version, not to the content-addressed item, so the same image may be
captioned differently in two versions. Captions arrive with an import (`genloom datasets
import images DIR --captions FILE.csv`) or are made from each item's label and metadata with a
template (`genloom datasets caption NAME --template "a handwritten {word}"`), which seals a new
version and leaves the old one as it was. Models that read captions (clip, text-conditional
diffusion) fall back to phrasings of the label where an item has none.
"""

from __future__ import annotations

import string
from typing import Any

from sqlalchemy.orm import Session

from genloom.errors import BadInput

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def words_for(label: str) -> dict[str, str]:
    """Template fields of a label: {label} ("7") and {word} ("seven"; the label itself unless a digit)."""
    label = str(label)
    word = DIGIT_WORDS[int(label)] if label.isdigit() and int(label) < 10 else label
    return {"word": word, "label": label}


def template_fields(template: str) -> set[str]:
    """The {fields} a caption template names; a clear error for a malformed one."""
    try:
        fields = {field for _, field, _, _ in string.Formatter().parse(template) if field is not None}
    except ValueError as exc:
        raise BadInput(f"bad caption template {template!r}: {exc}") from None
    if not fields or "" in fields or any(not f.isidentifier() for f in fields):
        raise BadInput(f"caption template {template!r} needs named fields such as {{label}} or {{word}}")
    return fields


def render_caption(template: str, label: str | None, metadata: dict[str, Any]) -> str:
    """One item's caption: {label}/{word} from its label, any other field from its metadata."""
    fields = {str(k): v for k, v in (metadata or {}).items()}
    if label is not None:
        fields.update(words_for(label))
    try:
        return template.format(**fields)
    except KeyError as exc:
        raise BadInput(f"caption template field {exc} is missing for an item (label {label!r})") from None


def item_captions(session: Session, version_id: int) -> dict[int, str]:
    """{item_id: caption} of a version's captioned members (empty when it has none)."""
    from genloom.db.queries.datasets import member_captions

    return member_captions(session, version_id)


def caption_version(session: Session, ref: str, template: str, *, run_id: int | None = None) -> dict[str, Any]:
    """Seal a new version of `ref`'s dataset: the same members and splits, every item captioned by `template`.

    The source version is untouched (sealed versions are immutable)."""
    from genloom.datasets.versions import add_members, create_version, resolve_version, seal_version, version_ref
    from genloom.db.queries.datasets import members_with_item_metadata

    template_fields(template)
    source = resolve_version(session, ref)
    source_ref = version_ref(session, source)
    rows = members_with_item_metadata(session, source.id)
    members = [
        (item_id, split, override, render_caption(template, label, metadata or {}))
        for item_id, split, override, label, metadata in rows
    ]
    name = source_ref.split("@")[0]
    version = create_version(
        session,
        name,
        parent=source,
        created_by_run_id=run_id,
        description=f"{source_ref} captioned with {template!r}",
        metadata={"captioned_from": source_ref, "caption_template": template},
    )
    add_members(session, version, members)
    seal_version(session, version)
    return {
        "dataset": version_ref(session, version),
        "source": source_ref,
        "items": len(members),
        "template": template,
        "examples": sorted({caption for *_, caption in members})[:5],
    }
