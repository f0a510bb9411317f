"""Datasets and their numbered versions: create, add members, seal, resolve, describe, compare.

Callers own sessions; nothing here commits. Sealed versions and their membership are
immutable in the database itself (triggers in migration 0001).

    v = create_version(session, "digits", modality="image", created_by_run_id=run_id)  # unsealed, parent = latest
    add_members(session, v, zip(ids, splits))
    seal_version(session, v)                                  # item_count + manifest; immutable afterwards
    v = resolve_version(session, "digits@2")                  # NotFound with a helpful message
    info = describe_version(session, v)                       # modality, image shape, labels, split sizes
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from genloom.db.models import SPLITS, Dataset, DatasetMember, DatasetVersion
from genloom.db.queries import datasets as queries
from genloom.errors import BadInput, NotFound
from genloom.refs import format_ref, parse_ref


def get_dataset(session: Session, name: str) -> Dataset:
    ds = session.scalar(sa.select(Dataset).where(Dataset.name == name))
    if ds is None:
        known = session.scalars(sa.select(Dataset.name).order_by(Dataset.name).limit(20)).all()
        hint = (
            f" (datasets: {', '.join(known)})"
            if known
            else " (none yet: try `genloom datasets import digits --name digits`)"
        )
        raise NotFound(f"no dataset {name!r}{hint}")
    return ds


def resolve_version(session: Session, ref: str, *, sealed_only: bool = True) -> DatasetVersion:
    """'NAME' → its latest sealed version; 'NAME@V' → that version. NotFound says what exists."""
    name, number = parse_ref(ref)
    ds = get_dataset(session, name)
    query = sa.select(DatasetVersion).where(DatasetVersion.dataset_id == ds.id)
    if number is None:
        if sealed_only:
            query = query.where(DatasetVersion.sealed)
        query = query.order_by(DatasetVersion.version.desc()).limit(1)
    else:
        query = query.where(DatasetVersion.version == number)
    version = session.scalars(query).first()
    if version is None:
        existing = session.scalars(
            sa.select(DatasetVersion.version).where(DatasetVersion.dataset_id == ds.id).order_by(DatasetVersion.version)
        ).all()
        have = ", ".join(format_ref(name, v) for v in existing) or "none"
        what = f"version {number}" if number is not None else "sealed version"
        raise NotFound(f"dataset {name!r} has no {what} (versions: {have})")
    return version


def version_ref(session: Session, version: DatasetVersion | int) -> str:
    vid = version if isinstance(version, int) else version.id
    row = session.execute(
        sa.select(Dataset.name, DatasetVersion.version).join(Dataset).where(DatasetVersion.id == vid)
    ).one()
    return format_ref(row[0], row[1])


def create_version(
    session: Session,
    name: str,
    *,
    modality: str | None = None,
    parent: DatasetVersion | None | str = "latest",
    created_by_run_id: int | None = None,
    description: str | None = None,
    metadata: dict[str, Any] | None = None,
    copy_parent: bool = False,
) -> DatasetVersion:
    """A new unsealed version NAME@(latest+1), creating the dataset when absent.

    parent="latest" links it to the newest existing version (None for none); copy_parent
    starts the membership as a copy of the parent's (e.g. adding synthetic items to it).
    """
    # Numbering serialises per dataset name, as the model registry does.
    session.execute(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext("genloom.datasets." + name))))
    ds = session.scalar(sa.select(Dataset).where(Dataset.name == name))
    if ds is None:
        ds = Dataset(name=name, modality=modality)
        session.add(ds)
        session.flush()
    elif modality and ds.modality and ds.modality != modality:
        raise BadInput(f"dataset {name!r} holds {ds.modality} items, not {modality}: choose another --name/--into")
    latest = session.scalars(
        sa.select(DatasetVersion)
        .where(DatasetVersion.dataset_id == ds.id)
        .order_by(DatasetVersion.version.desc())
        .limit(1)
    ).first()
    if isinstance(parent, str) and parent != "latest":
        raise ValueError(f"parent is a DatasetVersion, None or 'latest', not {parent!r}")
    parent_version = latest if isinstance(parent, str) else parent
    version = DatasetVersion(
        dataset_id=ds.id,
        version=(latest.version if latest else 0) + 1,
        parent_id=parent_version.id if parent_version is not None else None,
        created_by_run_id=created_by_run_id,
        description=description,
        metadata_=dict(metadata or {}),
    )
    session.add(version)
    session.flush()
    if copy_parent and parent_version is not None:
        queries.copy_members(session, version.id, parent_version.id)
    return version


def add_members(session: Session, version: DatasetVersion, members: Iterable[tuple], *, chunk: int = 5000) -> int:
    """Add (item_id, split[, label_override[, caption]]) tuples; an item already in the version keeps its first.

    label_override (see label_override()) is None when the item keeps its own label; caption is
    the item's caption in this version (None: none)."""
    if version.sealed:
        raise BadInput(f"dataset version {version.id} is sealed: create a new version instead")
    rows = []
    for item_id, split, *extra in members:
        if split not in SPLITS:
            raise BadInput(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
        rows.append(
            {
                "version_id": version.id,
                "item_id": int(item_id),
                "split": split,
                "label": extra[0] if extra else None,
                "caption": extra[1] if len(extra) > 1 else None,
            }
        )
    # By the key's name: on a Citus cluster the key is (tenant, version_id, item_id) (genloom.db.distribute).
    stmt = pg_insert(DatasetMember).on_conflict_do_nothing(constraint="dataset_members_pkey")
    for start in range(0, len(rows), chunk):
        session.execute(stmt, rows[start : start + chunk])
    return len(rows)


def manifest_sha256(session: Session, version_id: int) -> str | None:
    """sha256 over the version's sorted (item sha256, split[, label override][, caption]) lines; None when empty.

    Equal manifests mean equal versions. A member without an override or caption hashes as it
    did before they existed (importers.manifest_of computes the same in Python)."""
    return queries.manifest_sha256(session, version_id)


def seal_version(session: Session, version: DatasetVersion) -> DatasetVersion:
    """Record item_count and manifest_sha256 and seal; the database refuses changes afterwards."""
    count = session.scalar(sa.select(sa.func.count()).where(DatasetMember.version_id == version.id))
    if not count:
        raise BadInput(f"dataset version {version_ref(session, version)} has no items: nothing to seal")
    manifest = manifest_sha256(session, version.id)
    session.execute(
        sa.update(DatasetVersion)
        .where(DatasetVersion.id == version.id)
        .values(item_count=count, manifest_sha256=manifest, sealed=True, sealed_at=sa.func.now())
    )
    session.refresh(version)
    from genloom import audit

    audit.record(session, "dataset.seal", version_ref(session, version), detail={"items": count, "manifest": manifest})
    return version


# --------------------------------------------------------------------------- counting (datasets show / list / diff)


def _counts(session: Session, version_id: int, column: str) -> dict[str, int]:
    return queries.member_counts(session, version_id, column)


def label_sort_key(label: str) -> tuple[int, Any]:
    """Numbers in numeric order, then words: '2' < '10' < 'cat'."""
    return (0, int(label)) if label.lstrip("-").isdigit() else (1, label)


def version_summary(session: Session, version: DatasetVersion) -> dict[str, Any]:
    """What `genloom datasets show --json` prints."""
    by_split = _counts(session, version.id, "split")
    by_origin = _counts(session, version.id, "origin")
    by_label = _counts(session, version.id, "label")
    parent = version_ref(session, version.parent_id) if version.parent_id else None
    name = session.scalar(sa.select(Dataset.name).where(Dataset.id == version.dataset_id))
    return {
        "name": name,
        "version": version.version,
        "parent": parent,
        "items": sum(by_split.values()),
        "by_split": {s: by_split.get(s, 0) for s in SPLITS},
        "by_origin": {"real": by_origin.get("real", 0), "synthetic": by_origin.get("synthetic", 0)},
        "by_label": {k: by_label[k] for k in sorted(by_label, key=label_sort_key)},
        "created_by_run": version.created_by_run_id,
    }


def list_versions(session: Session, *, after: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    """Every version by dataset name and version; `after` ("name@v") and `limit` page by keyset."""
    query = (
        sa.select(
            Dataset.name,
            Dataset.modality,
            DatasetVersion.version,
            DatasetVersion.item_count,
            DatasetVersion.sealed,
            DatasetVersion.parent_id,
            DatasetVersion.created_by_run_id,
            DatasetVersion.created_at,
        )
        .join(DatasetVersion, DatasetVersion.dataset_id == Dataset.id)
        .order_by(Dataset.name, DatasetVersion.version)
        .limit(limit)
    )
    if after is not None:
        name, version = parse_ref(after)
        query = query.where(sa.tuple_(Dataset.name, DatasetVersion.version) > sa.tuple_(name, version or 0))
    rows = session.execute(query).all()
    return [
        {
            "name": r.name,
            "version": r.version,
            "ref": format_ref(r.name, r.version),
            "modality": r.modality,
            "items": r.item_count,
            "sealed": r.sealed,
            "created_by_run": r.created_by_run_id,
            "created_at": r.created_at,
        }
        for r in rows
    ]


def diff_versions(session: Session, a: DatasetVersion, b: DatasetVersion) -> dict[str, Any]:
    """Items only in A, only in B, in both but in another split, label or caption; added items by origin."""
    counts, added_by_origin = queries.diff_counts(session, a.id, b.id)
    return {
        "a": version_ref(session, a),
        "b": version_ref(session, b),
        "added": counts["added"],
        "removed": counts["removed"],
        "moved_split": counts["moved"],
        "relabelled": counts["relabelled"],
        "recaptioned": counts["recaptioned"],
        "unchanged": counts["same"],
        "added_by_origin": added_by_origin,
    }


# --------------------------------------------------------------------------- describing a version for training


@dataclasses.dataclass
class DataInfo:
    """What an architecture needs to know about its input version before building a network."""

    version_id: int
    ref: str  # NAME@V
    modality: str  # 'image' or 'text'
    shape: tuple[int, ...] | None  # (C, H, W) for images
    label_names: list[str]  # sorted; the class index of label L is label_names.index(L)
    split_counts: dict[str, int]

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    def label_index(self) -> dict[str, int]:
        return label_index(self.label_names)


def label_index(label_names: list[str]) -> dict[str, int]:
    """Label → class index: position in the sorted label list a model was trained with (its
    config's `label_names`, DataInfo.label_names). The one place that map is built."""
    return {name: i for i, name in enumerate(label_names)}


def describe_version(session: Session, version: DatasetVersion) -> DataInfo:
    """Modality, the single image shape, labels and split sizes; BadInput when mixed."""
    ref = version_ref(session, version)
    kinds = queries.modality_shapes(session, version.id)
    if not kinds:
        raise BadInput(f"dataset {ref} has no items")
    modalities = {k[0] for k in kinds}
    if len(modalities) > 1:
        raise BadInput(f"dataset {ref} mixes modalities ({', '.join(sorted(modalities))}): train on one at a time")
    modality = modalities.pop()
    shape = None
    if modality == "image":
        shapes = sorted({tuple(k[1] or ()) for k in kinds})
        if len(shapes) > 1:
            listed = ", ".join("×".join(map(str, s)) for s in shapes[:4])
            raise BadInput(f"dataset {ref} has images of mismatched sizes ({listed}): re-import with --resize H W")
        shape = shapes[0]
    labels = [l for l in _counts(session, version.id, "label") if l != ""]
    splits = _counts(session, version.id, "split")
    return DataInfo(
        version_id=version.id,
        ref=ref,
        modality=modality,
        shape=shape,
        label_names=sorted(labels, key=label_sort_key),
        split_counts={s: splits.get(s, 0) for s in SPLITS},
    )


def version_items(
    session: Session, version: DatasetVersion, *, after: int | None = None, limit: int = 48
) -> list[dict[str, Any]]:
    """A page of a version's members in item id order past `after` (keyset), payloads included."""
    return queries.members_page(session, version.id, after=-1 if after is None else after, limit=limit)


def version_lineage(session: Session, version: DatasetVersion) -> list[dict[str, Any]]:
    """Everything upstream of a version (the v_dataset_lineage view): parents, and the models and runs
    that made its synthetic items, with the versions those were trained on."""
    return queries.version_lineage(session, version.id)
