"""The extractive backend: a grounded answer with no language model.

It answers with the sentences of the retrieved sources that are closest to the
question in embedding space (the same bundled all-MiniLM-L6-v2 that indexes the
chunks), each followed by its source's `[n]`. Every word of the answer is a quote,
so it cannot hallucinate; it is the default when no model is configured.
"""

from __future__ import annotations

import re

from genloom.generation.backend import GenOutput, GenParams, OnText, Source

# A sentence ends at . ! or ? followed by space and something that can start a sentence.
_SENTENCE_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"')\]]))\s+(?=[\"'(\[]?[A-Z0-9])")
_MIN_CHARS = 12  # shorter fragments ("Fig. 2.") are noise, not answers


def split_sentences(text: str) -> list[str]:
    parts = [p.strip() for p in _SENTENCE_END.split(" ".join(text.split()))]
    return [p for p in parts if len(p) >= _MIN_CHARS]


class ExtractiveBackend:
    name = "extractive"
    revision: str | None = None
    model_id: int | None = None
    # Budget for the numbered sources in MiniLM tokens; the answer is quotes, so this is
    # only how much text the sentence ranking looks at.
    context_window = 8192

    def __init__(self, *, max_sentences: int = 2, min_relative_score: float = 0.8):
        from genloom.embeddings import DEFAULT_MODEL

        self.revision = DEFAULT_MODEL
        self.max_sentences = max_sentences
        # Keep a second sentence only when it is nearly as relevant as the best one.
        self.min_relative_score = min_relative_score

    def _embedder(self):
        from genloom.embeddings import get_embedder

        return get_embedder()

    def count_tokens(self, text: str) -> int:
        from genloom.embeddings import EMBEDDER_LOCK

        tokenizer = self._embedder().tokenizer
        # verbose=False: prompts are longer than MiniLM's 256 positions, and that is fine for counting.
        with EMBEDDER_LOCK:  # fast tokenizers are not thread-safe (API request threads)
            return len(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    def render(self, messages: list[dict[str, str]]) -> str:
        return "\n\n".join(f"{m['role']}: {m['content']}" for m in messages)

    def rank_sentences(self, question: str, sources: list[Source]) -> list[tuple[float, int, str]]:
        """(cosine similarity, source n, sentence), best first."""
        import numpy as np

        candidates = [(s.n, sentence, s.title) for s in sources for sentence in split_sentences(s.text)]
        if not candidates:
            return []
        # The title gives a sentence its subject back ("It was completed in 1889" is about
        # the Eiffel Tower); the answer still quotes the sentence alone.
        texts = [f"{title}: {sentence}" if title else sentence for _, sentence, title in candidates]
        from genloom.embeddings import embed

        vectors = embed([question] + texts)
        scores = vectors[1:] @ vectors[0]
        order = np.argsort(-scores, kind="stable")
        return [(float(scores[i]), candidates[i][0], candidates[i][1]) for i in order]

    def generate(
        self, prompt: str, *, params: GenParams, question: str, sources: list[Source], on_text: OnText | None = None
    ) -> GenOutput:
        ranked = self.rank_sentences(question, sources)
        pieces: list[str] = []
        used = 0
        finish = "stop"
        best = ranked[0][0] if ranked else 0.0
        for score, n, sentence in ranked[: self.max_sentences]:
            if pieces and score < best * self.min_relative_score:
                break
            piece = f"{sentence} [{n}]"
            cost = self.count_tokens(piece)
            if used + cost > params.max_new_tokens:
                finish = "length"
                break
            pieces.append(piece)
            used += cost
        if not pieces:
            text = "The sources do not contain an answer to this question." if not ranked else ""
            if ranked:  # even the best sentence is longer than max_new_tokens: cut it
                text = _truncate_tokens(self, f"{ranked[0][2]} [{ranked[0][1]}]", params.max_new_tokens)
                finish = "length"
        else:
            text = " ".join(pieces)
        for stop in params.stop:
            cut = text.find(stop)
            if cut >= 0:
                text, finish = text[:cut], "stop"
        if on_text is not None:
            for i, piece in enumerate(text.split(" ")):
                on_text(piece if i == 0 else " " + piece)
        return GenOutput(
            text=text,
            input_tokens=self.count_tokens(prompt),
            output_tokens=self.count_tokens(text),
            finish_reason=finish,
        )


def _truncate_tokens(backend: ExtractiveBackend, text: str, limit: int) -> str:
    from genloom.embeddings import EMBEDDER_LOCK

    tokenizer = backend._embedder().tokenizer
    with EMBEDDER_LOCK:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"][:limit]
        return tokenizer.decode(ids)
