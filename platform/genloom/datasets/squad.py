"""Question/answer records for the reader: SQuAD-format files imported as a sealed text dataset.

    genloom datasets import squad ../shared/data/squad/dev-v1.1.json --name squad-dev --test 0.5 --val 0.1

Each item's text is one JSON object (genloom.finetune.reader reads them):

    {"id": "...", "title": "article", "context": "paragraph", "question": "...",
     "answers": [{"text": "...", "answer_start": 123}, ...]}

SQuAD 2.0's unanswerable questions (`is_impossible`) are kept with `"answers": []`.
Splits are **by article** (seeded): every question of an article lands in one split, so a
reader is never evaluated on paragraphs it was trained on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from genloom.datasets.importers import ImportResult, SplitFractions, store_import
from genloom.errors import BadInput


def parse_squad(path: Path) -> list[dict]:
    """The question records of a SQuAD v1.1/v2.0 JSON file, in file order; one clear error otherwise."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInput(f"no such file: {path}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInput(f"{path} is not a SQuAD JSON file: {exc}") from None
    articles = data.get("data") if isinstance(data, dict) else None
    if not isinstance(articles, list):
        raise BadInput(f"{path} is not a SQuAD JSON file: it has no top-level 'data' list of articles")
    records = []
    try:
        for article in articles:
            title = str(article.get("title") or "")
            for paragraph in article["paragraphs"]:
                context = paragraph["context"]
                for qa in paragraph["qas"]:
                    answers = [] if qa.get("is_impossible") else qa.get("answers") or []
                    records.append(
                        {
                            "id": str(qa["id"]),
                            "title": title,
                            "context": context,
                            "question": qa["question"],
                            "answers": [{"text": a["text"], "answer_start": int(a["answer_start"])} for a in answers],
                        }
                    )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BadInput(f"{path} is not a SQuAD JSON file: a paragraph or question lacks {exc}") from None
    if not records:
        raise BadInput(f"{path} holds no questions")
    return records


def article_splits(titles: list[str], fractions: SplitFractions) -> dict[str, str]:
    """article title → split, seeded, by article."""
    fractions.check()
    order = sorted(set(titles))
    rng = np.random.default_rng(fractions.seed)
    shuffled = [order[i] for i in rng.permutation(len(order))]
    n_val, n_test = int(round(len(order) * fractions.val)), int(round(len(order) * fractions.test))
    return {t: "val" if pos < n_val else "test" if pos < n_val + n_test else "train" for pos, t in enumerate(shuffled)}


def import_squad(path: Path, name: str = "squad", *, fractions: SplitFractions | None = None) -> ImportResult:
    """Import a SQuAD file as dataset NAME (a new version when its content or split changed)."""
    from genloom.datasets.items import text_item

    records = parse_squad(path)
    fractions = fractions or SplitFractions(val=0.1, test=0.5)
    splits = article_splits([r["title"] for r in records], fractions)
    specs = [
        text_item(json.dumps(r, ensure_ascii=False, sort_keys=True), metadata={"title": r["title"], "qa_id": r["id"]})
        for r in records
    ]
    return store_import(
        name,
        "text",
        specs,
        [splits[r["title"]] for r in records],
        params={
            "source": "squad",
            "path": str(path),
            "questions": len(records),
            "by": "article",
            "val": fractions.val,
            "test": fractions.test,
            "seed": fractions.seed,
        },
        description=f"SQuAD-format question/answer records from {Path(path).name}, split by article",
    )


def read_qa(session, version_ref: str, split: str | None = "train") -> tuple[Any, list[dict]]:
    """(the DatasetVersion, its question records of `split`); a clear error when it holds none."""
    from genloom.datasets.versions import resolve_version
    from genloom.db.queries import version_texts

    version = resolve_version(session, version_ref)
    records = []
    for text in version_texts(session, version.id, split):
        try:
            record = json.loads(text)
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict) or not {"question", "context", "answers"} <= record.keys():
            raise BadInput(
                f"dataset {version_ref} does not hold question/answer records "
                "(import some with: genloom datasets import squad FILE)"
            )
        records.append(record)
    if not records:
        raise BadInput(f"dataset {version_ref} has no {split or ''} questions".replace("  ", " "))
    return version, records
