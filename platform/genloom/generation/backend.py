"""What every generation backend offers (resolve.py picks one for `--model`).

A backend turns a prompt (or, for the extractive one, the question and its numbered
sources) into text. It also counts tokens in its own tokenizer and renders chat
messages in its own format, so context assembly can budget in the model's tokens.

`--model` resolution (resolve.py), in order: `extractive` → a local directory (a Hugging
Face causal LM) → `NAME[@V]` in genloom's model registry (a Hugging Face checkpoint, or an
endpoint: a remote OpenAI-compatible server, see endpoint.py). Nothing is ever downloaded.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Protocol

from genloom.errors import BadInput
from genloom.retrieval.search import SearchHit

EXTRACTIVE = "extractive"

# Generation limits, defined once: GenParams and the call (generation/call.py) check them, and the
# HTTP bodies (api/schemas.py, api/local_routes.py) declare the same bounds, so a bad value is a 422
# before any work on every front door.
DEFAULT_MAX_NEW_TOKENS = 256
MAX_NEW_TOKENS = 32768
MAX_TEMPERATURE = 5.0
OPENAI_MAX_TEMPERATURE = 2.0  # the OpenAI-compatible routes keep OpenAI's documented range
DEFAULT_K = 5  # sources retrieved per answer
MAX_K = 100

# Receives text as it is generated (already cut at stop strings).
OnText = Callable[[str], None]


@dataclasses.dataclass
class GenParams:
    """Sampling parameters; temperature 0 means greedy decoding."""

    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = dataclasses.field(default_factory=list)

    def validate(self) -> GenParams:
        if not 1 <= self.max_new_tokens <= MAX_NEW_TOKENS:
            raise BadInput(f"max_new_tokens must be between 1 and {MAX_NEW_TOKENS} (got {self.max_new_tokens})")
        if not 0.0 <= self.temperature <= MAX_TEMPERATURE:
            raise BadInput(f"temperature must be between 0 and {MAX_TEMPERATURE:g} (got {self.temperature})")
        if not 0.0 < self.top_p <= 1.0:
            raise BadInput(f"top_p must be in (0, 1] (got {self.top_p})")
        if any(not s for s in self.stop):
            raise BadInput("stop strings must not be empty")
        return self

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(kw_only=True)
class Source(SearchHit):
    """A retrieved chunk as numbered in the prompt: n is the `[n]` the answer cites."""

    n: int

    @classmethod
    def numbered(cls, hit: SearchHit, n: int) -> Source:
        return cls(n=n, **{f.name: getattr(hit, f.name) for f in dataclasses.fields(SearchHit)})


@dataclasses.dataclass
class GenOutput:
    text: str
    input_tokens: int
    output_tokens: int
    finish_reason: str = "stop"  # 'stop' (end or stop string) or 'length' (max_new_tokens)
    # Why the backend abstained (finish_reason 'abstain'): {"reason": "margin" | "relevance" |
    # "similarity" | "no_span" | "no_sources", the score that fell short, its threshold}.
    abstention: dict[str, Any] | None = None


def describe_abstention(abstention: dict[str, Any]) -> str:
    """One line a user can read: which score fell short of which threshold."""
    reason = abstention.get("reason")
    if reason == "margin":
        return (
            f"the best answer span beats the reader's no-answer score by {abstention['margin']}, "
            f"less than its calibrated threshold {abstention['threshold']}"
        )
    if reason == "relevance":
        return (
            f"the answer's passage has relevance {abstention['relevance']} to the question, "
            f"below the reader's calibrated gate {abstention['min_relevance']}"
        )
    if reason == "similarity":
        return (
            f"no sentence of the sources has cosine ≥ {abstention['min_similarity']} to the question "
            f"or carries ≥ {abstention['min_coverage']:.0%} of its terms"
        )
    return {"no_span": "the reader found no answer span in the sources", "no_sources": "nothing was retrieved"}.get(
        str(reason), str(reason)
    )


class Backend(Protocol):
    name: str  # what generations.model_name records
    revision: str | None  # content hash of the weights (or the registry checkpoint's sha256)
    model_id: int | None  # models.id when the model came from the registry
    context_window: int  # prompt + new tokens must fit in this many tokens

    def count_tokens(self, text: str) -> int: ...

    def render(self, messages: list[dict[str, str]]) -> str:
        """The exact text the model reads for these chat messages."""
        ...

    def generate(
        self, prompt: str, *, params: GenParams, question: str, sources: list[Source], on_text: OnText | None = None
    ) -> GenOutput: ...
