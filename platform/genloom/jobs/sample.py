"""The sample job: draw from a registered model, write a grid, optionally store synthetic items.

`--store --into DATASET` adds a new sealed version of DATASET (created if absent) whose
parent is its previous version: the parent's members plus the samples, stored as items
with origin 'synthetic', run_id = this sampling run and model_id = the model. So the
lineage item → sampling run → model → training run → input dataset version is all
foreign keys, and SQL can select real, synthetic or both by `items.origin`. When the samples
are all in the latest version already (the same seeded run again), no version is added.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from genloom.errors import BadInput
from genloom.training.options import SampleOptions


@dataclasses.dataclass
class SampleResult:
    run_id: int
    model: str
    count: int
    items: list[int]
    dataset: str | None
    out: Path | None
    texts: list[str] | None = None
    labels: list[str | None] | None = None
    unchanged: bool = False  # the samples were all in DATASET's latest version: no new version


def _item_images(session, ids: tuple[int, int]):
    import sqlalchemy as sa
    import torch

    from genloom.datasets.items import image_floats
    from genloom.db.models import Item

    rows = {
        r.id: r
        for r in session.execute(
            sa.select(Item.id, Item.modality, Item.payload, Item.shape, Item.label).where(Item.id.in_(ids))
        ).all()
    }
    out = []
    for i in ids:
        r = rows.get(i)
        if r is None:
            raise BadInput(f"--interpolate: no item {i} (item ids come from `genloom score` or SQL on items)")
        if r.modality != "image":
            raise BadInput(f"--interpolate: item {i} is {r.modality}, not an image")
        out.append(torch.from_numpy(image_floats(r.payload, r.shape)))
    if out[0].shape != out[1].shape:
        raise BadInput(f"--interpolate: items {ids[0]} and {ids[1]} have different sizes")
    return out[0], out[1], (rows[ids[0]].label, rows[ids[1]].label)


def _load_guide(session, opts: SampleOptions, config: dict[str, Any], device: str) -> dict[str, Any]:
    """Load the --guide clip:NAME[@V] model into opts.guide_model; returns its lineage entry."""
    from genloom.jobs.models import load_model
    from genloom.refs import format_ref

    if opts.guide is None:  # called only with --guide given
        raise ValueError("_load_guide needs opts.guide")
    row, _, clip = load_model(session, opts.guide.partition(":")[2], device)
    if row.architecture != "clip":
        raise BadInput(
            f"--guide {opts.guide}: {format_ref(row.name, row.version)} is a {row.architecture} model, not clip"
        )
    clip.check_images(tuple(config["shape"]), "the sampled model")
    opts.guide_model = clip
    return {"model": format_ref(row.name, row.version), "model_id": row.id}


def sample_job(
    model_ref: str, opts: SampleOptions, *, out: Path | None = None, into: str | None = None
) -> SampleResult:
    from genloom.datasets.items import image_item, label_overrides, put_items, text_item
    from genloom.datasets.versions import add_members, create_version, manifest_sha256, seal_version, version_ref
    from genloom.db.engine import session_scope
    from genloom.db.models import DatasetVersion
    from genloom.devices import resolve_device
    from genloom.jobs.models import load_model
    from genloom.refs import format_ref, parse_ref
    from genloom.runs import tracked_run
    from genloom.training.architecture import Samples
    from genloom.training.images import save_grid

    if opts.n < 1:
        raise BadInput(f"--n must be at least 1 (got {opts.n})")
    if into is not None:
        parse_ref(into)
        if "@" in into:
            raise BadInput("--into takes a dataset NAME (the new version number is assigned)")
    device = resolve_device(opts.device)
    with session_scope() as s:
        row, arch_cls, runner = load_model(s, model_ref, device)
        arch_cls.check_sample_options(opts, dict(row.config))
        pair = _item_images(s, opts.interpolate) if opts.interpolate else None
        guide = _load_guide(s, opts, dict(row.config), device) if opts.guide else None
    if pair is not None and not hasattr(runner, "interpolate"):
        raise BadInput(f"{arch_cls.name} models do not support --interpolate")
    ref = format_ref(row.name, row.version)
    # Every model a sample depends on, by role (the sampled model's own inputs, e.g. latent
    # diffusion's autoencoder, and the --guide model), recorded on the run and on each item.
    lineage = {**getattr(runner, "lineage", {}), **({"guide": guide} if guide else {})}
    params = opts.params()
    params.update(model=ref, out=str(out) if out else None, into=into)
    if lineage:
        params["lineage"] = lineage
    with tracked_run("sample", params=params, model_id=row.id, device=device) as run:
        if pair is not None:
            images = runner.interpolate(pair[0], pair[1], opts.steps or 8, labels=pair[2])
            samples = Samples(images=images)
        else:
            samples = runner.sample(opts)
        written = None
        if out is not None:
            if samples.images is not None:
                written = save_grid(samples.images, out, nrow=(opts.steps or 8) if pair is not None else None)
            else:
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text("\n\n".join(samples.texts or []) + "\n", encoding="utf-8")  # no images: texts
                written = out
        labels = samples.labels or [None] * len(samples)
        metas = samples.metadata or [{} for _ in range(len(samples))]
        summary: dict[str, Any] = {"samples": len(samples), "model": ref, "out": str(written) if written else None}
        item_ids: list[int] = []
        dataset = None
        if into is not None:
            with session_scope() as s:
                if samples.images is not None:
                    specs = [
                        image_item(
                            img,
                            label=lab,
                            origin="synthetic",
                            run_id=run.id,
                            model_id=row.id,
                            metadata={**meta, "model": ref, **({"lineage": lineage} if lineage else {})},
                        )
                        for img, lab, meta in zip(samples.images, labels, metas)
                    ]
                    modality = "image"
                else:
                    specs = [
                        text_item(
                            t,
                            label=lab,
                            origin="synthetic",
                            run_id=run.id,
                            model_id=row.id,
                            metadata={**meta, "model": ref},
                        )
                        for t, lab, meta in zip(samples.texts or [], labels, metas)
                    ]
                    modality = "text"
                # A savepoint, so that a sampling that adds nothing can leave no trace (below).
                attempt = s.begin_nested()
                item_ids = put_items(s, specs)
                version = create_version(
                    s,
                    into,
                    modality=modality,
                    created_by_run_id=run.id,
                    copy_parent=True,
                    description=f"{len(specs)} samples from {ref}",
                )
                # A sample identical to a stored item is that item; its label here is the sample's.
                overrides = label_overrides(s, item_ids, [sp.label for sp in specs])
                add_members(s, version, [(i, "train", o) for i, o in zip(item_ids, overrides)])
                parent = s.get(DatasetVersion, version.parent_id) if version.parent_id else None
                if parent is not None and parent.manifest_sha256 == manifest_sha256(s, version.id):
                    # Every sample is already in the latest version with the same split and label
                    # (the same seeded sampling run again, e.g. after a kill that landed after its
                    # commit): keep that version instead of sealing an identical copy of it.
                    attempt.rollback()
                    version = parent
                    summary["unchanged"] = True
                else:
                    attempt.commit()
                    seal_version(s, version)
                dataset = version_ref(s, version)
                summary["dataset"] = dataset
                # Same transaction: the version and the succeeded run appear together.
                run.finish(session=s, summary=summary, output_version_id=version.id)
        else:
            run.finish(summary=summary)
    return SampleResult(
        run_id=run.id,
        model=ref,
        count=len(samples),
        items=item_ids,
        dataset=dataset,
        out=written,
        texts=samples.texts,
        labels=samples.labels,
        unchanged=bool(summary.get("unchanged")),
    )
