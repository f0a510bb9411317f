"""The HTTP API: genloom's calls over FastAPI, including an OpenAI-compatible chat endpoint.

Every request gets one database session (the `db` dependency) and decides its own
transaction, committed before the response leaves, so a client that receives a
generation id can send feedback on it at once. Endpoints are plain `def`s: FastAPI runs
them in its thread pool, so concurrent requests generate and log independently.
Errors are JSON in OpenAI's shape, `{"error": {"message", "type", "code"}}`: 422 for bad
input, 404 for unknown ids and names, 500 for a generation that failed (still logged).
"""

from __future__ import annotations

import contextvars
import json
import queue
import threading
import time
from collections.abc import Iterator
from typing import Annotated, Any, Optional

from fastapi import Depends, FastAPI, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from sqlalchemy.orm import Session

from genloom import __version__
from genloom.api import auth, request_limits
from genloom.api.engine import api_engine
from genloom.api.schemas import AskBody, ChatCompletionBody, FeedbackBody
from genloom.errors import BadInput, ConfigError, DatabaseError, GenloomError, NotFound

_STATUS = {NotFound: 404, BadInput: 422, ConfigError: 503, DatabaseError: 503}


def _error(status: int, message: str, kind: str, **extra: Any) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": {"message": message, "type": kind, "code": status, **extra}})


def _status_for(exc: GenloomError) -> int:
    for cls, status in _STATUS.items():
        if isinstance(exc, cls):
            return status
    return 400


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__




def db() -> Iterator[Session]:
    """One session per request; the endpoint opens the transaction (`with s.begin():`)."""
    from genloom.db.engine import sessionmaker_for

    session = sessionmaker_for(api_engine())()
    try:
        yield session
    finally:
        session.close()


DB = Annotated[Session, Depends(db)]


def _call_request(body, *, question: str, collection: str | None, history=None, system=None, max_new_tokens=None):
    from genloom.generation.backend import GenParams
    from genloom.generation.call import CallRequest

    request_limits.check_http_model(body.model)  # registered names and the server's model folders only
    return CallRequest(
        question=question,
        collection=collection,
        model=None if body.model in (None, "", "default", "genloom") else body.model,
        session_id=body.session_id,
        k=body.k,
        where=body.where,
        template=body.template,
        params=GenParams(
            max_new_tokens=max_new_tokens or 256,
            temperature=body.temperature or 0.0,
            top_p=body.top_p if body.top_p is not None else 1.0,
            seed=body.seed,
            stop=[body.stop] if isinstance(body.stop, str) else list(body.stop or []),
        ),
        user=body.user,
        system=system,
        history=history,
    )


def _chat_request(body: ChatCompletionBody):
    """OpenAI messages → question (the last user message), system text and earlier turns."""
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
    return _call_request(
        body,
        question=question,
        collection=body.collection,
        history=use_history,
        system=system,
        max_new_tokens=body.max_completion_tokens or body.max_tokens,
    )


def _completion_json(result, created: int) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{result.generation_id}",
        "object": "chat.completion",
        "created": created,
        "model": result.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": result.answer},
                "finish_reason": result.finish_reason if result.finish_reason in ("stop", "length") else "stop",
            }
        ],
        "usage": {
            "prompt_tokens": result.tokens["input"],
            "completion_tokens": result.tokens["output"],
            "total_tokens": result.tokens["input"] + result.tokens["output"],
        },
        "generation_id": result.generation_id,
        "session_id": result.session_id,
        "citations": result.citations,
        "timings_ms": result.timings_ms,
    }


def _sse(obj: Any) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False, default=str)}\n\n"


