"""Token-aware chunking with the embedding model's own tokenizer.

Chunks are packed from whole sentences (and paragraphs) until the next sentence would
overflow the budget, so no chunk is truncated by the model: the budget is the model's
max sequence length minus its special tokens minus the title, which is embedded with
every chunk. A sentence longer than the budget is cut at token boundaries. Consecutive
chunks share up to `overlap` tokens of trailing sentences, so a fact that straddles a
boundary is whole in at least one chunk.
"""

from __future__ import annotations

import dataclasses
import re

# A sentence ends at . ! ? (optionally followed by quotes/brackets) before whitespace.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+")
_PARAGRAPH = re.compile(r"\n\s*\n")


@dataclasses.dataclass(frozen=True)
class ChunkConfig:
    max_tokens: int | None = None  # None: the model's max sequence length minus specials
    overlap: int = 32  # tokens of trailing sentences repeated at the start of the next chunk
    title_share: float = 0.25  # a title takes at most this share of the budget


@dataclasses.dataclass
class Chunk:
    text: str
    token_count: int  # tokens of the chunk text alone (without title or special tokens)
    start: int = 0  # character offsets of the chunk in the document text: text[start:end]
    end: int = 0  # (whitespace between its pieces is normalised in `text`)


@dataclasses.dataclass
class _Piece:
    text: str
    tokens: int
    paragraph_start: bool
    start: int = 0  # offset in the document text (every piece is a substring of it)


class Chunker:
    def __init__(self, tokenizer, model_max_tokens: int, config: ChunkConfig = ChunkConfig()):
        self.tokenizer = tokenizer
        specials = (
            tokenizer.num_special_tokens_to_add(pair=False) if hasattr(tokenizer, "num_special_tokens_to_add") else 2
        )
        self.limit = model_max_tokens - specials
        if config.max_tokens is not None:
            self.limit = min(self.limit, config.max_tokens)
        if self.limit < 8:
            raise ValueError(f"chunk size {self.limit} tokens is too small (need at least 8)")
        self.config = config

    def count(self, texts: list[str]) -> list[int]:
        if not texts:
            return []
        # verbose=False: counting a long sentence is not "indexing" it, so transformers' warning
        # "Token indices sequence length is longer than the specified maximum" does not apply.
        ids = self.tokenizer(
            texts, add_special_tokens=False, return_attention_mask=False, return_token_type_ids=False, verbose=False
        )
        return [len(x) for x in ids["input_ids"]]

    def budget(self, title: str | None) -> int:
        """Tokens left for the chunk text once the title (+ a separator) is embedded with it."""
        if not title:
            return self.limit
        title_tokens = self.count([title])[0] + 1
        return max(self.limit - min(title_tokens, int(self.limit * self.config.title_share)), 8)

    def _pieces(self, text: str, budget: int) -> list[_Piece]:
        pieces: list[_Piece] = []
        sentences: list[tuple[str, bool]] = []
        # Order matters: pieces from windows (cut straight away, one tokenizer pass instead of
        # counting first) and from counted sentences are merged back by position.
        slots: list[tuple[str, bool] | list[_Piece]] = []
        for paragraph in _PARAGRAPH.split(text):
            paragraph = paragraph.strip()
            if not paragraph:
                continue
            for i, sentence in enumerate(s for s in _SENTENCE_END.split(paragraph) if s.strip()):
                windows = _windows(sentence.strip())
                if len(windows) == 1:
                    slots.append((windows[0], i == 0))
                    sentences.append((windows[0], i == 0))
                else:
                    for j, window in enumerate(windows):
                        slots.append(self._split_long(window, budget, i == 0 and j == 0))
        counts = iter(self.count([s for s, _ in sentences]))
        for slot in slots:
            if isinstance(slot, list):
                pieces.extend(slot)
                continue
            sentence, starts = slot
            tokens = next(counts)
            if tokens <= budget:
                pieces.append(_Piece(sentence, tokens, starts))
            else:
                pieces.extend(self._split_long(sentence, budget, starts))
        return pieces

    def _split_long(self, sentence: str, budget: int, starts: bool) -> list[_Piece]:
        """Cut an over-long sentence at token boundaries (character offsets from the tokenizer)."""
        enc = self.tokenizer(sentence, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        offsets = enc["offset_mapping"]
        out = []
        for i in range(0, len(offsets), budget):
            window = offsets[i : i + budget]
            end = offsets[i + budget][0] if i + budget < len(offsets) else len(sentence)
            piece = sentence[window[0][0] : end].strip()
            if piece:
                out.append(_Piece(piece, len(window), starts and i == 0))
        return out

    def chunk(self, text: str, title: str | None = None) -> list[Chunk]:
        budget = self.budget(title)
        pieces = self._pieces(text, budget)
        cursor = 0
        for piece in pieces:  # in order, so each search starts where the last piece ended
            found = text.find(piece.text, cursor)
            piece.start = found if found >= 0 else cursor
            cursor = piece.start + len(piece.text)
        chunks: list[Chunk] = []
        current: list[_Piece] = []
        used = 0
        for piece in pieces:
            # +1: the space or newline that joins two pieces can cost a token.
            if current and used + piece.tokens + 1 > budget:
                chunks.append(self._join(current))
                current, used = self._overlap(current, budget - piece.tokens - 1)
            current.append(piece)
            used += piece.tokens + (1 if len(current) > 1 else 0)
        if current:
            chunks.append(self._join(current))
        return chunks

    def _overlap(self, previous: list[_Piece], room: int) -> tuple[list[_Piece], int]:
        keep: list[_Piece] = []
        used = 0
        for piece in reversed(previous):
            cost = piece.tokens + 1
            if used + cost > min(self.config.overlap, room):
                break
            keep.insert(0, piece)
            used += cost
        return keep, used

    @staticmethod
    def _join(pieces: list[_Piece]) -> Chunk:
        parts = []
        for i, piece in enumerate(pieces):
            if i:
                parts.append("\n\n" if piece.paragraph_start else " ")
            parts.append(piece.text)
        return Chunk(
            "".join(parts), sum(p.tokens for p in pieces), pieces[0].start, pieces[-1].start + len(pieces[-1].text)
        )


# A "sentence" longer than this (a minified file, a 50 MB single line) is cut at spaces into
# windows before tokenising, so the tokenizer never holds offsets for megabytes at once.
# 20,000 characters is far more than any chunk (a 256-token chunk is ~1,500 characters).
_WINDOW_CHARS = 20_000


def _windows(sentence: str) -> list[str]:
    if len(sentence) <= _WINDOW_CHARS:
        return [sentence]
    out = []
    start = 0
    while start < len(sentence):
        end = min(start + _WINDOW_CHARS, len(sentence))
        if end < len(sentence):
            space = sentence.rfind(" ", start + _WINDOW_CHARS // 2, end)
            end = space + 1 if space > 0 else end
        piece = sentence[start:end].strip()
        if piece:
            out.append(piece)
        start = end
    return out


def embedding_text(title: str | None, chunk_text: str) -> str:
    """What gets embedded: the title with every chunk, so a chunk keeps its document's topic."""
    return f"{title}\n\n{chunk_text}" if title else chunk_text
