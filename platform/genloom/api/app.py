"""The HTTP API: genloom's calls over FastAPI, including an OpenAI-compatible chat endpoint.

Every request gets one database session (the `db` dependency) and decides its own
transaction, committed before the response leaves, so a client that receives a
generation id can send feedback on it at once. Endpoints are plain `def`s: FastAPI runs
them in its thread pool, so concurrent requests generate and log independently.
Errors are JSON in OpenAI's shape, `{"error": {"message", "type", "code"}}`: 422 for bad
input, 404 for unknown ids and names, 500 for a generation that failed (still logged).
"""

from __future__ import annotations

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
from genloom.api.schemas import AskBody, FeedbackBody
from genloom.errors import BadInput, ConfigError, DatabaseError, GenloomError, NotFound

_STATUS = {NotFound: 404, BadInput: 422, ConfigError: 503, DatabaseError: 503}


def _error(status: int, message: str, kind: str, **extra: Any) -> JSONResponse:
    return JSONResponse(status_code=status,
                        content={"error": {"message": message, "type": kind, "param": None, "code": status, **extra}})


def _status_for(exc: GenloomError) -> int:
    for cls, status in _STATUS.items():
        if isinstance(exc, cls):
            return status
    return 400


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


_engines: dict[str, Any] = {}
_engines_lock = threading.Lock()
POOL_SIZE = 48  # above FastAPI's 40 worker threads: a request never waits for a connection


def api_engine():
    """An engine for the configured database with a pool sized for concurrent requests.

    A logged call holds its connection from retrieval to commit (one transaction), so
    while a model generates for 32 requests, 32 connections are in use; the default
    pool (5 + 10 overflow) would make the rest wait and time out.
    """
    import sqlalchemy as sa

    from genloom.db.engine import get_engine

    base = get_engine()  # connects and migrates once, follows DATABASE_URL
    url = base.url.render_as_string(hide_password=False)
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            engine = sa.create_engine(
                base.url, pool_pre_ping=True, pool_size=POOL_SIZE, max_overflow=16, pool_timeout=600,
                connect_args={"connect_timeout": 10, "application_name": "genloom-api"},
            )
            _engines[url] = engine
        return engine


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


def create_app() -> FastAPI:
    app = FastAPI(
        title="genloom",
        version=__version__,
        description="Retrieval-grounded generation over one PostgreSQL + pgvector store; every call is logged.",
    )

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
        where: Annotated[Optional[list[str]], Query(description="key=value metadata filters.")] = None,
    ):
        from genloom.cli.ask import parse_where
        from genloom.retrieval.search import search as run_search

        with session.begin():
            hits = run_search(session, q, collection=collection, k=k, mode=mode, where=parse_where(where),
                              by_document=by_document)
        return {"query": q, "collection": collection, "hits": [h.to_dict() for h in hits]}

    from genloom.api import openai_routes

    openai_routes.install(app)  # /v1/models, /v1/chat/completions, /v1/completions, /v1/embeddings, /tokenize
    return app

