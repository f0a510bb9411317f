"""The OpenAI-compatible surface: /v1/models, /v1/chat/completions, /v1/completions,
/v1/embeddings, and vLLM's /tokenize (so one genloom can budget tokens for another).

Stock clients (the official `openai` package, chat UIs) need no extras:
- `genloom serve --collection NAME` makes retrieval the default for requests that name no
  collection; `"collection": null` in the body, or the header `X-Genloom-Retrieval: off`,
  turns it off for one request.
- `stream_options.include_usage` adds OpenAI's final chunk with `choices: []` and the usage.
- Only `n=1`: anything else is a 400 that says so (one logged call is one answer).
- Errors are `{"error": {"message", "type", "param", "code"}}` with text for HTTP callers.

Every chat or completion request is one logged call (`genloom.generation.call`), exactly
as `genloom ask` makes it.
"""

from __future__ import annotations

import base64
import contextvars
import json
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from genloom.api import request_limits
from genloom.api.schemas import ChatCompletionBody, CompletionBody, EmbeddingBody, TokenizeBody
from genloom.api.session import DB
from genloom.errors import BadInput

router = APIRouter()

RETRIEVAL_HEADER = "x-genloom-retrieval"
MAX_EMBED_INPUTS = 256  # per request; checked before any model work
MAX_EMBED_CHARS = 200_000  # all inputs together


def openai_error(
    status: int,
    message: str,
    *,
    kind: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
    **extra: Any,
) -> JSONResponse:
    return JSONResponse(
        status_code=status, content={"error": {"message": message, "type": kind, "param": param, "code": code, **extra}}
    )


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def default_collection(request: Request) -> str | None:
    """What `genloom serve --collection NAME` set (app.state.default_collection), if anything."""
    return getattr(request.app.state, "default_collection", None)


def request_collection(request: Request, body) -> str | None:
    """The body's `collection` when given (null = no retrieval), else the server's default;
    the header `X-Genloom-Retrieval: off` turns retrieval off whatever the default."""
    if request.headers.get(RETRIEVAL_HEADER, "").strip().lower() in ("off", "0", "false", "no", "none"):
        return None
    if "collection" in body.model_fields_set:
        return body.collection
    return default_collection(request)


def _only_one_choice(body) -> JSONResponse | None:
    if body.n != 1:
        return openai_error(
            400,
            f"n must be 1 (got {body.n}): genloom returns one logged answer per request; "
            "send the request again for another",
            param="n",
            code="unsupported_value",
        )
    return None


def _params(body, max_new_tokens: int | None):
    from genloom.generation.backend import GenParams

    return GenParams(
        max_new_tokens=max_new_tokens or 256,
        temperature=body.temperature or 0.0,
        top_p=body.top_p if body.top_p is not None else 1.0,
        seed=body.seed,
        stop=[body.stop] if isinstance(body.stop, str) else list(body.stop or []),
    )


def _model(body) -> str | None:
    """The body's model as genloom resolves it; a path must lie under the server's model folders
    (every route that loads a model comes through here, as /v1/ask through app._call_request)."""
    request_limits.check_http_model(body.model)
    return None if body.model in (None, "", "default", "genloom") else body.model


def chat_request(body: ChatCompletionBody, collection: str | None):
    """OpenAI messages → question (the last user message), system text and earlier turns."""
    from genloom.generation.call import CallRequest
    from genloom.generation.context import Turn

    *earlier, last = body.messages
    system = "\n\n".join(m.text() for m in earlier if m.role in ("system", "developer")) or None
    history: list[Turn] = []
    pending: str | None = None
    for m in earlier:
        if m.role == "user":
            pending = m.text() if pending is None else pending + "\n\n" + m.text()
        elif m.role == "assistant":
            history.append(Turn(question=pending or "", answer=m.text()))
            pending = None
    question = last.text() if pending is None else pending + "\n\n" + last.text()
    # A client that sends its own transcript owns the history; with only a session id, genloom reads it.
    use_history = history if (earlier or body.session_id is None) else None
    return CallRequest(
        question=question,
        collection=collection,
        model=_model(body),
        session_id=body.session_id,
        k=body.k,
        where=body.where,
        template=body.template,
        params=_params(body, body.max_completion_tokens or body.max_tokens),
        user=body.user,
        system=system,
        history=use_history,
    )


