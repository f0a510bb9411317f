"""The dedup job: a dataset version in, a new sealed version without duplicates out.

    result = dedup_job("digits@1", DedupOptions(method="all"))

One `runs` row (kind `dedup`). Methods run in turn on the survivors of the previous
one (exact → minhash (text) → semantic). The output version (parent = the input), its
membership, the decisions and the run's success are written in one transaction, so a
crash leaves either all of them or none. When nothing is dropped no version is
written: the output is the input, so re-running on a deduplicated version is a no-op.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session

from genloom.datasets.items import image_floats
from genloom.db.queries.datasets import members_for_dedup
from genloom.dedup import METHODS, Decision
from genloom.errors import BadInput
from genloom.progress import ProgressFn

IMAGE_EMBEDDERS = ("pixels", "features")
ORIGIN_RANK = {"real": 0, "augmented": 1, "synthetic": 2}
SPLIT_RANK = {"train": 0, "val": 1, "test": 2}


@dataclasses.dataclass
class DedupOptions:
    method: str = "all"  # exact | minhash | semantic | all
    threshold: float | None = None  # Jaccard (minhash) / cosine (semantic); None: per-method default
    dry_run: bool = False
    embedder: str | None = None  # images: pixels (default) | features; text: the sentence model
    features: str | None = None  # feature network MODEL[@V] for embedder=features
    text_model: str | None = None  # sentence-transformers model for text (default all-MiniLM-L6-v2)
    num_perm: int = 128
    ngram: int = 5
    unit: str = "char"

    def methods(self, modality: str) -> list[str]:
        if self.method not in (*METHODS, "all"):
            raise BadInput(f"unknown method {self.method!r}: use exact, minhash, semantic or all")
        if self.method == "minhash" and modality != "text":
            raise BadInput("minhash compares text shingles: use --method exact or semantic for images")
        if self.method == "all":
            return ["exact", "minhash", "semantic"] if modality == "text" else ["exact", "semantic"]
        return [self.method]

    def check(self) -> None:
        if self.threshold is not None and not 0.0 < self.threshold <= 1.0:
            raise BadInput(f"--threshold must be in (0, 1] (a Jaccard or cosine similarity), got {self.threshold}")
        if self.embedder is not None and self.embedder not in (*IMAGE_EMBEDDERS, "text"):
            raise BadInput(f"unknown embedder {self.embedder!r}: use pixels or features (images), text (text)")
        if not 16 <= self.num_perm <= 1024:
            raise BadInput(f"--num-perm must be between 16 and 1024, got {self.num_perm}")


@dataclasses.dataclass
class Member:
    item_id: int
    split: str
    origin: str
    sha256: str
    text: str | None = None
    image: np.ndarray | None = None  # C×H×W floats in [0, 1]
    label_override: str | None = None  # dataset_members.label, copied into the deduplicated version


def load_members(session: Session, version_id: int, modality: str) -> list[Member]:
    """Members in keep-priority order: real before synthetic, train before val before test, then oldest."""
    rows = members_for_dedup(session, version_id, images=modality == "image")
    members = []
    for item_id, split, origin, sha, text, payload, shape, label_override in rows:
        image = image_floats(payload, shape) if payload is not None else None
        members.append(Member(item_id, split, origin, sha, text, image, label_override))
    members.sort(key=lambda m: (ORIGIN_RANK.get(m.origin, 3), SPLIT_RANK.get(m.split, 3), m.item_id))
    return members


# --------------------------------------------------------------------------- methods over members


def run_exact(members: list[Member], modality: str) -> list[Decision]:
    from genloom.dedup.exact import exact_duplicates, image_key, text_key

    decisions = exact_duplicates(((m.item_id, m.sha256) for m in members), method="exact")
    gone = {d.dropped for d in decisions}
    rest = [m for m in members if m.item_id not in gone]
    key = (lambda m: text_key(m.text or "")) if modality == "text" else (lambda m: image_key(m.image))
    return decisions + exact_duplicates(((m.item_id, key(m)) for m in rest), method="normalized")


def run_minhash(members: list[Member], opts: DedupOptions, tick: Callable[[int], None] | None = None) -> list[Decision]:
    from genloom.dedup.minhash import MinHashConfig, iter_minhash_duplicates

    cfg = MinHashConfig(threshold=opts.threshold or 0.8, num_perm=opts.num_perm, ngram=opts.ngram, unit=opts.unit)
    out = []
    for i, d in enumerate(iter_minhash_duplicates(((m.item_id, m.text or "") for m in members), cfg)):
        if d is not None:
            out.append(d)
        if tick and i % 500 == 499:
            tick(i + 1)
    return out


def prepare_embedder(session: Session, modality: str, opts: DedupOptions, info) -> tuple[Any, Callable, str]:
    """(ItemEmbedder row, compute(members) → vectors, kind) for this dataset."""
    from genloom.dedup import semantic

    if modality == "text":
        if opts.embedder not in (None, "text"):
            raise BadInput(f"--embedder {opts.embedder} is for images; text uses the sentence model")
        from genloom.embeddings import embed, get_embedder, model_name

        name = model_name(opts.text_model)
        model = get_embedder(opts.text_model)
        dim_of = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        dim = int(dim_of())
        row = semantic.ensure_embedder(session, f"text:{name}", modality="text", dim=dim)
        return row, (lambda ms: embed([m.text or "" for m in ms], name=opts.text_model)), "text"
    kind = opts.embedder or "pixels"
    if kind == "text":
        raise BadInput("--embedder text is for text datasets; images use pixels or features")
    c, h, w = info.shape
    if kind == "pixels":
        dim = semantic.pixel_embedding(np.zeros((1, c, h, w), np.float32)).shape[1]
        row = semantic.ensure_embedder(session, f"image:pixels-aligned-{dim}d:{c}x{h}x{w}", modality="image", dim=dim)
        return row, (lambda ms: semantic.pixel_embedding(np.stack([m.image for m in ms]))), "pixels"
    from genloom.evaluation.features import find_feature_network, load_feature_network, resolve_feature_network

    name = info.ref.split("@")[0]
    model = (
        resolve_feature_network(session, opts.features)
        if opts.features
        else find_feature_network(session, name, info.shape)
    )
    if model is None:
        raise BadInput(
            f"no feature network for {name}: train one with `genloom eval features {name}` or use --embedder pixels"
        )
    net = load_feature_network(session, model)
    if net.shape != [c, h, w]:
        raise BadInput(
            f"feature network {net.ref} takes {'×'.join(map(str, net.shape))} images, {info.ref} has {c}×{h}×{w}"
        )
    row = semantic.ensure_embedder(
        session, f"image:features:{net.ref}", modality="image", dim=int(net.net.cfg.feature_dim), model_id=model.id
    )
    return row, (lambda ms: semantic._normalise(net.apply(np.stack([m.image for m in ms]))[0])), "features"


def run_semantic(
    session: Session,
    members: list[Member],
    opts: DedupOptions,
    info,
    progress: Callable[[str, int, int], None] | None = None,
) -> tuple[list[Decision], dict[str, Any]]:
    """Embed (missing items only), index, then greedy neighbour passes. Runs in the caller's
    transaction, except the embeddings, which are committed first: they are a cache that
    any later run may reuse, whatever happens to this one."""
    from genloom.db.engine import session_scope
    from genloom.dedup import semantic

    by_id = {m.item_id: m for m in members}
    with session_scope() as s:
        embedder, compute, kind = prepare_embedder(s, info.modality, opts, info)
        done = [0]

        def tick(n: int) -> None:
            done[0] += n
            if progress:
                progress("embedding", done[0], len(members))

        added = semantic.embed_missing(
            s, embedder, list(by_id), lambda ids: compute([by_id[i] for i in ids]), on_progress=tick
        )
    with session_scope() as s:
        semantic.ensure_index(s, embedder)
    threshold = opts.threshold or semantic.DEFAULT_THRESHOLDS[kind]
    cfg = semantic.SemanticConfig(threshold=threshold)
    decisions = semantic.semantic_duplicates(
        session,
        embedder,
        [m.item_id for m in members],
        cfg,
        on_pass=(lambda p, n: progress(f"neighbour pass {p}: {n} dropped", 0, 0)) if progress else None,
    )
    return decisions, {"embedder": embedder.name, "embedded": added, "cosine_threshold": threshold}


# --------------------------------------------------------------------------- the job


@dataclasses.dataclass
class DedupResult:
    run_id: int
    input: str
    output: str
    kept: int
    dropped: int
    by_method: dict[str, int]
    dry_run: bool
    details: dict[str, Any]
    decisions: list[Decision]

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "input": self.input,
            "output": self.output,
            "kept": self.kept,
            "dropped": self.dropped,
            "by_method": self.by_method,
            "dry_run": self.dry_run,
            **self.details,
        }


def find_duplicates(
    session: Session, version_id: int, info, opts: DedupOptions, progress: Callable[[str, int, int], None] | None = None
) -> tuple[list[Member], list[Decision], dict]:
    """All methods in turn on the survivors; returns (members, decisions, details). Writes nothing
    except the embedding cache."""
    methods = opts.methods(info.modality)
    members = load_members(session, version_id, info.modality)
    decisions: list[Decision] = []
    details: dict[str, Any] = {"methods": methods}
    alive = members
    for method in methods:
        if progress:
            progress(method, 0, len(alive))
        if method == "exact":
            found = run_exact(alive, info.modality)
        elif method == "minhash":
            found = run_minhash(alive, opts, _counter(progress, "minhash", len(alive)))
            details["jaccard_threshold"] = opts.threshold or 0.8
        else:
            found, extra = run_semantic(session, alive, opts, info, progress)
            details.update(extra)
        decisions.extend(found)
        gone = {d.dropped for d in found}
        alive = [m for m in alive if m.item_id not in gone]
    return members, decisions, details


def dedup_job(dataset_ref: str, opts: DedupOptions | None = None, *, progress: ProgressFn | None = None) -> DedupResult:
    from genloom.datasets.versions import (
        add_members,
        create_version,
        describe_version,
        resolve_version,
        seal_version,
        version_ref,
    )
    from genloom.db.engine import session_scope
    from genloom.db.models import DatasetVersion
    from genloom.runs import log_metrics, tracked_run

    opts = opts or DedupOptions()
    opts.check()
    with session_scope() as s:
        version = resolve_version(s, dataset_ref)
        info = describe_version(s, version)
        opts.methods(info.modality)  # bad method for this modality: fail before the run row
    params = {k: v for k, v in dataclasses.asdict(opts).items() if v is not None}
    started = time.perf_counter()
    with tracked_run("dedup", params={**params, "dataset": info.ref}, input_version_id=info.version_id) as run:
        with session_scope() as s:
            members, decisions, details = find_duplicates(
                s, info.version_id, info, opts, stages(progress, f"dedup {info.ref}")
            )
            by_method = {m: 0 for m in details["methods"]}
            for d in decisions:
                key = "exact" if d.method == "normalized" else d.method
                by_method[key] = by_method.get(key, 0) + 1
            dropped = {d.dropped for d in decisions}
            kept = [m for m in members if m.item_id not in dropped]
            metrics = {
                "dedup_items": len(members),
                "dedup_kept": len(kept),
                "dedup_dropped": len(dropped),
                **{f"dedup_dropped_{m}": n for m, n in by_method.items()},
                "dedup_seconds": time.perf_counter() - started,
            }
            output = info.ref
            output_id = None
            existing = _same_output(s, info, kept) if decisions and not opts.dry_run else None
            if existing is not None:
                # The same input deduplicated to the same members before: reuse that version
                # (re-running a dedup is idempotent), record this run's decisions against it.
                output, output_id = version_ref(s, existing), existing.id
                _insert_decisions(s, run.id, info.version_id, existing.id, decisions)
            elif decisions and not opts.dry_run:
                name = info.ref.split("@")[0]
                parent = s.get(DatasetVersion, info.version_id)
                out = create_version(
                    s,
                    name,
                    modality=info.modality,
                    parent=parent,
                    created_by_run_id=run.id,
                    description=f"{info.ref} without {len(dropped)} duplicates ({', '.join(details['methods'])})",
                    metadata={"dedup_of": info.ref, "by_method": by_method},
                )
                add_members(s, out, ((m.item_id, m.split, m.label_override) for m in kept))
                seal_version(s, out)
                output, output_id = version_ref(s, out), out.id
                _insert_decisions(s, run.id, info.version_id, out.id, decisions)
            elif decisions:
                output = f"{info.ref} (dry run: no version written)"
            log_metrics(s, run.id, metrics)
            summary = {
                "input": info.ref,
                "output": output,
                "kept": len(kept),
                "dropped": len(dropped),
                "by_method": by_method,
                "dry_run": opts.dry_run,
                **details,
            }
            run.finish(session=s, summary=summary, output_version_id=output_id)
    return DedupResult(
        run_id=run.id,
        input=info.ref,
        output=output,
        kept=len(kept),
        dropped=len(dropped),
        by_method=by_method,
        dry_run=opts.dry_run,
        details=details,
        decisions=decisions,
    )


def _insert_decisions(
    session: Session, run_id: int, input_id: int, output_id: int | None, decisions: list[Decision]
) -> None:
    from genloom.db.models import DedupDecision

    session.execute(
        sa.insert(DedupDecision),
        [
            {
                "run_id": run_id,
                "input_version_id": input_id,
                "output_version_id": output_id,
                "dropped_item_id": d.dropped,
                "kept_item_id": d.kept,
                "method": d.method,
                "similarity": d.similarity,
            }
            for d in decisions
        ],
    )


def _same_output(session: Session, info, kept: list[Member]):
    """A sealed child of the input version with exactly these members (same manifest), if any."""
    import hashlib

    from genloom.db.models import DatasetVersion

    lines = sorted(f"{m.sha256}:{m.split}" for m in kept)
    manifest = hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()
    return session.scalars(
        sa.select(DatasetVersion)
        .where(
            DatasetVersion.parent_id == info.version_id,
            DatasetVersion.sealed,
            DatasetVersion.manifest_sha256 == manifest,
        )
        .order_by(DatasetVersion.version)
        .limit(1)
    ).first()


def _counter(progress: Callable[[str, int, int], None] | None, stage: str, total: int) -> Callable[[int], None] | None:
    """A stage's items-done callback, its total fixed now (the list of survivors shrinks stage by stage)."""
    if progress is None:
        return None
    return lambda done: progress(stage, done, total)


def stages(progress: ProgressFn | None, title: str) -> Callable[[str, int, int], None] | None:
    """One progress task for a whole dedup; each stage (exact, minhash, embedding, …) shows as its status."""
    if progress is None:
        return None
    return lambda stage, done, total: progress(title, done, total or None, stage)
