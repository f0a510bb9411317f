"""Remote engines: any OpenAI-compatible server (vLLM, llama.cpp's server, Ollama, TGI,
a hosted API, another `genloom serve`) as a generation backend.

    genloom models add-endpoint vllm --base-url http://gpu:8000/v1 --model Qwen/Qwen2-0.5B-Instruct
    genloom ask "..." -c docs --model vllm

An endpoint is a registry row with format 'endpoint': its "checkpoint" is the canonical
JSON of the connection (base URL, model id, the *name* of the environment variable that
holds the API key, tokenizer, context window); the key itself is read at call time and
never stored or logged. The row's sha256 is the hash of that JSON, so
`generations.model_revision` says exactly which connection answered.

The backend speaks chat completions with streaming and `stream_options.include_usage`;
`render()` is the JSON of the messages sent, so `generations.rendered_prompt` holds
exactly what the server received.

Token budgeting, most exact first:
1. the server's own `/tokenize` (vLLM: messages in, `count` out; llama.cpp: content in,
   `tokens` out), probed once per backend;
2. `--tokenizer DIR`, a local Hugging Face tokenizer (chat template applied when it has one);
3. a conservative estimate: one token per 3 UTF-8 bytes plus 8 per message. BPE
   tokenizers of current LLMs average ~4 characters per token on English and about one
   token per CJK character (3 bytes), so the estimate over-counts and a context that
   fits the estimate fits the server.

Retries: a connection error, a timeout before the first byte, HTTP 429 or 5xx are
retried up to `RETRIES` times with exponential backoff (0.5 s, 1 s, 2 s, honouring
Retry-After up to 10 s), but only before any text has been streamed: a cut stream is an
error, never a silently restarted answer.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import hashlib
import json
import math
import os
import re
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from genloom.errors import BadInput, GenloomError
from genloom.generation.backend import GenOutput, GenParams, OnText, Source

FORMAT = "endpoint"
DEFAULT_CONTEXT_WINDOW = 4096  # when neither --context-window nor the server's /v1/models says
RETRIES = 3
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 120.0  # the longest wait between two chunks of a stream
BYTES_PER_TOKEN = 3
TOKENS_PER_MESSAGE = 8
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_ENV_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
# genloom's own secrets (the field-encryption key, the PII hash key, the store's URL with its
# password): never a key to send to an endpoint, whoever registered it.
_OWN_VARIABLES = re.compile(r"^(GENLOOM_|DATABASE_URL|PGPASSWORD$|PGPASSFILE$)", re.IGNORECASE)


def check_key_variable(name: str) -> None:
    """An endpoint's --api-key-env: a variable name, and not one of genloom's own."""
    if not _ENV_VAR.match(name):
        raise BadInput(f"--api-key-env must be an environment variable name (got {name!r})")
    if _OWN_VARIABLES.match(name):
        raise BadInput(
            f"--api-key-env {name} is one of genloom's own variables (GENLOOM_*, DATABASE_URL*, PGPASSWORD): "
            "genloom never sends it to an endpoint; put the endpoint's key in a variable of its own"
        )


class EndpointError(GenloomError):
    """A remote engine could not be reached or answered badly (one line, names the endpoint)."""


# The endpoint key of the current call when it came from another process's environment (a CLI
# reusing `genloom serve`): set around that one call, so the server's own environment is not used.
_CALLER_KEY: contextvars.ContextVar[str | None] = contextvars.ContextVar("genloom_endpoint_key", default=None)


@contextlib.contextmanager
def caller_api_key(key: str | None) -> Iterator[None]:
    """Calls inside the block send `key` to endpoints that need one (None: their own variable)."""
    token = _CALLER_KEY.set(key)
    try:
        yield
    finally:
        _CALLER_KEY.reset(token)


@dataclasses.dataclass(frozen=True)
class EndpointSpec:
    base_url: str  # ends in /v1 for most servers; chat is {base_url}/chat/completions
    model: str  # the model id the server knows
    api_key_env: str | None = None
    tokenizer: str | None = None
    context_window: int | None = None

    def validate(self) -> EndpointSpec:
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise BadInput(
                f"--base-url must be an http(s) URL such as http://localhost:8000/v1 (got {self.base_url!r})"
            )
        if parts.username or parts.password:
            raise BadInput(
                "--base-url must not carry credentials; put the key in an environment variable (--api-key-env)"
            )
        if not self.model.strip():
            raise BadInput("--model must name the model id the server serves")
        if self.api_key_env is not None:
            check_key_variable(self.api_key_env)
        if self.context_window is not None and not 16 <= self.context_window <= 10_000_000:
            raise BadInput(f"--context-window must be between 16 and 10000000 (got {self.context_window})")
        if self.tokenizer is not None:
            from pathlib import Path

            if not (Path(self.tokenizer).expanduser() / "tokenizer_config.json").exists():
                raise BadInput(
                    f"--tokenizer {self.tokenizer} is not a Hugging Face tokenizer directory (no tokenizer_config.json)"
                )
        return self

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    def canonical(self) -> bytes:
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":")).encode()


def add_endpoint(session, name: str, spec: EndpointSpec):
    """Register NAME@(latest+1) as an endpoint; return the Model row."""
    from genloom.registry import register_model

    if not _NAME.match(name):
        raise BadInput(f"endpoint name {name!r}: use letters, digits, '.', '_' or '-' (no '@')")
    spec = dataclasses.replace(spec, base_url=spec.base_url.rstrip("/")).validate()
    return register_model(
        session,
        name=name,
        architecture="endpoint",
        checkpoint=spec.canonical(),
        config=spec.to_json(),
        format=FORMAT,
        metadata={"kind": "endpoint"},
    )


def spec_of(model) -> EndpointSpec:
    config = dict(model.config or {})
    return EndpointSpec(
        base_url=config["base_url"],
        model=config["model"],
        api_key_env=config.get("api_key_env"),
        tokenizer=config.get("tokenizer"),
        context_window=config.get("context_window"),
    )


def estimate_tokens(text: str, messages: int = 0) -> int:
    """The documented conservative estimate (see the module docstring)."""
    return math.ceil(len(text.encode("utf-8")) / BYTES_PER_TOKEN) + TOKENS_PER_MESSAGE * messages


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _server_message(response) -> str:
    """The error text an OpenAI-compatible server put in its body (or the start of the body)."""
    try:
        body = response.json()
    except ValueError:
        return _one_line(response.text or response.reason_phrase or "")
    if isinstance(body, dict):
        err = body.get("error", body.get("detail", body.get("message")))
        if isinstance(err, dict):
            err = err.get("message") or json.dumps(err)
        if err:
            return _one_line(err)
    return _one_line(json.dumps(body))


class EndpointBackend:
    """A chat-completions client with retries, streaming, usage and token budgeting."""

    def __init__(self, spec: EndpointSpec, *, name: str, revision: str | None = None, model_id: int | None = None):
        import httpx

        self.spec = spec
        self.name = name
        self.revision = revision or hashlib.sha256(spec.canonical()).hexdigest()
        self.model_id = model_id
        self.base_url = spec.base_url.rstrip("/")
        # vLLM and llama.cpp serve /tokenize beside /v1, not under it.
        self.root_url = self.base_url.removesuffix("/v1")
        self._client = httpx.Client(
            timeout=httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S),
            headers={"User-Agent": "genloom"},
            follow_redirects=False,
        )
        self._lock = threading.Lock()
        self._tokenize: str | None = None  # 'vllm' | 'llama.cpp' | 'none', probed on first count
        self._tokenizer: Any = None
        self._window: int | None = spec.context_window
        self.sleep = time.sleep  # tests shorten the backoff

    # ----------------------------------------------------------------- plumbing

    def _headers(self) -> dict[str, str]:
        env = self.spec.api_key_env
        if not env:
            return {}
        try:
            check_key_variable(env)  # again at call time: a row written before this check, or by SQL
        except BadInput as exc:
            raise EndpointError(f"endpoint {self.name}: {exc}") from None
        # A call a CLI forwarded to `genloom serve` carries the key from the CLI user's environment.
        key = _CALLER_KEY.get() or os.environ.get(env)
        if not key:
            raise EndpointError(f"endpoint {self.name} needs its API key in ${env}, which is not set")
        return {"Authorization": f"Bearer {key}"}

    def _request(self, method: str, url: str, *, json_body: Any = None, stream: bool = False):
        """Send with retries on connection errors, 429 and 5xx; return an open response (status < 400)."""
        import httpx

        headers = self._headers()
        delay = 0.5
        for attempt in range(RETRIES + 1):
            last = attempt == RETRIES
            try:
                request = self._client.build_request(method, url, json=json_body, headers=headers)
                response = self._client.send(request, stream=stream)
            except (
                httpx.ConnectError,
                httpx.ConnectTimeout,
                httpx.RemoteProtocolError,
                httpx.ReadTimeout,
                httpx.PoolTimeout,
                httpx.WriteError,
                httpx.ReadError,
            ) as exc:
                if last:
                    reason = _one_line(str(exc) or type(exc).__name__)
                    raise EndpointError(
                        f"cannot reach endpoint {self.name} at {self.base_url}: {reason} (after {RETRIES + 1} attempts)"
                    ) from None
                self.sleep(delay)
                delay *= 2
                continue
            if response.status_code == 429 or response.status_code >= 500:
                if stream:
                    response.read()
                if not last:
                    retry_after = response.headers.get("retry-after", "")
                    wait = min(float(retry_after), 10.0) if retry_after.replace(".", "", 1).isdigit() else delay
                    response.close()
                    self.sleep(wait)
                    delay *= 2
                    continue
            if response.status_code >= 400:
                if stream:
                    response.read()
                message = _server_message(response)
                response.close()
                raise EndpointError(
                    f"endpoint {self.name} at {self.base_url} answered HTTP {response.status_code}: {message}"
                )
            return response
        raise AssertionError("unreachable")

    def _json(self, response) -> Any:
        try:
            return response.json()
        except ValueError:
            raise EndpointError(
                f"endpoint {self.name} at {self.base_url} sent malformed JSON: {_one_line(response.text, 120)!r}"
            ) from None

    # ----------------------------------------------------------------- context window and tokens

    def _peek(self, method: str, url: str, body: Any = None) -> Any:
        """One attempt, no retries, None on any failure: for discovery (window, /tokenize), which
        must not fail a call that the generation request would report better."""
        try:
            response = self._client.request(method, url, json=body, headers=self._headers(), timeout=CONNECT_TIMEOUT_S)
        except Exception:  # unreachable, or no API key: the generation request reports it, logged
            return None
        if response.status_code != 200:
            return {}
        try:
            return response.json()
        except ValueError:
            return {}

    @property
    def context_window(self) -> int:
        """--context-window, else the server's `max_model_len` (vLLM's /tokenize or /v1/models; genloom
        serves both), else 4096."""
        if self._window is not None:
            return self._window
        with self._lock:
            if self._tokenize is None:
                self._tokenize = self._probe_tokenize([{"role": "user", "content": "probe"}])
        if self._window is not None:
            return self._window
        listing = self._peek("GET", f"{self.base_url}/models")
        if listing is None:  # unreachable now: assume the default, ask again next time
            return DEFAULT_CONTEXT_WINDOW
        window = DEFAULT_CONTEXT_WINDOW
        for entry in listing.get("data", []) if isinstance(listing, dict) else []:
            if isinstance(entry, dict) and entry.get("id") == self.spec.model:
                found = entry.get("max_model_len") or entry.get("context_length")
                if isinstance(found, int) and found > 0:
                    window = found
        self._window = window
        return window

    def render(self, messages: list[dict[str, str]]) -> str:
        return json.dumps(messages, ensure_ascii=False, indent=1)

    def _messages(self, prompt: str) -> list[dict[str, str]]:
        try:
            messages = json.loads(prompt)
        except ValueError:
            return [{"role": "user", "content": prompt}]
        if isinstance(messages, list) and all(isinstance(m, dict) and "role" in m for m in messages):
            return messages
        return [{"role": "user", "content": prompt}]

    def count_tokens(self, text: str) -> int:
        messages = self._messages(text)
        with self._lock:
            if self._tokenize is None:
                self._tokenize = self._probe_tokenize(messages)
        if self._tokenize == "vllm":
            body = {"model": self.spec.model, "messages": messages, "add_generation_prompt": True}
            return int(self._json(self._request("POST", f"{self.root_url}/tokenize", json_body=body))["count"])
        if self._tokenize == "llama.cpp":
            content = "".join(m.get("content") or "" for m in messages)
            tokens = self._json(self._request("POST", f"{self.root_url}/tokenize", json_body={"content": content}))[
                "tokens"
            ]
            return len(tokens) + TOKENS_PER_MESSAGE * len(messages)  # the chat template's markers, estimated
        if self.spec.tokenizer:
            return self._local_count(messages)
        return estimate_tokens("".join(m.get("content") or "" for m in messages), len(messages))

    def _probe_tokenize(self, messages: list[dict[str, str]]) -> str | None:
        """Which /tokenize the server offers: 'vllm', 'llama.cpp', 'none'; None when unreachable (ask again later)."""
        out = self._peek(
            "POST",
            f"{self.root_url}/tokenize",
            {"model": self.spec.model, "messages": messages, "add_generation_prompt": True},
        )
        if out is None:
            return None
        if isinstance(out, dict) and isinstance(out.get("count"), int):
            if isinstance(out.get("max_model_len"), int) and out["max_model_len"] > 0 and self._window is None:
                self._window = out["max_model_len"]
            return "vllm"
        out = self._peek("POST", f"{self.root_url}/tokenize", {"content": "probe"})
        if isinstance(out, dict) and isinstance(out.get("tokens"), list):
            return "llama.cpp"
        return "none"

    def _local_count(self, messages: list[dict[str, str]]) -> int:
        if self._tokenizer is None:
            from pathlib import Path

            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(
                Path(str(self.spec.tokenizer)).expanduser(), local_files_only=True
            )
        tok = self._tokenizer
        if getattr(tok, "chat_template", None):
            ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
            return len(ids["input_ids"] if isinstance(ids, dict) else ids)
        text = "".join(m.get("content") or "" for m in messages)
        return len(tok(text, add_special_tokens=False)["input_ids"]) + TOKENS_PER_MESSAGE * len(messages)

    # ----------------------------------------------------------------- generation

    def generate(
        self, prompt: str, *, params: GenParams, question: str, sources: list[Source], on_text: OnText | None = None
    ) -> GenOutput:
        body: dict[str, Any] = {
            "model": self.spec.model,
            "messages": self._messages(prompt),
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if params.seed is not None:
            body["seed"] = params.seed
        if params.stop:
            body["stop"] = params.stop
        response = self._request("POST", f"{self.base_url}/chat/completions", json_body=body, stream=True)
        try:
            if "text/event-stream" not in response.headers.get("content-type", ""):
                # A server that ignores stream=true answers with one JSON body.
                response.read()
                return self._from_body(self._json(response), prompt, on_text)
            return self._from_stream(response, prompt, on_text)
        finally:
            response.close()

    def _from_body(self, out: Any, prompt: str, on_text: OnText | None) -> GenOutput:
        try:
            choice = out["choices"][0]
            text = choice["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise EndpointError(f"endpoint {self.name} at {self.base_url} sent a response with no choices") from None
        if on_text is not None and text:
            on_text(text)
        return self._output(text, choice.get("finish_reason"), out.get("usage"), prompt)

    def _from_stream(self, response, prompt: str, on_text: OnText | None) -> GenOutput:
        import httpx

        pieces: list[str] = []
        finish = None
        usage = None
        done = False
        try:
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    done = True
                    break
                try:
                    chunk = json.loads(data)
                except ValueError:
                    raise EndpointError(
                        f"endpoint {self.name} at {self.base_url} sent malformed JSON in its stream: {_one_line(data, 120)!r}"
                    ) from None
                if not isinstance(chunk, dict):
                    raise EndpointError(
                        f"endpoint {self.name} at {self.base_url} sent a stream chunk that is not an object"
                    )
                if "error" in chunk:
                    err = chunk["error"]
                    message = err.get("message") if isinstance(err, dict) else err
                    raise EndpointError(
                        f"endpoint {self.name} at {self.base_url} failed mid-stream: {_one_line(str(message))}"
                    )
                if chunk.get("usage"):
                    usage = chunk["usage"]
                for choice in chunk.get("choices") or []:
                    piece = (choice.get("delta") or {}).get("content") or ""
                    if piece:
                        pieces.append(piece)
                        if on_text is not None:
                            on_text(piece)
                    if choice.get("finish_reason"):
                        finish = choice["finish_reason"]
        except httpx.HTTPError as exc:
            raise EndpointError(
                f"endpoint {self.name} at {self.base_url} cut the stream: {_one_line(str(exc) or type(exc).__name__)}"
            ) from None
        if not done and finish is None:
            raise EndpointError(f"endpoint {self.name} at {self.base_url} cut the stream before it finished")
        return self._output("".join(pieces), finish, usage, prompt)

    def _output(self, text: str, finish: str | None, usage: Any, prompt: str) -> GenOutput:
        usage = usage if isinstance(usage, dict) else {}
        input_tokens = usage.get("prompt_tokens")
        output_tokens = usage.get("completion_tokens")
        if not isinstance(input_tokens, int):
            input_tokens = self.count_tokens(prompt)
        if not isinstance(output_tokens, int):  # a server without usage: estimate, never zero for text
            output_tokens = estimate_tokens(text)
        return GenOutput(
            text=text,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            finish_reason="length" if finish == "length" else "stop",
        )
