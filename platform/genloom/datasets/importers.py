"""Importers: each turns a source into items and a sealed version, in one transaction, as an `import` run.

Sources: scikit-learn's bundled `digits` (8×8, 1,797 images, no files needed), MNIST's four
IDX .gz files, folders of PNG/JPEG images (label = sub-folder), text files or folders
(one item per document, paragraph or line), and an ingested collection's current documents.
Splits: the source's own split where it has one (MNIST train/test), else a seeded split
with configurable fractions. Re-importing identical content changes nothing (the manifest
equals the latest version's), so imports are idempotent.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import struct
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from genloom.errors import BadInput, NotFound

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
TEXT_SUFFIXES = {".txt", ".md", ".rst", ".text"}
TEXT_UNITS = ("document", "paragraph", "line")


@dataclasses.dataclass
class SplitFractions:
    val: float = 0.1
    test: float = 0.1
    seed: int = 0

    def check(self) -> None:
        if not (0 <= self.val < 1 and 0 <= self.test < 1 and self.val + self.test < 1):
            raise BadInput(
                f"split fractions must satisfy 0 ≤ val, test and val + test < 1 (got val={self.val}, test={self.test})"
            )


@dataclasses.dataclass
class ImportResult:
    run_id: int
    dataset: str  # NAME@V
    items: int
    new_items: int  # items whose content was not stored before
    by_split: dict[str, int]
    unchanged: bool  # the content equals the latest version: no new version was made


def seeded_splits(n: int, fractions: SplitFractions) -> list[str]:
    fractions.check()
    rng = np.random.default_rng(fractions.seed)
    order = rng.permutation(n)
    n_val, n_test = int(round(n * fractions.val)), int(round(n * fractions.test))
    splits = ["train"] * n
    for pos, idx in enumerate(order):
        if pos < n_val:
            splits[idx] = "val"
        elif pos < n_val + n_test:
            splits[idx] = "test"
    return splits


def manifest_of(members: Sequence[tuple]) -> str:
    """The manifest hash seal_version computes in SQL, from (item sha256, split[, label override[, caption]])."""
    first: dict[str, str] = {}
    for sha, split, *extra in members:
        line = f"{split}:{extra[0]}" if extra and extra[0] is not None else split
        if len(extra) > 1 and extra[1] is not None:
            line += f"\tcaption={extra[1]}"
        first.setdefault(sha, line)
    text = "\n".join(f"{sha}:{line}" for sha, line in sorted(first.items()))
    return hashlib.sha256(text.encode()).hexdigest()


def store_import(
    name: str,
    modality: str,
    specs: list,
    splits: list[str],
    *,
    params: dict[str, Any],
    description: str,
    captions: Sequence[str | None] | None = None,
) -> ImportResult:
    """Write items + version 1 (or the next version when the content changed) and seal; one transaction.

    `captions` (one per spec, None for none) become the items' captions in the new version."""
    import sqlalchemy as sa

    from genloom.datasets.items import label_override, put_items
    from genloom.datasets.versions import add_members, create_version, seal_version, version_ref
    from genloom.db.engine import session_scope
    from genloom.db.models import Dataset, DatasetVersion
    from genloom.db.queries.datasets import count_stored_items, stored_item_labels
    from genloom.refs import parse_ref
    from genloom.runs import tracked_run

    parse_ref(name)
    if "@" in name:
        raise BadInput("--name takes a dataset NAME; versions are numbered for you")
    if not specs:
        raise BadInput(f"nothing to import into {name!r}: the source has no items")
    by_split = {s: 0 for s in ("train", "val", "test")}
    seen: set[str] = set()
    for sp, split in zip(specs, splits):
        if sp.sha256 not in seen:
            seen.add(sp.sha256)
            by_split[split] += 1
    with tracked_run("import", params={**params, "name": name}) as run:
        with session_scope() as s:
            # The same lock create_version takes, held from the check on: two concurrent imports
            # of one source make one version, not two.
            s.execute(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext("genloom.datasets." + name))))
            # Items already stored keep their label; where this import labels one differently
            # (a relabelled dataset), the new version's membership carries the new label.
            # One array parameter (IN (...) would exceed the 65,535-parameter limit at MNIST's size).
            stored = stored_item_labels(s, list(seen))
            overrides = []
            for sp in specs:
                stored.setdefault(sp.sha256, sp.label)  # a new item is stored with its first label
                overrides.append(label_override(stored[sp.sha256], sp.label))
            captions = list(captions) if captions is not None else [None] * len(specs)
            manifest = manifest_of(list(zip([sp.sha256 for sp in specs], splits, overrides, captions)))
            latest = s.execute(
                sa.select(DatasetVersion)
                .join(Dataset)
                .where(Dataset.name == name, DatasetVersion.sealed)
                .order_by(DatasetVersion.version.desc())
                .limit(1)
            ).scalar_one_or_none()
            if latest is not None and latest.manifest_sha256 == manifest:
                ref = version_ref(s, latest)
                run.finish(
                    session=s,
                    summary={"dataset": ref, "unchanged": True, "items": latest.item_count},
                    output_version_id=latest.id,
                )
                return ImportResult(run.id, ref, latest.item_count, 0, by_split, True)
            before = count_stored_items(s, list(seen))
            for sp in specs:
                sp.run_id = run.id
            ids = put_items(s, specs)
            version = create_version(
                s,
                name,
                modality=modality,
                created_by_run_id=run.id,
                description=description,
                metadata={"source": params},
            )
            add_members(s, version, zip(ids, splits, overrides, captions))
            seal_version(s, version)
            ref = version_ref(s, version)
            result = ImportResult(run.id, ref, version.item_count, len(seen) - int(before or 0), by_split, False)
            run.finish(
                session=s,
                summary={
                    "dataset": ref,
                    "items": version.item_count,
                    "new_items": result.new_items,
                    "by_split": by_split,
                },
                output_version_id=version.id,
            )
    return result


