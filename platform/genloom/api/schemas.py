"""Request bodies of the HTTP API (pydantic): FastAPI answers 422 for anything else."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from genloom.api.request_limits import check_chat_length, check_text_length
from genloom.generation.backend import (
    DEFAULT_K,
    DEFAULT_MAX_NEW_TOKENS,
    MAX_K,
    MAX_NEW_TOKENS,
    MAX_TEMPERATURE,
    OPENAI_MAX_TEMPERATURE,
)

BIGINT_MAX = 2**63 - 1  # ids are Postgres bigints: a larger one is a 422, not an overflow in the query
RowId = Annotated[int, Field(ge=1, le=BIGINT_MAX)]
Seed = Annotated[int, Field(ge=0, le=BIGINT_MAX)]
# OpenAI's `user` is an end user's id, and genloom indexes it: a bounded name, not a document.
UserId = Annotated[str, Field(max_length=256)]
MAX_DEPTH = 64  # nesting of a body (a `where` filter's $and/$or/$not included)


def check_json_values(data: Any) -> Any:
    """Refuse what Postgres or the filter compiler cannot take, before any work: NUL characters
    (text columns cannot hold them), NaN/Infinity (JSON parsers accept them; jsonpath does not)
    and nesting deeper than MAX_DEPTH. Iterative, so depth itself cannot exhaust the stack."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, str):
            if "\x00" in value:
                raise ValueError("text must not contain NUL (\\u0000) characters")
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise ValueError("numbers must be finite (no NaN or Infinity)")
        elif isinstance(value, dict):
            stack.extend((k, depth) for k in value)
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, (list, tuple)):
            stack.extend((v, depth + 1) for v in value)
    return data


class Body(BaseModel):
    """Every request body: check_json_values runs on the raw JSON before field validation."""

    @model_validator(mode="before")
    @classmethod
    def _safe_values(cls, data: Any) -> Any:
        return check_json_values(data)


class GenerationFields(Body):
    max_new_tokens: int = Field(DEFAULT_MAX_NEW_TOKENS, ge=1, le=MAX_NEW_TOKENS)
    temperature: float = Field(0.0, ge=0.0, le=MAX_TEMPERATURE)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: Optional[Seed] = None
    stop: Optional[Union[str, list[str]]] = None

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class AskBody(GenerationFields):
    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1)
    collection: str = Field(min_length=1)
    model: Optional[str] = None
    session_id: Optional[RowId] = None
    k: int = Field(DEFAULT_K, ge=1, le=MAX_K)
    where: Optional[dict[str, Any]] = None
    template: Optional[str] = None
    user: Optional[UserId] = None

    @field_validator("question")
    @classmethod
    def _question_limit(cls, question: str) -> str:
        return check_text_length(question)  # before the endpoint runs: no retrieval for an oversized question


class FeedbackBody(Body):
    model_config = ConfigDict(extra="forbid")

    generation_id: RowId
    score: Optional[int] = Field(None, ge=1, le=5)
    thumbs: Optional[Literal[-1, 1]] = None
    label: Optional[str] = Field(None, max_length=256)
    comment: Optional[str] = None
    user: Optional[UserId] = None


class ContentPart(BaseModel):
    type: str
    text: Optional[str] = None


class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Optional[Union[str, list[ContentPart]]] = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text or "" for p in self.content if p.type == "text")


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionBody(Body):
    """OpenAI's chat-completions request; unknown OpenAI fields are accepted and ignored.

    genloom extras: `collection` (turns retrieval on), `k`, `where`, `template`, `session_id`.
    """

    model_config = ConfigDict(extra="allow")

    model: str = "default"
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    max_tokens: Optional[int] = Field(None, ge=1, le=MAX_NEW_TOKENS)
    max_completion_tokens: Optional[int] = Field(None, ge=1, le=MAX_NEW_TOKENS)
    # OpenAI's default is 1.0; genloom's is greedy unless the client asks for sampling.
    temperature: Optional[float] = Field(None, ge=0.0, le=OPENAI_MAX_TEMPERATURE)
    top_p: Optional[float] = Field(None, gt=0.0, le=1.0)
    seed: Optional[Seed] = None
    stop: Optional[Union[str, list[str]]] = None
    n: int = 1  # only 1 is served; the route answers anything else with a 400 that says so
    stream_options: Optional[StreamOptions] = None
    user: Optional[UserId] = None
    # Absent: the server's default collection (serve --collection); null: no retrieval.
    collection: Optional[str] = None
    k: int = Field(DEFAULT_K, ge=1, le=MAX_K)
    where: Optional[dict[str, Any]] = None
    template: Optional[str] = None
    session_id: Optional[RowId] = None

    @field_validator("messages")
    @classmethod
    def _last_is_user(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        if messages[-1].role != "user":
            raise ValueError("the last message must have role 'user' (it is the question)")
        for m in messages:
            check_text_length(m.text(), f"a {m.role} message")
        check_chat_length(sum(len(m.text()) for m in messages))
        return messages

    def extras(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class CompletionBody(Body):
    """OpenAI's (legacy) completions request: the prompt is the question; genloom extras as for chat."""

    model_config = ConfigDict(extra="allow")

    model: str = "default"
    prompt: Union[str, list[str]]
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    max_tokens: Optional[int] = Field(None, ge=1, le=MAX_NEW_TOKENS)
    temperature: Optional[float] = Field(None, ge=0.0, le=OPENAI_MAX_TEMPERATURE)
    top_p: Optional[float] = Field(None, gt=0.0, le=1.0)
    seed: Optional[Seed] = None
    stop: Optional[Union[str, list[str]]] = None
    n: int = 1
    user: Optional[UserId] = None
    collection: Optional[str] = None
    k: int = Field(DEFAULT_K, ge=1, le=MAX_K)
    where: Optional[dict[str, str]] = None
    template: Optional[str] = None

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class EmbeddingBody(Body):
    model_config = ConfigDict(extra="allow")

    input: Union[str, list[Any]]
    model: Optional[str] = None
    encoding_format: str = "float"
    dimensions: Optional[int] = None
    user: Optional[UserId] = None
    collection: Optional[str] = None  # whose embedding model; absent: the server's default collection


class TokenizeBody(Body):
    """vLLM's /tokenize request (prompt or messages)."""

    model_config = ConfigDict(extra="allow")

    model: Optional[str] = None
    prompt: Optional[str] = Field(None, max_length=1_000_000)
    messages: Optional[list[ChatMessage]] = None
