"""The HTTP API: genloom's calls over FastAPI, including an OpenAI-compatible chat endpoint.

Every request gets one database session (the `db` dependency) and decides its own
transaction, committed before the response leaves, so a client that receives a
generation id can send feedback on it at once. Endpoints are plain `def`s: FastAPI runs
them in its thread pool, so concurrent requests generate and log independently.
Errors are JSON in OpenAI's shape, `{"error": {"message", "type", "code"}}`: 422 for bad
input, 404 for unknown ids and names, 500 for a generation that failed (still logged).
"""

from __future__ import annotations

import os
from typing import Annotated, Any, Optional

from fastapi import FastAPI, Path, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from genloom import __version__
from genloom.api import auth, request_limits
from genloom.api.schemas import BIGINT_MAX, AskBody, FeedbackBody
from genloom.api.session import DB, db
from genloom.db.engine import configure_api_pool
from genloom.errors import BadInput, ConfigError, DatabaseError, GenloomError, NotFound

RowIdPath = Annotated[int, Path(ge=1, le=BIGINT_MAX)]  # a bigint id: larger is a 422, not an overflow

_STATUS = {NotFound: 404, BadInput: 422, ConfigError: 503, DatabaseError: 503}


def _error(status: int, message: str, kind: str, **extra: Any) -> JSONResponse:
    return JSONResponse(
        status_code=status,
        content={"error": {"message": message, "type": kind, "param": None, "code": status, **extra}},
    )


def _status_for(exc: GenloomError) -> int:
    for cls, status in _STATUS.items():
        if isinstance(exc, cls):
            return status
    return 400


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


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


def _api_pool() -> dict[str, int]:
    """The store's `api` pool, sized by the serve limits (read when the first request connects)."""
    from genloom.api import concurrency

    return {
        "pool_size": concurrency.pool_size(concurrency.Limits.from_env()),
        "max_overflow": concurrency.POOL_OVERFLOW,
    }


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
    configure_api_pool(_api_pool)

    @app.exception_handler(GenloomError)
    def _genloom_error(request: Request, exc: GenloomError) -> JSONResponse:
        return _error(_status_for(exc), _one_line(exc), type(exc).__name__)

    @app.exception_handler(HTTPException)
    def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        # FastAPI's own refusals (e.g. a body too deeply nested to parse) in genloom's one-line shape
        response = _error(exc.status_code, _one_line(Exception(exc.detail)), "invalid_request_error")
        response.headers.update(exc.headers or {})
        return response

    @app.exception_handler(RequestValidationError)
    def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
            parts.append(f"{where}: {err.get('msg', 'invalid')}")
        return _error(422, "invalid request: " + "; ".join(parts), "invalid_request_error")

    if local_token:
        from genloom.api.local_routes import hello_router, local_router

        app.include_router(hello_router(local_token))
        app.include_router(local_router(local_token, db))

    @app.get("/healthz")
    def healthz(session: DB) -> dict[str, Any]:
        from genloom.db.queries import ping

        ping(session)
        return {"status": "ok", "version": __version__}

    @app.post("/v1/ask")
    def ask(body: AskBody, session: DB):
        from genloom.generation.call import ask as ask_call

        request = _call_request(
            body, question=body.question, collection=body.collection, max_new_tokens=body.max_new_tokens
        )
        with session.begin():
            result = ask_call(session, request)
        if result.status == "error":  # committed: the failure is in the log
            return _error(
                500, f"generation failed: {result.error}", "generation_error", generation_id=result.generation_id
            )
        return result.as_json()

    @app.post("/v1/feedback")
    def feedback(body: FeedbackBody, session: DB):
        from genloom.generation.feedback import add_feedback, feedback_json

        with session.begin():
            row = add_feedback(
                session,
                body.generation_id,
                score=body.score,
                thumbs=body.thumbs,
                label=body.label,
                comment=body.comment,
                user=body.user,
            )
            out = feedback_json(row)
        return JSONResponse(status_code=201, content=jsonable_encoder(out))

    @app.get("/v1/generations/{generation_id}")
    def generation(generation_id: RowIdPath, session: DB):
        from genloom.generation.log import generation_detail

        with session.begin():
            return generation_detail(session, generation_id)

    @app.get("/v1/sessions/{session_id}")
    def chat_session(session_id: RowIdPath, session: DB):
        from genloom.generation.log import session_detail

        with session.begin():
            return session_detail(session, session_id)

    @app.get("/v1/search")
    def search(
        q: Annotated[str, Query(min_length=1, description="The query text.")],
        collection: Annotated[str, Query(min_length=1)],
        k: Annotated[int, Query(ge=1, le=100)] = 10,
        mode: Annotated[str, Query(pattern="^(hybrid|bm25|vector)$")] = "hybrid",
        by_document: bool = False,
        where: Annotated[
            Optional[list[str]],
            Query(description="Metadata filters: key=value, key!=v, 'key in a,b', key>=x, 'key exists'."),
        ] = None,
        where_json: Annotated[
            Optional[str], Query(description='A JSON filter: {"year": {"$gte": 2020}}, $and/$or/$not.')
        ] = None,
        rerank: Annotated[
            Optional[str], Query(min_length=1, description="A reranker NAME[@V] (default: the collection's).")
        ] = None,
        rerank_depth: Annotated[Optional[int], Query(ge=1, le=1000)] = None,
        no_rerank: Annotated[bool, Query(description="Skip the collection's default reranker.")] = False,
    ):
        from genloom.db.engine import run_read
        from genloom.retrieval.filters import combine, parse_where, parse_where_json
        from genloom.retrieval.rerank import search_reranked

        request_limits.check_query(q)
        request_limits.check_no_nul(q=q, collection=collection, where=where, where_json=where_json, rerank=rerank)
        request_limits.check_http_model(rerank)  # registered names and the server's model folders only
        if rerank and no_rerank:
            raise BadInput("give either rerank or no_rerank, not both")
        filters = combine(parse_where(where), parse_where_json(where_json))
        # A read: served by a fresh-enough replica (DATABASE_READ_URL), else by the primary; a
        # replica failing mid-search is retried on the primary (genloom.db.engine.run_read).
        hits, timing = run_read(
            lambda session: search_reranked(
                session,
                q,
                collection=collection,
                k=k,
                mode=mode,
                where=filters,
                by_document=by_document,
                rerank_model=rerank,
                rerank_depth=rerank_depth,
                use_default=not no_rerank,
            ),
            primary_purpose="api",
        )
        out: dict[str, Any] = {"query": q, "collection": collection, "hits": [h.to_dict() for h in hits]}
        if timing["rerank_ms"] is not None:  # reranked (given, or the collection's default): by what, and the time
            out.update(
                reranker=timing["reranker"],
                rerank_depth=timing["rerank_depth"],
                timings_ms={"search": round(timing["search_ms"], 2), "rerank": round(timing["rerank_ms"], 2)},
            )
        return out

    from genloom.api import openai_routes, retrieval_routes

    retrieval_routes.install(app)  # /v1/train/{kind}, /v1/collections/{name}/defaults

    openai_routes.install(app)  # /v1/models, /v1/chat/completions, /v1/completions, /v1/embeddings, /tokenize
    # `genloom serve --collection NAME` (set in every worker process through the environment)
    app.state.default_collection = os.environ.get("GENLOOM_DEFAULT_COLLECTION") or None

    from genloom.api import concurrency

    concurrency.install(app)  # bounded generation queue: 429/503 with Retry-After past it
    return app