# --------------------------------------------------------------------------- sources


def import_digits(name: str = "digits", *, fractions: SplitFractions | None = None) -> ImportResult:
    """scikit-learn's bundled 8×8 digits (values 0–16, rescaled to 0–255 uint8)."""
    from sklearn.datasets import load_digits

    from genloom.datasets.items import image_item

    fractions = fractions or SplitFractions()
    data = load_digits()
    images = np.rint(data.images * (255.0 / 16.0)).astype(np.uint8)
    specs = [image_item(img, label=int(t)) for img, t in zip(images, data.target)]
    splits = seeded_splits(len(specs), fractions)
    return store_import(
        name,
        "image",
        specs,
        splits,
        params={"source": "digits", **dataclasses.asdict(fractions)},
        description="scikit-learn digits, 8×8 grey",
    )


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzipped or not) as an array: magic (dtype, ndim), big-endian dims, data."""
    opener: Callable = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            zero, dtype_code, ndim = struct.unpack(">HBB", fh.read(4))
            if zero != 0 or dtype_code != 0x08:
                raise BadInput(f"{path} is not an unsigned-byte IDX file")
            dims = struct.unpack(">" + "I" * ndim, fh.read(4 * ndim))
            data = np.frombuffer(fh.read(), dtype=np.uint8)
    except (OSError, struct.error, EOFError) as exc:
        raise BadInput(f"cannot read IDX file {path}: {exc}") from None
    if data.size != int(np.prod(dims)):
        raise BadInput(f"{path} is truncated: expected {int(np.prod(dims))} values, found {data.size}")
    return data.reshape(dims)


def _find(directory: Path, stem: str) -> Path:
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.exists():
            return candidate
    raise NotFound(f"{directory} has no {stem}.gz (MNIST needs train/t10k images and labels IDX files)")


def import_mnist(
    directory: Path, name: str = "mnist", *, val_fraction: float = 5000 / 60000, seed: int = 0, limit: int | None = None
) -> ImportResult:
    """The four MNIST IDX files; MNIST's own train/test split, val carved from train (seeded)."""
    from genloom.datasets.items import ItemSpec, image_item

    directory = Path(directory)
    if not directory.is_dir():
        raise NotFound(f"no folder {directory}")
    specs: list[ItemSpec] = []
    splits: list[str] = []
    for part, split in (("train", "train"), ("t10k", "test")):
        images = read_idx(_find(directory, f"{part}-images-idx3-ubyte"))
        labels = read_idx(_find(directory, f"{part}-labels-idx1-ubyte"))
        if len(images) != len(labels):
            raise BadInput(f"MNIST {part}: {len(images)} images but {len(labels)} labels")
        if limit:
            images, labels = images[:limit], labels[:limit]
        part_splits = [split] * len(images)
        if split == "train":
            part_splits = seeded_splits(len(images), SplitFractions(val=val_fraction, test=0.0, seed=seed))
        specs.extend(image_item(img, label=int(lab)) for img, lab in zip(images, labels))
        splits.extend(part_splits)
    return store_import(
        name,
        "image",
        specs,
        splits,
        params={"source": "mnist", "dir": str(directory), "val_fraction": val_fraction, "seed": seed, "limit": limit},
        description="MNIST 28×28 grey (own train/test split)",
    )