def create_app(security: auth.SecuritySettings | None = None, local_token: str | None = None) -> FastAPI:
    """The app; `security` defaults to what `genloom serve` put in the environment (keys required).

    With local_token, also the routes a local `genloom search|ask` reuses (api/local_routes.py).
    """
    app = FastAPI(
        title="genloom",
        version=__version__,
        description="Retrieval-grounded generation over one PostgreSQL + pgvector store; every call is logged.",
    )
    auth.install(app, security or auth.settings_from_env())  # before any route: keys, roles, host, body size

    @app.exception_handler(GenloomError)
    def _genloom_error(request: Request, exc: GenloomError) -> JSONResponse:
        return _error(_status_for(exc), _one_line(exc), type(exc).__name__)

    @app.exception_handler(RequestValidationError)
    def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
            parts.append(f"{where}: {err.get('msg', 'invalid')}")
        return _error(422, "invalid request: " + "; ".join(parts), "invalid_request_error")

    if local_token:
        from genloom.api.local_routes import local_router

        app.include_router(local_router(local_token, db))

    @app.get("/healthz")
    def healthz(session: DB) -> dict[str, Any]:
        import sqlalchemy as sa

        session.execute(sa.text("SELECT 1"))
        return {"status": "ok", "version": __version__}

    @app.post("/v1/ask")
    def ask(body: AskBody, session: DB):
        from genloom.generation.call import ask as ask_call

        request = _call_request(body, question=body.question, collection=body.collection,
                                max_new_tokens=body.max_new_tokens)
        with session.begin():
            result = ask_call(session, request)
        if result.status == "error":  # committed: the failure is in the log
            return _error(500, f"generation failed: {result.error}", "generation_error", generation_id=result.generation_id)
        return result.as_json()

    @app.post("/v1/feedback")
    def feedback(body: FeedbackBody, session: DB):
        from genloom.generation.feedback import add_feedback, feedback_json

        with session.begin():
            row = add_feedback(
                session, body.generation_id, score=body.score, thumbs=body.thumbs,
                label=body.label, comment=body.comment, user=body.user,
            )
            out = feedback_json(row)
        return JSONResponse(status_code=201, content=jsonable_encoder(out))

    @app.get("/v1/generations/{generation_id}")
    def generation(generation_id: int, session: DB):
        from genloom.generation.log import generation_detail

        with session.begin():
            return generation_detail(session, generation_id)

    @app.get("/v1/sessions/{session_id}")
    def chat_session(session_id: int, session: DB):
        from genloom.generation.log import session_detail

        with session.begin():
            return session_detail(session, session_id)

    @app.get("/v1/search")
    def search(
        session: DB,
        q: Annotated[str, Query(min_length=1, description="The query text.")],
        collection: Annotated[str, Query(min_length=1)],
        k: Annotated[int, Query(ge=1, le=100)] = 10,
        mode: Annotated[str, Query(pattern="^(hybrid|bm25|vector)$")] = "hybrid",
        by_document: bool = False,
        where: Annotated[Optional[list[str]], Query(description="Metadata filters: key=value, key!=v, 'key in a,b', key>=x, 'key exists'.")] = None,
        where_json: Annotated[Optional[str], Query(description='A JSON filter: {"year": {"$gte": 2020}}, $and/$or/$not.')] = None,
    ):
        from genloom.retrieval.filters import combine, parse_where, parse_where_json
        from genloom.retrieval.search import search as run_search

        request_limits.check_query(q)
        filters = combine(parse_where(where), parse_where_json(where_json))
        with session.begin():
            hits = run_search(session, q, collection=collection, k=k, mode=mode, where=filters,
                              by_document=by_document)
        return {"query": q, "collection": collection, "hits": [h.to_dict() for h in hits]}

    @app.post("/v1/chat/completions")
    def chat_completions(body: ChatCompletionBody, session: DB):
        from genloom.generation.call import ask as ask_call

        request = _chat_request(body)
        created = int(time.time())
        if body.stream:
            return _stream(request, created)
        with session.begin():
            result = ask_call(session, request)
        if result.status == "error":
            return _error(500, f"generation failed: {result.error}", "generation_error", generation_id=result.generation_id)
        return _completion_json(result, created)

    from genloom.api import limits

    limits.install(app)  # bounded generation queue: 429/503 with Retry-After past it
    return app


def _stream(request, created: int):
    """Server-sent events in OpenAI's chunk format. A worker thread owns the call's session:
    validation errors surface before the stream starts (as 4xx JSON); the last chunk carries
    usage, citations and the generation id, and is sent after the commit."""
    from genloom.db.engine import session_scope
    from genloom.generation.call import execute, prepare

    events: queue.Queue = queue.Queue()

    def work() -> None:
        try:
            with session_scope(api_engine()) as s:
                prepared = prepare(s, request)
                events.put(("ready", prepared))
                result = execute(s, prepared, on_text=lambda text: events.put(("text", text)))
            events.put(("done", result))
        except BaseException as exc:  # before "ready": becomes the HTTP error; after: an error event
            events.put(("error", exc))

    # The caller's context (tenant, audit actor) goes with the work.
    threading.Thread(target=contextvars.copy_context().run, args=(work,), name="genloom-chat-stream", daemon=True).start()
    kind, value = events.get()
    if kind == "error":
        raise value  # GenloomError → its JSON status via the app's handler
    prepared = value
    chunk_id = f"chatcmpl-{prepared.generation_id}"
    base = {"id": chunk_id, "object": "chat.completion.chunk", "created": created,
            "model": prepared.backend.name, "generation_id": prepared.generation_id}

    def stream() -> Iterator[str]:
        yield _sse({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]})
        while True:
            kind, value = events.get()
            if kind == "text":
                yield _sse({**base, "choices": [{"index": 0, "delta": {"content": value}, "finish_reason": None}]})
            elif kind == "done":
                result = value
                if result.status == "error":
                    yield _sse({"error": {"message": f"generation failed: {result.error}", "type": "generation_error",
                                          "code": 500, "generation_id": result.generation_id}})
                else:
                    finish = result.finish_reason if result.finish_reason in ("stop", "length") else "stop"
                    yield _sse({
                        **base,
                        "choices": [{"index": 0, "delta": {}, "finish_reason": finish}],
                        "usage": {
                            "prompt_tokens": result.tokens["input"],
                            "completion_tokens": result.tokens["output"],
                            "total_tokens": result.tokens["input"] + result.tokens["output"],
                        },
                        "session_id": result.session_id,
                        "citations": result.citations,
                    })
                yield "data: [DONE]\n\n"
                return
            else:  # the transaction rolled back: nothing of this call was kept
                yield _sse({"error": {"message": _one_line(value), "type": type(value).__name__, "code": 500}})
                yield "data: [DONE]\n\n"
                return

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
