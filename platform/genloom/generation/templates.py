"""Named, versioned prompt templates in `prompt_templates`.

A template is Python format text with two fields, `{sources}` (the numbered sources)
and `{question}`. Versions are immutable (a database trigger); adding a template
under an existing name makes the next version. Migration 0003 ships `default` v1.

Labels: `NAME@production` names whichever version the label 'production' points at
(`label_template` moves it; every move is a row in prompt_template_label_moves with who
and when, so rolling back is moving the label back).
"""

from __future__ import annotations

import re
import string

import sqlalchemy as sa
from sqlalchemy.orm import Session

from genloom.db.models import PromptTemplate, PromptTemplateLabel, PromptTemplateLabelMove
from genloom.errors import BadInput, NotFound
from genloom.refs import parse_ref

_LABEL = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")

DEFAULT_TEMPLATE = "default"
FIELDS = ("sources", "question")


def check_template_text(text: str) -> None:
    """Refuse text that would fail at render time: unknown fields, bad braces, no question."""
    if not text.strip():
        raise BadInput("template text is empty")
    try:
        fields = {f for _, f, spec, conv in string.Formatter().parse(text) if f is not None}
    except ValueError as exc:
        raise BadInput(f"template is not valid format text ({exc}); write literal braces as {{{{ and }}}}") from None
    unknown = sorted(f for f in fields if f not in FIELDS)
    if unknown:
        raise BadInput(
            f"template uses unknown field(s) {', '.join('{' + f + '}' for f in unknown)}: only {{sources}} and {{question}} exist"
        )
    if "question" not in fields:
        raise BadInput("template must contain {question}")


def render_template(text: str, *, sources: str, question: str) -> str:
    return text.format(sources=sources, question=question)


def get_template(session: Session, ref: str | None) -> PromptTemplate:
    """'NAME' (latest version), 'NAME@V', or 'NAME@LABEL'; None is the shipped default."""
    name, sep, after = (ref or DEFAULT_TEMPLATE).strip().partition("@")
    if sep and after and not after.isdigit():
        label = session.get(PromptTemplateLabel, (name, after))
        if label is None:
            labels = session.scalars(
                sa.select(PromptTemplateLabel.label)
                .where(PromptTemplateLabel.name == name)
                .order_by(PromptTemplateLabel.label)
            ).all()
            raise NotFound(
                f"template {name!r} has no label {after!r}"
                + (
                    f" (labels: {', '.join(labels)})"
                    if labels
                    else f" (set one with: genloom templates label {name}@V {after})"
                )
            )
        return session.scalars(
            sa.select(PromptTemplate).where(PromptTemplate.name == name, PromptTemplate.version == label.version)
        ).one()
    name, version = parse_ref(ref or DEFAULT_TEMPLATE)
    query = sa.select(PromptTemplate).where(PromptTemplate.name == name)
    query = query.where(PromptTemplate.version == version) if version else query.order_by(PromptTemplate.version.desc())
    template = session.scalars(query.limit(1)).first()
    if template is None:
        known = session.scalars(sa.select(PromptTemplate.name).distinct().order_by(PromptTemplate.name)).all()
        raise NotFound(f"no prompt template {ref or DEFAULT_TEMPLATE!r} (templates: {', '.join(known) or 'none'})")
    return template


def add_template(session: Session, name: str, text: str, *, metadata: dict | None = None) -> PromptTemplate:
    """Store NAME@(latest+1); identical text to the latest version is not stored twice."""
    name = name.strip()
    if not name or "@" in name:
        raise BadInput(f"bad template name {name!r}: use letters, digits, '-' or '_' (no '@')")
    check_template_text(text)
    # Two concurrent adds of one name would race for the same version number.
    session.execute(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext("genloom.templates." + name))))
    latest = session.scalars(
        sa.select(PromptTemplate).where(PromptTemplate.name == name).order_by(PromptTemplate.version.desc()).limit(1)
    ).first()
    if latest is not None and latest.text == text:
        return latest
    template = PromptTemplate(
        name=name, version=(latest.version + 1) if latest else 1, text=text, metadata_=metadata or {}
    )
    session.add(template)
    session.flush()
    return template


def list_templates(session: Session) -> list[PromptTemplate]:
    return list(session.scalars(sa.select(PromptTemplate).order_by(PromptTemplate.name, PromptTemplate.version)))


def label_template(session: Session, ref: str, label: str, *, user: str | None = None) -> dict:
    """Point `label` at template NAME@V (moving it if it pointed elsewhere); the move is recorded."""
    name, version = parse_ref(ref)
    if version is None:
        raise BadInput(f"give the version to label: {name}@V (see: genloom templates list)")
    if not _LABEL.match(label) or label.isdigit():
        raise BadInput(f"bad label {label!r}: start with a letter; letters, digits, '_', '-', '.'")
    get_template(session, f"{name}@{version}")  # NotFound when that version does not exist
    session.execute(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext("genloom.templates." + name))))
    current = session.get(PromptTemplateLabel, (name, label), with_for_update=True)
    previous = current.version if current is not None else None
    if previous == version:
        return {"name": name, "label": label, "version": version, "from_version": previous, "moved": False}
    if current is None:
        session.add(PromptTemplateLabel(name=name, label=label, version=version, moved_by=user))
    else:
        current.version = version
        current.moved_by = user
        current.moved_at = sa.func.now()
    session.add(
        PromptTemplateLabelMove(name=name, label=label, from_version=previous, to_version=version, moved_by=user)
    )
    session.flush()
    return {"name": name, "label": label, "version": version, "from_version": previous, "moved": True}


def label_history(session: Session, name: str) -> list[dict]:
    """Every label move of template `name`, oldest first."""
    rows = session.scalars(
        sa.select(PromptTemplateLabelMove)
        .where(PromptTemplateLabelMove.name == name)
        .order_by(PromptTemplateLabelMove.id)
    )
    return [
        {
            "label": m.label,
            "from_version": m.from_version,
            "to_version": m.to_version,
            "moved_by": m.moved_by,
            "moved_at": m.moved_at,
        }
        for m in rows
    ]