def read_caption_table(path: Path, caption_column: str, key_column: str) -> dict[str, str]:
    """{key: caption} from a CSV (header row) or JSONL file (one object a line; by suffix)."""
    import csv
    import json

    path = Path(path)
    if not path.is_file():
        raise NotFound(f"no caption file {path}")
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            if path.suffix.lower() in (".jsonl", ".ndjson"):
                rows = [json.loads(line) for line in fh if line.strip()]
            elif path.suffix.lower() == ".csv":
                rows = list(csv.DictReader(fh))
            else:
                raise BadInput(f"caption file {path} must be .csv or .jsonl")
    except (json.JSONDecodeError, UnicodeDecodeError, csv.Error) as exc:
        raise BadInput(f"cannot read caption file {path}: {exc}") from None
    table: dict[str, str] = {}
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict) or caption_column not in row or key_column not in row:
            raise BadInput(f"{path} row {n} has no {caption_column!r} and {key_column!r} columns")
        caption = str(row[caption_column] or "").strip()
        if caption:
            table[str(row[key_column])] = caption
    return table


def import_images(
    directory: Path,
    name: str,
    *,
    resize: tuple[int, int] | None = None,
    fractions: SplitFractions | None = None,
    captions: Path | None = None,
    caption_column: str = "caption",
    file_column: str = "file",
) -> ImportResult:
    """PNG/JPEG files under DIR; label = the first sub-folder (none for files at the top).

    `captions`: a CSV/JSONL file whose `file_column` names an image (its path under DIR) and
    whose `caption_column` holds its caption; images it does not name have none."""
    from PIL import Image, UnidentifiedImageError

    from genloom.datasets.items import image_item

    directory = Path(directory)
    if not directory.is_dir():
        raise NotFound(f"no folder {directory}")
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise BadInput(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {directory}")
    if resize is not None and (resize[0] < 1 or resize[1] < 1):
        raise BadInput(f"--resize needs positive H W (got {resize[0]} {resize[1]})")
    loaded = []
    for path in files:
        try:
            with Image.open(path) as img:
                img.load()
                loaded.append((path, img.copy()))
        except (UnidentifiedImageError, OSError) as exc:
            raise BadInput(f"cannot read image {path}: {exc}") from None
    grey = all(img.mode in ("L", "1", "I;16", "I", "LA") for _, img in loaded)
    mode = "L" if grey else "RGB"
    sizes = {img.size for _, img in loaded}
    if resize is None and len(sizes) > 1:
        (w1, h1), (w2, h2) = sorted(sizes)[:2]
        raise BadInput(f"mismatched image sizes under {directory} ({h1}×{w1} and {h2}×{w2}, …): pass --resize H W")
    specs = []
    for path, original in loaded:
        picture = original.convert(mode)
        if resize is not None:
            picture = picture.resize((resize[1], resize[0]), Image.Resampling.BILINEAR)
        arr = np.asarray(picture, dtype=np.uint8)
        arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
        rel = path.relative_to(directory)
        label = rel.parts[0] if len(rel.parts) > 1 else None
        specs.append(image_item(arr, label=label, metadata={"source": str(rel)}))
    fractions = fractions or SplitFractions()
    item_captions = None
    if captions is not None:
        table = read_caption_table(captions, caption_column, file_column)
        rels = [str(path.relative_to(directory)) for path, _ in loaded]
        unknown = sorted(set(table) - set(rels))
        if unknown:
            raise BadInput(f"{captions} names {len(unknown)} file(s) not under {directory}, e.g. {unknown[0]!r}")
        item_captions = [table.get(rel) for rel in rels]
    return store_import(
        name,
        "image",
        specs,
        seeded_splits(len(specs), fractions),
        params={
            "source": "images",
            "dir": str(directory),
            "resize": list(resize) if resize else None,
            **({"captions": str(captions), "caption_column": caption_column} if captions else {}),
            **dataclasses.asdict(fractions),
        },
        description=f"images from {directory}",
        captions=item_captions,
    )


def split_text(text: str, unit: str) -> list[str]:
    if unit == "document":
        parts = [text]
    elif unit == "paragraph":
        parts = [p for p in text.replace("\r\n", "\n").split("\n\n")]
    elif unit == "line":
        parts = text.splitlines()
    else:
        raise BadInput(f"unknown --unit {unit!r}: use {', '.join(TEXT_UNITS)}")
    return [p.strip("\n") for p in parts if p.strip()]


def import_text(
    source: Path,
    name: str,
    *,
    unit: str = "document",
    fractions: SplitFractions | None = None,
    contiguous: bool = False,
) -> ImportResult:
    """A text FILE or a DIR of text files; one item per document, paragraph or line; label = none."""
    from genloom.datasets.items import text_item

    source = Path(source)
    if unit not in TEXT_UNITS:
        raise BadInput(f"unknown --unit {unit!r}: use {', '.join(TEXT_UNITS)}")
    if source.is_file():
        files = [source]
    elif source.is_dir():
        files = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
    else:
        raise NotFound(f"no file or folder {source}")
    if not files:
        raise BadInput(f"no text files ({', '.join(sorted(TEXT_SUFFIXES))}) under {source}")
    specs = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise BadInput(f"{path} is not UTF-8 text") from None
        rel = str(path.relative_to(source.parent if source.is_file() else source))
        for ordinal, part in enumerate(split_text(text, unit)):
            specs.append(text_item(part, metadata={"source": rel, "ordinal": ordinal}))
    fractions = fractions or SplitFractions()
    if contiguous:
        # Language modelling: the first (1 - val - test) of the units train, then val, then test (no shuffling).
        fractions.check()
        n = len(specs)
        n_train = n - int(round(n * fractions.val)) - int(round(n * fractions.test))
        n_val = int(round(n * fractions.val))
        splits = ["train"] * n_train + ["val"] * n_val + ["test"] * (n - n_train - n_val)
    else:
        splits = seeded_splits(len(specs), fractions)
    return store_import(
        name,
        "text",
        specs,
        splits,
        params={
            "source": "text",
            "path": str(source),
            "unit": unit,
            "contiguous": contiguous,
            **dataclasses.asdict(fractions),
        },
        description=f"text from {source} ({unit}s)",
    )


def import_collection(
    collection: str, name: str | None = None, *, fractions: SplitFractions | None = None
) -> ImportResult:
    """An ingested collection's current documents (their chunks joined in order) become text items."""
    import sqlalchemy as sa
    from sqlalchemy.dialects.postgresql import aggregate_order_by

    from genloom.datasets.items import text_item
    from genloom.db.engine import session_scope
    from genloom.db.models import Chunk, Document
    from genloom.retrieval.collections import get_collection

    with session_scope() as s:
        coll = get_collection(s, collection)
        rows = s.execute(
            sa.select(
                Document.external_id,
                Document.title,
                Document.version,
                sa.func.string_agg(Chunk.text, aggregate_order_by(sa.literal_column("E'\\n'"), Chunk.ordinal)),
            )
            .join(Chunk, Chunk.document_id == Document.id)
            .where(Document.collection_id == coll.id, Document.superseded_at.is_(None))
            .group_by(Document.id)
            .order_by(Document.external_id)
        ).all()
    specs = [
        text_item(
            text, metadata={"collection": collection, "external_id": ext, "title": title, "document_version": ver}
        )
        for ext, title, ver, text in rows
        if text and text.strip()
    ]
    if not specs:
        raise BadInput(f"collection {collection!r} has no documents with text")
    fractions = fractions or SplitFractions()
    return store_import(
        name or collection,
        "text",
        specs,
        seeded_splits(len(specs), fractions),
        params={"source": "collection", "collection": collection, **dataclasses.asdict(fractions)},
        description=f"current documents of collection {collection}",
    )


def import_feedback(name: str, *, min_score: int = 4, fractions: SplitFractions | None = None) -> ImportResult:
    """Rated generations → a sealed text dataset of (question, sources, answer) records.

    A generation qualifies when it succeeded and its best feedback score is >= min_score
    (a thumbs-up counts as 5, a thumbs-down as 1). Each item's text is one JSON record
    {"question", "sources": [{"n", "title", "location", "text"}], "answer"}, the shape
    fine-tuning scripts read; its metadata is the lineage: generation, prompt, session,
    model and score. Purged sources appear by their tombstone's title, without text.
    """
    import json

    from genloom.datasets.items import text_item
    from genloom.db.engine import session_scope
    from genloom.db.queries.generations import generation_sources, rated_generations
    from genloom.retrieval.locations import format_location

    if not 1 <= min_score <= 5:
        raise BadInput(f"--min-score must be within 1..5 (got {min_score})")
    with session_scope() as s:
        rows = rated_generations(s, min_score)
        sources = generation_sources(s, [r["generation_id"] for r in rows])
    by_generation: dict[int, list[dict]] = {}
    for src in sources:
        tomb = src["tombstone"] or {}
        title = src["title"] if src["text"] is not None else tomb.get("title")
        external = src["external_id"] if src["text"] is not None else tomb.get("external_id")
        by_generation.setdefault(src["generation_id"], []).append(
            {
                "n": src["rank"],
                "title": title,
                "location": format_location(title, external, src["metadata"]),
                "text": src["text"],
            }
        )
    specs = [
        text_item(
            json.dumps(
                {
                    "question": r["question"],
                    "sources": by_generation.get(r["generation_id"], []),
                    "answer": r["answer"],
                },
                ensure_ascii=False,
            ),
            metadata={
                "generation_id": r["generation_id"],
                "prompt_id": r["prompt_id"],
                "session_id": r["session_id"],
                "model": r["model_name"],
                "score": r["score"],
                "format": "qa-record",
            },
        )
        for r in rows
    ]
    if not specs:
        raise BadInput(
            f"no generation has feedback with score >= {min_score} (rate some with: genloom feedback ID --score 5)"
        )
    fractions = fractions or SplitFractions(val=0.0, test=0.0)
    return store_import(
        name,
        "text",
        specs,
        seeded_splits(len(specs), fractions),
        params={
            "source": "feedback",
            "min_score": min_score,
            "generation_ids": [r["generation_id"] for r in rows],
            **dataclasses.asdict(fractions),
        },
        description=f"rated generations (score >= {min_score}) as question/sources/answer records",
    )


def add_generation(session: Session, generation_id: int, name: str, *, split: str = "train") -> dict[str, Any]:
    """A new sealed version NAME@(latest+1): the latest version's items plus this generation as a text item
    (question, a blank line, the answer; its id, model and mean feedback score in the item's metadata).

    Versions are immutable, so "add to a dataset" means a child version; the parent stays as it was."""
    from genloom.datasets.items import put_items, text_item
    from genloom.datasets.versions import add_members, create_version, seal_version, version_ref
    from genloom.generation.log import generation_detail

    detail = generation_detail(session, generation_id)
    if detail["status"] != "ok" or not detail["answer"]:
        raise BadInput(f"generation {generation_id} has no answer to add (status {detail['status']})")
    scores = [f["score"] for f in detail["feedback"] if f.get("score") is not None]
    item = text_item(
        f"{detail['prompt']}\n\n{detail['answer']}",
        metadata={
            "generation_id": generation_id,
            "model": detail["model"],
            "mean_score": sum(scores) / len(scores) if scores else None,
        },
    )
    (item_id,) = put_items(session, [item])
    version = create_version(session, name, modality="text", copy_parent=True)
    add_members(session, version, [(item_id, split)])
    seal_version(session, version)
    return {"dataset": version_ref(session, version), "item_id": item_id, "items": version.item_count}