def completion_request(body: CompletionBody, collection: str | None):
    from genloom.generation.call import CallRequest

    prompt = body.prompt if isinstance(body.prompt, str) else (body.prompt[0] if len(body.prompt) == 1 else None)
    if prompt is None:
        raise BadInput("prompt must be one string (a list of prompts would need n answers; send one request each)")
    return CallRequest(
        question=prompt,
        collection=collection,
        model=_model(body),
        k=body.k,
        where=body.where,
        template=body.template,
        params=_params(body, body.max_tokens),
        user=body.user,
        history=[],
    )


def _finish(reason: str) -> str:
    # OpenAI's finish reasons; genloom's 'abstain' (the extractive backend found no support) is a normal stop.
    return reason if reason in ("stop", "length") else "stop"


def _usage(result) -> dict[str, int]:
    return {
        "prompt_tokens": result.tokens["input"],
        "completion_tokens": result.tokens["output"],
        "total_tokens": result.tokens["input"] + result.tokens["output"],
    }


def _generation_failed(result) -> JSONResponse:
    # A remote engine that failed is a bad gateway; anything else failed here.
    status = 502 if (result.error or "").startswith("EndpointError:") else 500
    return openai_error(
        status,
        f"generation failed: {result.error}",
        kind="server_error",
        code="generation_error",
        generation_id=result.generation_id,
    )


def _extras(result) -> dict[str, Any]:
    return {
        "generation_id": result.generation_id,
        "session_id": result.session_id,
        "citations": result.citations,
        "timings_ms": result.timings_ms,
        "genloom_finish_reason": result.finish_reason,
        **({"genloom_abstention": result.abstention} if result.abstention else {}),
    }


def _run(session, call_request):
    from genloom.generation.call import ask

    with session.begin():
        return ask(session, call_request)


@router.post("/v1/chat/completions")
def chat_completions(body: ChatCompletionBody, request: Request, session: DB):
    refused = _only_one_choice(body)
    if refused:
        return refused
    call_request = chat_request(body, request_collection(request, body))
    created = int(time.time())
    if body.stream:
        return stream_call(call_request, created, kind="chat", include_usage=body.include_usage())
    result = _run(session, call_request)
    if result.status == "error":
        return _generation_failed(result)
    return {
        "id": f"chatcmpl-{result.generation_id}",
        "object": "chat.completion",
        "created": created,
        "model": result.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": result.answer},
                "finish_reason": _finish(result.finish_reason),
            }
        ],
        "usage": _usage(result),
        **_extras(result),
    }


@router.post("/v1/completions")
def completions(body: CompletionBody, request: Request, session: DB):
    refused = _only_one_choice(body)
    if refused:
        return refused
    call_request = completion_request(body, request_collection(request, body))
    created = int(time.time())
    if body.stream:
        return stream_call(call_request, created, kind="text", include_usage=body.include_usage())
    result = _run(session, call_request)
    if result.status == "error":
        return _generation_failed(result)
    return {
        "id": f"cmpl-{result.generation_id}",
        "object": "text_completion",
        "created": created,
        "model": result.model,
        "choices": [
            {"index": 0, "text": result.answer, "logprobs": None, "finish_reason": _finish(result.finish_reason)}
        ],
        "usage": _usage(result),
        **_extras(result),
    }


def _sse(obj: Any) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False, default=str)}\n\n"


