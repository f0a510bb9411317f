"""Captions for labelled images, for text-conditioned diffusion.

Each training image gets one of several phrasings of its label ("a handwritten seven",
"the digit 7", "number seven, handwritten", ...), chosen afresh at every step, so the
model learns the *meaning* shared by the phrasings rather than one string: prompts in
words never seen in training still land near them in MiniLM's embedding space.
Captions are a pure function of the label, so they need no storage and are the same on
every machine.
"""

from __future__ import annotations

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

# {word}: "seven"; {label}: "7" (or the label itself when it is not a digit).
TEMPLATES = (
    "a handwritten {word}",
    "the digit {label}",
    "number {word}, handwritten",
    "a picture of the number {word}",
    "{word}",
    "the numeral {label} written by hand",
    "an image of a {word}",
    "digit {word}",
)


def words_for(label: str) -> dict[str, str]:
    label = str(label)
    word = DIGIT_WORDS[int(label)] if label.isdigit() and int(label) < 10 else label
    return {"word": word, "label": label}


def captions_for_label(label: str) -> list[str]:
    """Every phrasing of one label, in a fixed order."""
    return [template.format(**words_for(label)) for template in TEMPLATES]


def caption(label: str, index: int) -> str:
    """The `index`-th phrasing (mod the number of templates): deterministic."""
    return captions_for_label(label)[index % len(TEMPLATES)]


def caption_embeddings(labels: list[str]):
    """MiniLM embeddings of every phrasing of every label: a float32 tensor (labels, templates, 384).

    The same bundled model that embeds retrieval queries, so a prompt at sampling time
    is embedded exactly as the training captions were."""
    import torch

    from genloom.embeddings import embed

    texts = [text for label in labels for text in captions_for_label(label)]
    vectors = embed(texts)
    return torch.from_numpy(vectors).reshape(len(labels), len(TEMPLATES), -1)


def embed_prompts(prompts: list[str]):
    """MiniLM embeddings of free-text prompts: (n, 384) float32."""
    import torch

    from genloom.embeddings import embed

    return torch.from_numpy(embed(list(prompts)))
