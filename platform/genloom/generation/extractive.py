"""The extractive backend: a grounded answer with no language model.

It answers with the one source sentence that best supports the question (with
`max_sentences=2`, its neighbour joins when it carries question terms the first lacks),
followed by its source's `[n]`. Every word of the answer is a quote, so it cannot hallucinate; it is the
default when no model is configured.

1. Candidates: each source's text with markup stripped (HTML tags and entities, Markdown
   headings, emphasis, links, code fences, list bullets, table pipes), split into
   sentences (also where one starts lower-case: "… concepts. genloom runs …"); boilerplate
   (copyright and licence lines) and headings (fewer than 4 words) dropped; a sentence that
   occurs twice (overlapping chunks, repeated footers) is kept once.
2. Support: cosine similarity between the question and "title: sentence" in the bundled
   all-MiniLM-L6-v2 (the same model that indexes the chunks), plus `lexical_weight` × the
   IDF-weighted share of the question's content words the sentence contains (IDF over
   the candidate sentences, so a word every source repeats counts little).
3. Abstention: when the best sentence's cosine is below `min_similarity` *and* it
   carries less than `min_coverage` of the question's terms, the answer is "The sources do
   not answer this." with finish reason 'abstain': a quote that does not address the
   question is worse than none.
4. The smallest span: one sentence. With `max_sentences=2` a neighbouring sentence is
   added only when it raises the coverage of the question's terms (on SQuAD, one sentence
   scores 1 F1 point higher, so one is the default).

The thresholds were set on a SQuAD v1.1 dev sample disjoint from the benchmark's
(bench/results/rag_squad_extractive.json records both; docs/benchmarks.md).

With a trained reader (`genloom train reader`; `--model READER` names it), the answer is instead
the reader's best span over the sources, followed by the sentence it stands in and its `[n]`:
`span [n] — “sentence”`. It abstains when the span beats the reader's no-answer score by less than
the threshold calibrated on held-out questions (genloom.finetune.reader). Without one, the sentence
ranking above answers.
"""

from __future__ import annotations

import dataclasses
import html
import math
import re
from pathlib import Path
from typing import Any

from genloom.generation.backend import GenOutput, GenParams, OnText, Source

ABSTAIN = "The sources do not answer this."

# A sentence ends at . ! or ? followed by space and something that can start a sentence.
_SENTENCE_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"')\]]))\s+(?=[\"'(\[]?[A-Z0-9])")
_MIN_CHARS = 12  # shorter fragments ("Fig. 2.") are noise, not answers
_MIN_WORDS = 4

# ---- markup: one pattern per construct, applied line by line (Markdown is line-oriented)
_HTML_BLOCK = re.compile(r"<(script|style)\b.*?</\1\s*>", re.I | re.S)
_HTML_TAG = re.compile(r"</?[A-Za-z][^<>]*>|<!--.*?-->", re.S)
_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$")
_SETEXT = re.compile(r"^\s*(=+|-+)\s*$")
_BULLET = re.compile(r"^\s*(?:[-*+•]|\d{1,3}[.)])\s+")
_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")
_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_LINK = re.compile(r"\[([^\]]+)\]\((?:[^()]|\([^)]*\))*\)")
_EMPHASIS = re.compile(r"(\*\*|__|\*|_)(?=\S)(.+?)(?<=\S)\1")
_CODE = re.compile(r"`+([^`]*)`+")
_BOILERPLATE = re.compile(
    r"^(copyright\b|©|\(c\)\s*\d)|all rights reserved|permission is granted to|licensed under the|"
    r"spdx-license-identifier|this (program|library|file) is free software|without any warranty",
    re.I,
)

_WORD = re.compile(r"[A-Za-z0-9]+(?:['’][A-Za-z]+)?")
_STOPWORDS = frozenset(
    """a about above after again against all also am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has have having
    he her here hers herself him himself his how i if in into is it its itself just me more most my myself no
    nor not now of off on once only or other our ours ourselves out over own same she should so some such than
    that the their theirs them themselves then there these they this those through to too under until up very
    was we were what when where which while who whom whose why will with would you your yours yourself
    yourselves name named called used use many much one two type kind""".split()
)


def strip_markup(text: str) -> str:
    """Plain prose from HTML/Markdown: each heading, list item or table row becomes its own
    sentence (a period is added where none ends it), so it never fuses with the next."""
    text = _HTML_BLOCK.sub(" ", text)
    text = re.sub(r"<br\s*/?>|</(p|div|li|h[1-6]|tr)>", "\n", text, flags=re.I)
    text = html.unescape(_HTML_TAG.sub(" ", text))
    lines: list[str] = []
    in_fence = False
    for raw in text.splitlines():
        if _FENCE.match(raw):
            in_fence = not in_fence
            lines.append("")
            continue
        if in_fence or _TABLE_RULE.match(raw) or _SETEXT.match(raw):
            lines.append("")  # code is not prose; table rules and setext underlines are layout
            continue
        line = raw
        heading = _HEADING.match(line)
        standalone = bool(heading) or bool(_BULLET.match(line)) or line.count("|") >= 2
        if heading:
            line = heading.group(1)
        line = _BULLET.sub("", line)
        if line.count("|") >= 2:
            line = "; ".join(cell.strip() for cell in line.strip().strip("|").split("|") if cell.strip())
        line = _IMAGE.sub(r"\1", line)
        line = _LINK.sub(r"\1", line)
        line = _CODE.sub(r"\1", line)
        line = _EMPHASIS.sub(r"\2", line)
        line = line.strip()
        if standalone and line:
            lines.append("")
            lines.append(line if line[-1] in ".!?:;" else line + ".")
            lines.append("")
        else:
            lines.append(line)
    paragraphs = re.split(r"\n\s*\n", "\n".join(lines))
    return "\n\n".join(" ".join(p.split()) for p in paragraphs if p.strip())


