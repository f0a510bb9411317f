"""The model registry: named, versioned checkpoints stored in the `models` table.

A checkpoint is bytes (a torch state dict, or a tar of a Hugging Face directory) with
its sha256 and size; registering is part of the caller's transaction, so a model is
never registered without the run that produced it.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from genloom.db.models import Dataset, DatasetVersion, Model
from genloom.errors import BadInput, NotFound
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
    if data is None or hashlib.sha256(data).hexdigest() != model.sha256:
        raise NotFound(f"checkpoint of {format_ref(model.name, model.version)} is corrupt (sha256 mismatch)")
    return data


def pack_folder(directory: Path) -> bytes:
    """A tar of a model folder (sub-folders included, e.g. sentence-transformers' 1_Pooling/), in a
    stable order and with no times or owners: the same weights give the same bytes and sha256."""
    buf = io.BytesIO()
    root = Path(directory)
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path in sorted(root.rglob("*")):
            info = tar.gettarinfo(str(path), arcname=str(path.relative_to(root)))
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if path.is_dir():
                tar.addfile(info)
            else:
                with open(path, "rb") as fh:
                    tar.addfile(info, fh)
    return buf.getvalue()


def extract_model_dir(session: Session, model: Model) -> Path:
    """Unpack a registry model's hf-tar once into $GENLOOM_HOME/models; the folder name carries the
    hash, so a cache hit is safe, and the folder's path is a stable identity for the model."""
    import shutil
    import tempfile

    from genloom.config import genloom_home

    if model.format != "hf-tar":
        raise BadInput(
            f"registry model {format_ref(model.name, model.version)} is a {model.format!r} checkpoint, not a folder"
        )
    root = genloom_home() / "models"
    target = root / f"{model.name}@{model.version}-{model.sha256[:12]}"
    if (target / "config.json").exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    data = load_checkpoint(session, model)
    # Extract beside the target and rename: a concurrent process never sees half a model.
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=root))
    try:
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            tar.extractall(tmp, filter="data")
        entries = [p for p in tmp.iterdir()]
        # Accept both a tar of the directory's files and a tar of the directory itself.
        source = entries[0] if len(entries) == 1 and entries[0].is_dir() else tmp
        if not (source / "config.json").exists():
            raise BadInput(f"registry model {model.name}@{model.version} has no config.json in its hf-tar checkpoint")
        try:
            source.rename(target)
        except OSError:
            if not (target / "config.json").exists():
                raise
    except tarfile.TarError as exc:
        raise BadInput(f"registry model {model.name}@{model.version}: unreadable hf-tar checkpoint ({exc})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def model_dir(session: Session, ref: str) -> Path:
    """A model given as a local folder or as a registry NAME[@V] (an hf-tar, unpacked once) → its folder."""
    path = Path(ref).expanduser()
    if path.is_dir():
        return path.resolve()
    return extract_model_dir(session, resolve_model(session, ref))


def list_models(session: Session, *, before: int | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """The registry, newest first (keyset below id `before`): each version with the run and dataset it came from."""
    query = (
        sa.select(
            Model.id,
            Model.name,
            Model.version,
            Model.architecture,
            Model.format,
            Model.size_bytes,
            Model.run_id,
            Model.created_at,
            (Dataset.name + "@" + sa.cast(DatasetVersion.version, sa.Text)).label("trained_from"),
        )
        .outerjoin(DatasetVersion, DatasetVersion.id == Model.input_version_id)
        .outerjoin(Dataset, Dataset.id == DatasetVersion.dataset_id)
        .order_by(Model.id.desc())
        .limit(limit)
    )
    if before is not None:
        query = query.where(Model.id < before)
    return [dict(r) for r in session.execute(query).mappings()]
