"""Loading registered models for inference, and the rows `genloom models list|show` print."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from genloom.db.models import Metric, Model
from genloom.refs import format_ref
from genloom.registry import load_checkpoint, resolve_model


def load_model(session: Session, ref: str, device: str):
    """(Model row, architecture class, inference object) for MODEL[@V]."""
    from genloom.jobs.registry import get_architecture

    row = resolve_model(session, ref)
    arch_cls = get_architecture(row.architecture)
    blob = load_checkpoint(session, row)
    return row, arch_cls, arch_cls.load(blob, dict(row.config), device)


def _dataset_ref(session: Session, version_id: int | None) -> str | None:
    if version_id is None:
        return None
    from genloom.datasets.versions import version_ref

    return version_ref(session, version_id)


def list_models(session: Session) -> list[dict[str, Any]]:
    rows = session.scalars(sa.select(Model).order_by(Model.name, Model.version)).all()
    return [
        {
            "model": format_ref(m.name, m.version),
            "name": m.name,
            "version": m.version,
            "architecture": m.architecture,
            "format": m.format,
            "size_bytes": m.size_bytes,
            "sha256": m.sha256,
            "run_id": m.run_id,
            "dataset": _dataset_ref(session, m.input_version_id),
            "created_at": m.created_at,
        }
        for m in rows
    ]


def show_model(session: Session, ref: str) -> dict[str, Any]:
    m = resolve_model(session, ref)
    final = (
        dict(
            session.execute(
                sa.select(Metric.name, Metric.value).where(
                    Metric.run_id == m.run_id, Metric.step.is_(None), Metric.item_id.is_(None)
                )
            ).all()
        )
        if m.run_id
        else {}
    )
    return {
        "model": format_ref(m.name, m.version),
        "name": m.name,
        "version": m.version,
        "architecture": m.architecture,
        "format": m.format,
        "config": m.config,
        "sha256": m.sha256,
        "size_bytes": m.size_bytes,
        "run_id": m.run_id,
        "dataset": _dataset_ref(session, m.input_version_id),
        "metrics": final,
        "metadata": m.metadata_,
        "created_at": m.created_at,
    }