def split_sentences(text: str) -> list[str]:
    sentences: list[str] = []
    for paragraph in re.split(r"\n\s*\n", text):
        for part in _SENTENCE_END.split(" ".join(paragraph.split())):
            sentences.extend(p for p in _split_lowercase_starts(part.strip()) if len(p) >= _MIN_CHARS)
    return sentences


# Sentences may start lower-case ("… related concepts. genloom runs both …"): split there too,
# unless the period ends an abbreviation.
_LOWER_START = re.compile(r"(?<=[A-Za-z0-9]{3}[.!?])\s+(?=[a-z])")
_ABBREVIATIONS = ("etc.", "approx.", "incl.", "resp.", "vs.", "al.", "cf.", "fig.", "ca.", "no.", "vol.", "pp.")


def _split_lowercase_starts(sentence: str) -> list[str]:
    pieces: list[str] = []
    for piece in _LOWER_START.split(sentence):
        if pieces and pieces[-1].lower().endswith(_ABBREVIATIONS):
            pieces[-1] = f"{pieces[-1]} {piece}"
        else:
            pieces.append(piece)
    return pieces


def terms(text: str) -> list[str]:
    """Content words, lower-cased, a plural 's' dropped: what "the question's terms" means."""
    out = []
    for word in _WORD.findall(text.lower()):
        word = word.replace("’", "'").removesuffix("'s")
        if word in _STOPWORDS or len(word) < 2:
            continue
        out.append(word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word)
    return out


def _dedup_key(sentence: str) -> str:
    return " ".join(_WORD.findall(sentence.lower()))


@dataclasses.dataclass
class Candidate:
    n: int  # the source's [n]
    title: str | None
    sentence: str
    position: int  # index within its source, for adjacency
    terms: frozenset[str]  # the sentence's and its source title's


def candidates(sources: list[Source]) -> list[Candidate]:
    """Every quotable sentence of the sources, markup stripped, boilerplate dropped, each once."""
    seen: set[str] = set()
    out: list[Candidate] = []
    for source in sources:
        # A sentence is about its document: "It was completed in 1889" carries the title's terms too.
        title_terms = terms(source.title or "")
        for i, sentence in enumerate(split_sentences(strip_markup(source.text))):
            key = _dedup_key(sentence)
            # Fewer than 4 words is a heading or a label ("Installation."), not an answer.
            if len(key.split()) < _MIN_WORDS or key in seen or _BOILERPLATE.search(sentence):
                continue
            seen.add(key)
            out.append(Candidate(source.n, source.title, sentence, i, frozenset(terms(sentence) + title_terms)))
    return out


def coverage(question_terms: list[str], have: frozenset[str], idf: dict[str, float]) -> float:
    """IDF-weighted share of the question's terms present in `have` (0 when the question has none)."""
    total = sum(idf.get(t, 0.0) for t in question_terms)
    return sum(idf.get(t, 0.0) for t in question_terms if t in have) / total if total else 0.0


def idf_of(question_terms: list[str], cands: list[Candidate]) -> dict[str, float]:
    n = len(cands)
    return {t: math.log(1.0 + n / (1.0 + sum(t in c.terms for c in cands))) for t in set(question_terms)}


