"""Context assembly: numbered sources and earlier turns, within the model's context window.

Everything is counted in the backend's own tokens on the exact rendered prompt (chat
template included), so the budget is never an estimate: prompt tokens + max_new_tokens
must fit the context window. Sources come first, in rank order, because they ground
the answer; earlier turns of the session fill what is left, newest first.
"""

from __future__ import annotations

import dataclasses

from genloom.errors import BadInput
from genloom.generation.backend import Backend, Source
from genloom.generation.templates import render_template

NO_SOURCES = "(no sources matched the question)"


@dataclasses.dataclass
class Turn:
    """One earlier exchange of the conversation."""

    question: str
    answer: str


@dataclasses.dataclass
class AssembledPrompt:
    messages: list[dict[str, str]]
    prompt: str  # what the model reads (the backend's rendering of messages)
    input_tokens: int
    sources: list[Source]  # the ones in the prompt, numbered 1..m in rank order
    history_turns: int  # how many earlier turns fitted
    dropped_sources: int  # retrieved but left out for lack of room


def format_sources(sources: list[Source]) -> str:
    if not sources:
        return NO_SOURCES
    blocks = []
    for s in sources:
        head = f"[{s.n}] {s.title}" if s.title else f"[{s.n}]"
        blocks.append(f"{head}\n{s.text.strip()}")
    return "\n\n".join(blocks)


def _messages(system: str | None, history: list[Turn], user: str) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": system}] if system else []
    for turn in history:
        messages.append({"role": "user", "content": turn.question})
        messages.append({"role": "assistant", "content": turn.answer})
    messages.append({"role": "user", "content": user})
    return messages


def assemble(
    backend: Backend,
    *,
    question: str,
    candidates: list[Source] | None,
    template_text: str | None,
    history: list[Turn],
    max_new_tokens: int,
    system: str | None = None,
) -> AssembledPrompt:
    """candidates None = no retrieval (plain generation: the question is the user message)."""
    budget = backend.context_window - max_new_tokens
    if budget <= 0:
        raise BadInput(
            f"max_new_tokens {max_new_tokens} leaves no room for a prompt in {backend.name}'s "
            f"context window of {backend.context_window} tokens"
        )

    def build(sources: list[Source], turns: list[Turn]) -> tuple[list[dict[str, str]], str, int]:
        if candidates is None or template_text is None:
            user = question
        else:
            user = render_template(template_text, sources=format_sources(sources), question=question)
        messages = _messages(system, turns, user)
        prompt = backend.render(messages)
        return messages, prompt, backend.count_tokens(prompt)

    # 1. Sources in rank order, renumbered 1..m as they are admitted.
    chosen: list[Source] = []
    current = build([], [])
    if current[2] > budget:
        raise BadInput(
            f"the question alone needs {current[2]} tokens, more than the {budget} the context window of "
            f"{backend.context_window} leaves after max_new_tokens {max_new_tokens}"
        )
    for source in candidates or []:
        numbered = dataclasses.replace(source, n=len(chosen) + 1)
        attempt = build(chosen + [numbered], [])
        if attempt[2] > budget:
            break
        chosen.append(numbered)
        current = attempt
    if candidates and not chosen:
        raise BadInput(
            f"the context window of {backend.context_window} tokens cannot fit even one source "
            f"(max_new_tokens {max_new_tokens}); lower max_new_tokens or use a model with a longer context"
        )

    # 2. Earlier turns, newest first, while they fit.
    turns: list[Turn] = []
    for turn in reversed(history):
        attempt = build(chosen, [turn] + turns)
        if attempt[2] > budget:
            break
        turns.insert(0, turn)
        current = attempt

    messages, prompt, tokens = current
    return AssembledPrompt(
        messages=messages,
        prompt=prompt,
        input_tokens=tokens,
        sources=chosen,
        history_turns=len(turns),
        dropped_sources=len(candidates or []) - len(chosen),
    )