def stream_call(call_request, created: int, *, kind: str, include_usage: bool):
    """Server-sent events in OpenAI's chunk format (kind 'chat' or 'text'). A worker thread owns
    the call's session: validation errors surface before the stream starts (as 4xx JSON); the
    finishing chunk carries citations and the generation id and is sent after the commit."""
    from genloom.db.engine import session_scope
    from genloom.generation.call import execute, prepare

    events: queue.Queue = queue.Queue()

    def work() -> None:
        try:
            with session_scope(purpose="api") as s:
                prepared = prepare(s, call_request)
                events.put(("ready", prepared))
                result = execute(s, prepared, on_text=lambda text: events.put(("text", text)))
            events.put(("done", result))
        except BaseException as exc:  # before "ready": becomes the HTTP error; after: an error event
            events.put(("error", exc))

    # The caller's context (tenant, audit actor) goes with the work.
    threading.Thread(target=contextvars.copy_context().run, args=(work,), name="genloom-stream", daemon=True).start()
    event, value = events.get()
    if event == "error":
        raise value  # GenloomError → its JSON status via the app's handler
    prepared = value
    if kind == "chat":
        base = {
            "id": f"chatcmpl-{prepared.generation_id}",
            "object": "chat.completion.chunk",
            "created": created,
            "model": prepared.backend.name,
            "generation_id": prepared.generation_id,
        }

        def choice(text: str | None, finish: str | None, first: bool = False) -> dict[str, Any]:
            delta = {"role": "assistant", "content": ""} if first else ({"content": text} if text is not None else {})
            return {"index": 0, "delta": delta, "finish_reason": finish}
    else:
        base = {
            "id": f"cmpl-{prepared.generation_id}",
            "object": "text_completion",
            "created": created,
            "model": prepared.backend.name,
            "generation_id": prepared.generation_id,
        }

        def choice(text: str | None, finish: str | None, first: bool = False) -> dict[str, Any]:
            return {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}

    def stream() -> Iterator[str]:
        if kind == "chat":
            yield _sse({**base, "choices": [choice(None, None, first=True)]})
        while True:
            event, value = events.get()
            if event == "text":
                yield _sse({**base, "choices": [choice(value, None)]})
            elif event == "done":
                result = value
                if result.status == "error":
                    yield _sse(
                        {
                            "error": {
                                "message": f"generation failed: {result.error}",
                                "type": "server_error",
                                "param": None,
                                "code": "generation_error",
                                "generation_id": result.generation_id,
                            }
                        }
                    )
                else:
                    yield _sse(
                        {
                            **base,
                            "choices": [choice(None, _finish(result.finish_reason))],
                            "session_id": result.session_id,
                            "citations": result.citations,
                            "genloom_finish_reason": result.finish_reason,
                            **({"genloom_abstention": result.abstention} if result.abstention else {}),
                        }
                    )
                    if include_usage:
                        yield _sse({**base, "choices": [], "usage": _usage(result)})
                yield "data: [DONE]\n\n"
                return
            else:  # the transaction rolled back: nothing of this call was kept
                yield _sse(
                    {"error": {"message": _one_line(value), "type": "server_error", "param": None, "code": None}}
                )
                yield "data: [DONE]\n\n"
                return

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


# --------------------------------------------------------------------------- models, embeddings, tokenize


def _model_entry(model_id: str, created: int, **extra: Any) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": created, "owned_by": "genloom", **extra}


@router.get("/v1/models")
def list_models(session: DB):
    """extractive, the model serve was started with, and the registry's generating models (latest version each)."""
    import sqlalchemy as sa

    from genloom.db.models import Model
    from genloom.generation.backend import EXTRACTIVE
    from genloom.generation.resolve import default_model, load_backend

    now = int(time.time())
    data = [_model_entry(EXTRACTIVE, 0, max_model_len=8192, genloom_kind="extractive")]
    configured = default_model()
    with session.begin():
        if configured != EXTRACTIVE:
            try:  # serve loaded it at start, so this is a cache hit
                window = {"max_model_len": load_backend(session, configured).context_window}
            except Exception:  # listing must not fail because the default is broken; a call says why
                window = {}
            data.append(_model_entry(configured, now, genloom_kind="default", **window))
        rows = session.execute(
            sa.select(
                Model.name,
                sa.func.max(Model.version).label("version"),
                sa.func.min(Model.created_at),
                sa.func.max(Model.format),
            )
            .where(Model.format.in_(("hf-tar", "endpoint")))
            .group_by(Model.name)
            .order_by(Model.name)
        ).all()
    for name, version, created_at, fmt in rows:
        if name not in (e["id"] for e in data):
            data.append(
                _model_entry(
                    name,
                    int(created_at.timestamp()),
                    version=version,
                    genloom_kind="endpoint" if fmt == "endpoint" else "registry",
                )
            )
    return {"object": "list", "data": data}


