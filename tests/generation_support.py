"""Shared by the generation and API tests: a small corpus with one fact per document, and tiny models."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

CORPUS = [
    ("eiffel", "The Eiffel Tower",
     "The Eiffel Tower is a wrought-iron lattice tower in Paris. It was completed in 1889 for the World's Fair. "
     "Gustave Eiffel's company designed and built the tower."),
    ("bm25", "BM25 ranking",
     "BM25 is a ranking function used by search engines to score documents. It combines term frequency with "
     "inverse document frequency. Its parameters k1 and b control saturation and length normalisation."),
    ("photosynthesis", "Photosynthesis",
     "Photosynthesis converts light energy into chemical energy in plants. Chlorophyll absorbs mostly blue and "
     "red light. Oxygen is released as a by-product of splitting water."),
    ("rust", "The Rust language",
     "Rust is a systems programming language focused on memory safety. It achieves safety without a garbage "
     "collector by checking ownership and borrowing at compile time."),
]


def ingest_corpus(collection: str = "kb", docs=CORPUS) -> None:
    from ingest.loaders import SourceDocument
    from ingest.pipeline import IngestOptions, ingest_documents

    ingest_documents(
        [SourceDocument(external_id=i, title=t, text=x, metadata={"topic": i}) for i, t, x in docs],
        IngestOptions(collection=collection),
    )


def counts(engine) -> dict[str, int]:
    tables = ("sessions", "prompts", "generations", "generation_sources", "feedback")
    with engine.connect() as conn:
        return {t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar() for t in tables}


_built: dict[tuple[str, bool, str], Path] = {}


def tiny_lm(root: Path, config: str = "tiny-llama", chat_template: bool = True, tokenizer: str = "bpe") -> Path:
    """A random-weight model directory, built once per test session per shape."""
    from genloom.generation.testing import build_random_lm

    key = (config, chat_template, tokenizer)
    if key not in _built:
        _built[key] = build_random_lm(
            root / f"{config}-{int(chat_template)}-{tokenizer}", config, chat_template=chat_template, tokenizer=tokenizer
        )
    return _built[key]
