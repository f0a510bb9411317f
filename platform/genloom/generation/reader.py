"""Reading with a trained reader: the answer span of a question over passages, and its no-answer margin.

The model (trained by genloom.finetune.reader, `genloom train reader`) is the shipped encoder's
transformer with a start/end head. It reads "[CLS] question [SEP] passage window [SEP]"; the answer is
the passage span with the highest start + end logit (end ≥ start, at most `max_answer_tokens`); the
[CLS] position's start + end logit is the null score, and the reader abstains when the best span beats
it by less than the calibrated `threshold` stored in reader.json (SQuAD 2.0's null-score rule), or when
the passage it comes from scores below `min_relevance` as retrieval would score it (`relevance`: the
cosine of the shipped MiniLM, the default collection embedder, recomputed so that one threshold holds
whichever model retrieved the passage). Both thresholds are calibrated together on held-out questions
(genloom.finetune.reader.calibrate). Passages longer than a window are read in overlapping windows,
each scored on its own.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

READER_FILE = "reader.json"  # next to the HF weights: window shape, threshold and its calibration
ROLE = "span-reader"


@dataclasses.dataclass
class ReaderSettings:
    max_length: int = 192  # tokens per window: question + passage piece + 3 special tokens
    stride: int = 64  # tokens the windows of one passage overlap by
    max_answer_tokens: int = 30
    max_question_tokens: int = 48
    threshold: float = 0.0  # abstain when best span − null score < threshold
    min_relevance: float | None = None  # abstain when the span's passage has a lower relevance (None: no gate)
    calibration: dict[str, Any] = dataclasses.field(default_factory=dict)

    def save(self, folder: Path) -> None:
        (folder / READER_FILE).write_text(json.dumps(dataclasses.asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, folder: Path) -> ReaderSettings:
        data = json.loads((folder / READER_FILE).read_text())
        return cls(**{k: v for k, v in data.items() if k in {f.name for f in dataclasses.fields(cls)}})


def is_reader_dir(folder: Path) -> bool:
    return (folder / READER_FILE).is_file()


def windows(tokenizer, questions: Sequence[str], contexts: Sequence[str], settings: ReaderSettings):
    """Tokenised windows of (question, context) pairs: the BatchEncoding with offset_mapping and
    overflow_to_sample_mapping (which pair each window belongs to); the question truncated first
    to max_question_tokens."""
    qs = []
    for q in questions:
        ids = tokenizer(q, add_special_tokens=False)["input_ids"]
        qs.append(
            tokenizer.decode(ids[: settings.max_question_tokens]) if len(ids) > settings.max_question_tokens else q
        )
    return tokenizer(
        qs,
        list(contexts),
        truncation="only_second",
        max_length=settings.max_length,
        # the overlap must leave room for new passage tokens in each window
        stride=min(settings.stride, max(1, (settings.max_length - settings.max_question_tokens - 3) // 2)),
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding="longest",
        return_tensors="pt",
    )


def _context_mask(encoding, i: int) -> list[bool]:
    return [sid == 1 for sid in encoding.sequence_ids(i)]


@dataclasses.dataclass
class Span:
    passage: int  # index into the passages read
    start: int  # character offsets in that passage
    end: int
    text: str
    score: float  # start + end logit
    null: float  # the window's [CLS] start + end logit
    margin: float  # score − null: abstain below the threshold


def best_spans(
    start_logits, end_logits, encoding, contexts: Sequence[str], settings: ReaderSettings
) -> list[Span | None]:
    """Per window: its best span (or None when the window holds no passage token)."""
    import torch

    out: list[Span | None] = []
    n = start_logits.shape[1]
    allowed = torch.ones(n, n, dtype=torch.bool).triu().tril(settings.max_answer_tokens - 1)
    for w in range(start_logits.shape[0]):
        ctx = torch.tensor(_context_mask(encoding, w) + [False] * (n - len(encoding.sequence_ids(w))))
        if not bool(ctx.any()):
            out.append(None)
            continue
        s, e = start_logits[w], end_logits[w]
        pair = (s[:, None] + e[None, :]).masked_fill(~(allowed & ctx[:, None] & ctx[None, :]), float("-inf"))
        flat = int(torch.argmax(pair))
        i, j = divmod(flat, n)
        p = int(encoding["overflow_to_sample_mapping"][w])
        offsets = encoding["offset_mapping"][w]
        a, b = int(offsets[i][0]), int(offsets[j][1])
        score, null = float(pair[i, j]), float(s[0] + e[0])
        out.append(Span(p, a, b, contexts[p][a:b], score, null, score - null))
    return out


class SpanReader:
    """A trained reader loaded from its folder: `read(question, passages)` → the best Span or None."""

    def __init__(self, folder: Path):
        import torch
        from transformers import AutoModelForQuestionAnswering, AutoTokenizer
        from transformers.utils import logging as hf_logging

        from genloom.devices import configure_cpu_threads

        hf_logging.disable_progress_bar()  # a per-load "Loading weights" bar is noise on stderr
        configure_cpu_threads()  # torch's default (every core) crawls when another process shares them
        self.folder = folder
        self.settings = ReaderSettings.load(folder)
        self.model = AutoModelForQuestionAnswering.from_pretrained(str(folder), local_files_only=True).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        self._torch = torch

    def spans(self, question: str, passages: Sequence[str], batch: int = 32) -> list[Span]:
        """The best span of every window of every passage."""
        found: list[Span] = []
        for lo in range(0, len(passages), batch):
            part = list(passages[lo : lo + batch])
            enc = windows(self.tokenizer, [question] * len(part), part, self.settings)
            with self._torch.inference_mode():
                out = self.model(
                    input_ids=enc["input_ids"],
                    attention_mask=enc["attention_mask"],
                    token_type_ids=enc.get("token_type_ids"),
                )
            for sp in best_spans(out.start_logits, out.end_logits, enc, part, self.settings):
                if sp is not None and sp.text.strip():
                    sp.passage += lo
                    found.append(sp)
        return found

    def read(self, question: str, passages: Sequence[str]) -> Span | None:
        """The span with the highest margin over its window's null score; None if none has a passage token."""
        spans = self.spans(question, passages)
        return max(spans, key=lambda sp: sp.margin) if spans else None

    def answers(self, span: Span | None, question: str, passage: str) -> bool:
        """Whether to answer with `span`: its margin clears the threshold and its `passage`'s relevance()
        clears min_relevance (a reader calibrated before that gate existed has none)."""
        return self.abstention(span, question, passage) is None

    def abstention(self, span: Span | None, question: str, passage: str) -> dict[str, Any] | None:
        """None to answer with `span`, else why not: the score that fell short, with its threshold. The
        relevance costs an embedding, so it is computed only when the margin passes and a gate is set."""
        if span is None:
            return {"reason": "no_span"}
        threshold = self.settings.threshold
        if span.margin < threshold:
            return {"reason": "margin", "margin": round(span.margin, 4), "threshold": threshold}
        gate = self.settings.min_relevance
        if gate is None:
            return None
        score = relevance(question, passage)
        return None if score >= gate else {"reason": "relevance", "relevance": round(score, 4), "min_relevance": gate}


def relevance(question: str, passage: str) -> float:
    """How retrieval scores the passage for the question: the cosine of the shipped MiniLM's embeddings."""
    from genloom.embeddings import embed

    vectors = embed([question, passage])
    return float(vectors[1] @ vectors[0])
