"""The model registry: named, versioned checkpoints stored in the `models` table.

A checkpoint is bytes (a torch state dict, or a tar of a Hugging Face directory) with
its sha256 and size; registering is part of the caller's transaction, so a model is
never registered without the run that produced it.
"""

from __future__ import annotations

import hashlib
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from genloom.db.models import Model
from genloom.errors import NotFound
from genloom.refs import format_ref, parse_ref


def register_model(
    session: Session,
    *,
    name: str,
    architecture: str,
    checkpoint: bytes,
    config: dict[str, Any] | None = None,
    format: str = "torch",
    run_id: int | None = None,
    input_version_id: int | None = None,
    metadata: dict[str, Any] | None = None,
) -> Model:
    """Add NAME@(latest+1). Concurrent registrations of one name serialise on a row lock."""
    session.execute(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext("genloom.models." + name))))
    latest = session.scalar(sa.select(sa.func.max(Model.version)).where(Model.name == name)) or 0
    model = Model(
        name=name,
        version=latest + 1,
        architecture=architecture,
        config=config or {},
        format=format,
        checkpoint=checkpoint,
        sha256=hashlib.sha256(checkpoint).hexdigest(),
        size_bytes=len(checkpoint),
        run_id=run_id,
        input_version_id=input_version_id,
        metadata_=metadata or {},
    )
    session.add(model)
    session.flush()
    from genloom import audit

    audit.record(
        session,
        "model.register",
        f"{name}@{model.version}",
        detail={"architecture": architecture, "format": format, "sha256": model.sha256, "run_id": run_id},
    )
    return model


def resolve_model(session: Session, ref: str) -> Model:
    """'NAME' (latest version) or 'NAME@V' → the Model row (checkpoint bytes deferred)."""
    name, version = parse_ref(ref)
    query = sa.select(Model).where(Model.name == name)
    if version is None:
        query = query.order_by(Model.version.desc()).limit(1)
    else:
        query = query.where(Model.version == version)
    model = session.scalars(query).first()
    if model is None:
        known = session.scalars(sa.select(Model.name).distinct().order_by(Model.name).limit(20)).all()
        hint = f" (registered: {', '.join(known)})" if known else " (the registry is empty)"
        raise NotFound(
            f"no model {ref!r} in the registry{hint}",
            cli_hint=None if known else "train one with `genloom train`, or add a server: genloom models add-endpoint",
        )
    return model


def load_checkpoint(session: Session, model: Model) -> bytes:
    """The checkpoint bytes, verified against the stored sha256."""
    data = session.scalar(sa.select(Model.checkpoint).where(Model.id == model.id))
    if hashlib.sha256(data).hexdigest() != model.sha256:
        raise NotFound(f"checkpoint of {format_ref(model.name, model.version)} is corrupt (sha256 mismatch)")
    return data


def list_models(session: Session, *, before: int | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """The registry, newest first (keyset below id `before`): each version with the run and dataset it came from."""
    query = sa.text(
        """
        SELECT m.id, m.name, m.version, m.architecture, m.format, m.size_bytes, m.run_id, m.created_at,
               d.name || '@' || dv.version AS trained_from
        FROM models m
        LEFT JOIN dataset_versions dv ON dv.id = m.input_version_id
        LEFT JOIN datasets d ON d.id = dv.dataset_id
        WHERE (CAST(:before AS bigint) IS NULL OR m.id < CAST(:before AS bigint))
        ORDER BY m.id DESC LIMIT :limit
        """
    )
    return [dict(r) for r in session.execute(query, {"before": before, "limit": limit}).mappings()]
