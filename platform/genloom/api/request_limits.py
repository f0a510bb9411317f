"""Limits the HTTP API applies before doing any work, and which models it may load.

Each limit is configurable (serve options set the environment variables below, which the
request models read when they validate, i.e. before an endpoint runs):

- GENLOOM_MAX_BODY_BYTES: request bodies (413 above it; checked by genloom.api.auth.Guard).
- GENLOOM_MAX_QUESTION_CHARS: a question, a search query, or one chat message (422).
- GENLOOM_MAX_CHAT_CHARS: all messages of a chat request together (422).
- GENLOOM_MODEL_DIRS: folders (os.pathsep-separated) whose model directories requests may
  name; with the server's own --model, the only file-system paths a request may use.
  Anything else must be a registered model name (or 'extractive'). A request can therefore
  neither load an arbitrary directory nor learn whether a path exists.
"""

from __future__ import annotations

import os
from pathlib import Path

from genloom.errors import BadInput

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_QUESTION_CHARS = 16_000
DEFAULT_MAX_CHAT_CHARS = 200_000


def _int_env(name: str, default: int) -> int:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    if not text.isdigit() or int(text) < 1:
        raise BadInput(f"{name} must be a positive whole number (got {text!r})")
    return int(text)


def max_body_bytes() -> int:
    return _int_env("GENLOOM_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES)


def max_question_chars() -> int:
    return _int_env("GENLOOM_MAX_QUESTION_CHARS", DEFAULT_MAX_QUESTION_CHARS)


def max_chat_chars() -> int:
    return _int_env("GENLOOM_MAX_CHAT_CHARS", DEFAULT_MAX_CHAT_CHARS)


def check_text_length(text: str, what: str = "question") -> str:
    """Raise ValueError (pydantic turns it into a 422) when `text` is over the question limit."""
    limit = max_question_chars()
    if len(text) > limit:
        raise ValueError(
            f"{what} is {len(text)} characters, over the server's limit of {limit} (GENLOOM_MAX_QUESTION_CHARS)"
        )
    return text


def check_chat_length(total: int) -> None:
    limit = max_chat_chars()
    if total > limit:
        raise ValueError(
            f"messages total {total} characters, over the server's limit of {limit} (GENLOOM_MAX_CHAT_CHARS)"
        )


def host_name(header: str) -> str:
    """'Example.com:8000' → 'example.com'; '[::1]:8000' → '::1'."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    if header.count(":") == 1:
        return header.split(":", 1)[0]
    return header


def model_dirs() -> list[Path]:
    roots = [Path(p).expanduser().resolve() for p in os.environ.get("GENLOOM_MODEL_DIRS", "").split(os.pathsep) if p]
    served = os.environ.get("GENLOOM_MODEL", "").strip()
    if served and _looks_like_path(served):
        roots.append(Path(served).expanduser().resolve())
    return roots


def _looks_like_path(ref: str) -> bool:
    return "/" in ref or "\\" in ref or ref.startswith(("~", "."))


def check_http_model(ref: str | None) -> None:
    """A model named over HTTP: a registered NAME[@V], 'extractive', or a directory under the allowed folders.

    The decision is made on the text alone (resolving symlinks), before the file system is
    asked whether the path exists, so the answer reveals nothing about other paths.
    """
    if ref is None or not _looks_like_path(ref):
        return
    path = Path(ref).expanduser()
    if path.is_absolute():
        resolved = path.resolve()
        for root in model_dirs():
            if resolved == root or root in resolved.parents:
                return
    raise BadInput(
        f"model {ref[:200]!r} is not served here: name a registered model, or a folder under the server's "
        "--model-dir (GENLOOM_MODEL_DIRS)"
    )


def check_query(q: str) -> str:
    """check_text_length for a query-string parameter (a BadInput: the route is already running)."""
    try:
        return check_text_length(q, "q")
    except ValueError as exc:
        raise BadInput(str(exc)) from None


def check_no_nul(**params: str | list[str] | None) -> None:
    """Query-string text Postgres cannot store or compare (text columns cannot hold NUL)."""
    for name, value in params.items():
        for text in [value] if isinstance(value, str) else value or []:
            if "\x00" in text:
                raise BadInput(f"{name} must not contain NUL (\\u0000) characters")
