"""Text-generation metrics: likelihood, reference overlap, diversity, memorisation.

- Perplexity = exp(mean NLL per token); bits per character = total NLL / (chars · ln 2)
  (the character-level figure nanoGPT and the char-LM literature report).
- BLEU and chrF: sacrebleu's corpus scores (Post 2018), the reference implementation,
  with its default tokenisation, so numbers compare with papers that cite sacrebleu.
- distinct-n: unique n-grams / all n-grams over all generations (Li et al. 2016).
- Memorisation rate: share of 50-character windows of the generations that occur
  verbatim in the training split (the span-match measure of Carlini et al. 2021,
  at character level).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence

from genloom.errors import BadInput

MEMORISATION_SPAN = 50


def perplexity(total_nll_nats: float, n_tokens: int) -> float:
    if n_tokens <= 0:
        raise BadInput("perplexity needs at least one scored token")
    return float(math.exp(total_nll_nats / n_tokens))


def bits_per_character(total_nll_nats: float, n_chars: int) -> float:
    if n_chars <= 0:
        raise BadInput("bits per character needs at least one character")
    return float(total_nll_nats / (n_chars * math.log(2)))


def _check_pairs(hypotheses: Sequence[str], references: Sequence[str]) -> None:
    if not hypotheses:
        raise BadInput("no hypotheses to score")
    if len(hypotheses) != len(references):
        raise BadInput(
            f"{len(hypotheses)} hypotheses but {len(references)} references: need one reference line per hypothesis"
        )


def bleu(hypotheses: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]]) -> float:
    """Corpus BLEU (0–100). `references` is one list per hypothesis line, or several
    reference streams (a list of lists, each as long as `hypotheses`)."""
    import sacrebleu

    streams = _streams(hypotheses, references)
    return float(sacrebleu.corpus_bleu(list(hypotheses), streams).score)


def chrf(hypotheses: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]]) -> float:
    """Corpus chrF (0–100), character n-gram F-score with β = 2 (Popović 2015)."""
    import sacrebleu

    streams = _streams(hypotheses, references)
    return float(sacrebleu.corpus_chrf(list(hypotheses), streams).score)


def _streams(hypotheses, references) -> list[list[str]]:
    if references and not isinstance(references[0], str):
        streams = [list(r) for r in references]
    else:
        streams = [list(references)]
    for stream in streams:
        _check_pairs(hypotheses, stream)
    return streams


def distinct_n(texts: Iterable[str], n: int) -> float:
    """Unique word n-grams / total word n-grams over all texts (0 when there are none)."""
    if n < 1:
        raise BadInput("distinct-n needs n ≥ 1")
    total, seen = 0, set()
    for text in texts:
        words = text.split()
        grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else 0.0


@dataclasses.dataclass(frozen=True)
class Memorisation:
    rate: float  # share of generated windows found verbatim in the training text
    windows: int  # generated windows checked
    memorised: int


class SpanIndex:
    """All `span`-character windows of a training corpus, for O(1) verbatim look-ups.

    Windows are stored as Python hashes (8 bytes each rather than the 50-char string),
    and a hit is confirmed with a substring search, so a hash collision never counts."""

    def __init__(self, texts: Iterable[str], span: int = MEMORISATION_SPAN):
        if span < 1:
            raise BadInput("span must be at least 1 character")
        self.span = span
        # NUL separates items so no window spans two training items.
        self.corpus = "\x00".join(texts)
        self.hashes = {hash(self.corpus[i : i + span]) for i in range(len(self.corpus) - span + 1)}

    def __contains__(self, window: str) -> bool:
        return hash(window) in self.hashes and window in self.corpus


def memorisation_rate(generations: Iterable[str], index: SpanIndex, *, stride: int = 1) -> Memorisation:
    """Share of the generations' `index.span`-character windows (every `stride` chars)
    that appear verbatim in the training text. Generations shorter than a span add nothing."""
    span = index.span
    windows = memorised = 0
    for text in generations:
        for i in range(0, len(text) - span + 1, stride):
            windows += 1
            memorised += text[i : i + span] in index
    return Memorisation(rate=memorised / windows if windows else 0.0, windows=windows, memorised=memorised)