class ExtractiveBackend:
    name = "extractive"
    revision: str | None = None
    model_id: int | None = None
    # Budget for the numbered sources in MiniLM tokens; the answer is quotes, so this is
    # only how much text the sentence ranking looks at.
    context_window = 8192

    def __init__(
        self,
        *,
        lexical_weight: float = 0.5,
        min_similarity: float = 0.3,
        min_coverage: float = 0.34,
        max_sentences: int = 1,
        reader_dir: Path | None = None,
        name: str | None = None,
        revision: str | None = None,
        model_id: int | None = None,
    ):
        from genloom.embeddings import DEFAULT_MODEL

        self.revision = revision or DEFAULT_MODEL
        self.reader = None
        if reader_dir is not None:
            from genloom.generation.reader import SpanReader

            self.reader = SpanReader(reader_dir)
            self.name = name or f"extractive:{reader_dir.name}"
            self.model_id = model_id
        self.lexical_weight = lexical_weight
        self.min_similarity = min_similarity
        self.min_coverage = min_coverage
        self.max_sentences = max_sentences

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

    def similarities(self, question: str, cands: list[Candidate]):
        """Cosine of the question with each "title: sentence" (the title gives "It was completed
        in 1889" its subject back; the answer still quotes the sentence alone)."""
        from genloom.embeddings import embed

        texts = [f"{c.title}: {c.sentence}" if c.title else c.sentence for c in cands]
        vectors = embed([question] + texts)
        return vectors[1:] @ vectors[0]

    def choose(self, question: str, cands: list[Candidate], cosines) -> list[Candidate]:
        """The answer's sentences in source order, or [] to abstain."""
        if not cands:
            return []
        q_terms = terms(question)
        idf = idf_of(q_terms, cands)
        cover = [coverage(q_terms, c.terms, idf) for c in cands]
        scores = [float(cos) + self.lexical_weight * cov for cos, cov in zip(cosines, cover)]
        best = max(range(len(cands)), key=lambda i: (scores[i], -len(cands[i].sentence)))
        if float(cosines[best]) < self.min_similarity and cover[best] < self.min_coverage:
            return []
        chosen = [cands[best]]
        if self.max_sentences > 1 and cover[best] < 1.0:
            # The smallest span: a neighbour joins only if it carries question terms the best lacks.
            neighbours = [
                i for i, c in enumerate(cands) if c.n == cands[best].n and abs(c.position - cands[best].position) == 1
            ]
            gains = [(coverage(q_terms, cands[best].terms | cands[i].terms, idf) - cover[best], i) for i in neighbours]
            gain, i = max(gains, default=(0.0, -1))
            if gain > 0.0 and scores[i] >= 0.5 * scores[best]:
                chosen = sorted([cands[best], cands[i]], key=lambda c: c.position)
        return chosen

    def read(self, question: str, sources: list[Source]) -> tuple[str | None, dict[str, Any] | None]:
        """The reader's answer `span [n] — “sentence”`, or (None, why it abstains)."""
        assert self.reader is not None
        texts = [strip_markup(source.text) for source in sources]
        span = self.reader.read(question, texts)
        abstention = self.reader.abstention(span, question, texts[span.passage] if span else "")
        if span is None or abstention is not None:
            return None, abstention
        text = texts[span.passage]
        n = sources[span.passage].n
        sentence = next(
            (sent for sent in split_sentences(text) if span.text in sent),
            text[max(0, span.start - 80) : span.end + 80].strip(),
        )
        answer = " ".join(span.text.split())
        if " ".join(sentence.split()) == answer:
            return f"{answer} [{n}]", None
        return f"{answer} [{n}] — “{' '.join(sentence.split())}”", None

    def generate(
        self, prompt: str, *, params: GenParams, question: str, sources: list[Source], on_text: OnText | None = None
    ) -> GenOutput:
        if self.reader is not None:
            return self._generate_with_reader(
                prompt, params=params, question=question, sources=sources, on_text=on_text
            )
        cands = candidates(sources)
        chosen = self.choose(question, cands, self.similarities(question, cands) if cands else [])
        finish, abstention = "stop", None
        if not chosen:
            text, finish = ABSTAIN, "abstain"
            abstention = {
                "reason": "similarity",
                "min_similarity": self.min_similarity,
                "min_coverage": self.min_coverage,
            }
        else:
            pieces: list[str] = []
            used = 0
            for c in chosen:
                piece = f"{c.sentence} [{c.n}]"  # every sentence carries its citation
                cost = self.count_tokens(piece)
                if used + cost > params.max_new_tokens:
                    finish = "length"
                    break
                pieces.append(piece)
                used += cost
            if not pieces:  # even the best sentence is longer than max_new_tokens: cut it
                pieces = [_truncate_tokens(self, f"{chosen[0].sentence} [{chosen[0].n}]", params.max_new_tokens)]
            text = " ".join(pieces)
        output = self._finish(prompt, text, finish, params=params, on_text=on_text)
        output.abstention = abstention
        return output

    def _finish(self, prompt: str, text: str, finish: str, *, params: GenParams, on_text: OnText | None) -> GenOutput:
        """Cut at the first stop string, stream the words, count the tokens: the end of both answer paths."""
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

    def _generate_with_reader(
        self, prompt: str, *, params: GenParams, question: str, sources: list[Source], on_text: OnText | None
    ) -> GenOutput:
        answer, abstention = self.read(question, sources) if sources else (None, {"reason": "no_sources"})
        text, finish = (ABSTAIN, "abstain") if answer is None else (answer, "stop")
        if answer is not None and self.count_tokens(text) > params.max_new_tokens:
            text, finish = _truncate_tokens(self, text, params.max_new_tokens), "length"
        output = self._finish(prompt, text, finish, params=params, on_text=on_text)
        output.abstention = abstention
        return output


def _truncate_tokens(backend: ExtractiveBackend, text: str, limit: int) -> str:
    from genloom.embeddings import EMBEDDER_LOCK

    tokenizer = backend._embedder().tokenizer
    with EMBEDDER_LOCK:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"][:limit]
        return tokenizer.decode(ids)