@router.get("/v1/models/{model_id:path}")
def retrieve_model(model_id: str, session: DB):
    for entry in list_models(session)["data"]:
        if entry["id"] == model_id:
            return entry
    return openai_error(
        404,
        f"the model {model_id!r} does not exist; GET /v1/models lists the ones served",
        param="model",
        code="model_not_found",
    )


@router.post("/v1/embeddings")
def embeddings(body: EmbeddingBody, request: Request, session: DB):
    """Embeddings in the collection's embedding model (the default collection's, else the bundled one)."""
    import numpy as np

    from genloom import embeddings as embedding
    from genloom.retrieval.collections import get_collection
    from genloom.retrieval.vector import model_for_collection

    texts = [body.input] if isinstance(body.input, str) else list(body.input)
    if not texts or any(not isinstance(t, str) for t in texts):
        return openai_error(
            400, "input must be a string or a list of strings (token arrays are not accepted)", param="input"
        )
    if len(texts) > MAX_EMBED_INPUTS:
        return openai_error(400, f"at most {MAX_EMBED_INPUTS} inputs per request (got {len(texts)})", param="input")
    if sum(len(t) for t in texts) > MAX_EMBED_CHARS:
        return openai_error(
            400, f"inputs hold more than {MAX_EMBED_CHARS} characters in all; split the request", param="input"
        )
    if any(not t.strip() for t in texts):
        return openai_error(400, "input strings must not be empty", param="input")
    if body.encoding_format not in ("float", "base64"):
        return openai_error(400, "encoding_format must be 'float' or 'base64'", param="encoding_format")
    collection = request_collection(request, body)
    name = embedding.model_name(None)
    if collection is not None:
        with session.begin():
            row = model_for_collection(session, get_collection(session, collection).embedding_model_id)
            if row is not None:
                name = row.name
    if body.model not in (None, "", "default", "genloom", name, collection):
        return openai_error(
            400,
            f"embedding model {body.model!r} is not served here: this server embeds with {name} "
            f"(the collection's model); send model {name!r} or 'default'",
            param="model",
            code="model_not_found",
        )
    if body.dimensions is not None and body.dimensions != embedding.embedding_dim(name):
        return openai_error(400, f"dimensions must be {embedding.embedding_dim(name)} for {name}", param="dimensions")
    vectors = np.asarray(embedding.embed(texts, name=name), dtype=np.float32)
    with embedding.EMBEDDER_LOCK:
        tokens = sum(len(ids) for ids in embedding.tokenizer(name)(texts, add_special_tokens=True)["input_ids"])
    data = []
    for i, vector in enumerate(vectors):
        value: Any = (
            base64.b64encode(vector.astype("<f4").tobytes()).decode()
            if body.encoding_format == "base64"
            else vector.tolist()
        )
        data.append({"object": "embedding", "index": i, "embedding": value})
    return {"object": "list", "data": data, "model": name, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


@router.post("/tokenize")
def tokenize(body: TokenizeBody, session: DB):
    """vLLM's /tokenize, count only: how many of the model's tokens a prompt or chat takes,
    and the model's context window (`max_model_len`)."""
    from genloom.generation.resolve import load_backend

    with session.begin():
        backend = load_backend(session, _model(body))
    if body.messages is not None:
        messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        count = backend.count_tokens(backend.render(messages))
    elif body.prompt is not None:
        count = backend.count_tokens(body.prompt)
    else:
        return openai_error(400, "give prompt (a string) or messages (a chat)", param="prompt")
    return {"count": count, "max_model_len": backend.context_window}


def install(app) -> None:
    app.include_router(router)
