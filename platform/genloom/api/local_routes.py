"""The routes `genloom search|ask` call on a running `genloom serve` (see api/local.py).

Only for the CLI of the user who started the server: every route needs the token from
`$GENLOOM_HOME/serve.json` (mode 0600), compared in constant time, except `hello`, where the
server proves to the CLI that it knows the token (an HMAC of the CLI's challenge) before the
CLI sends it. They are not part of the public API (not in the OpenAPI schema).
"""

from __future__ import annotations

import dataclasses
import hmac
from typing import Annotated, Any, Optional

from fastapi import APIRouter, Depends, Header, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from genloom.api.schemas import Body, RowId
from genloom.generation.backend import DEFAULT_K, DEFAULT_MAX_NEW_TOKENS, MAX_K, MAX_NEW_TOKENS, MAX_TEMPERATURE

MAX_TEXTS = 1024  # size limits, checked by validation before any work
MAX_TEXT_CHARS = 100_000


class EmbedBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    texts: list[Annotated[str, Field(max_length=MAX_TEXT_CHARS)]] = Field(min_length=1, max_length=MAX_TEXTS)
    model: Optional[str] = None


class LocalAskBody(Body):
    """generation.call.CallRequest as JSON (the CLI's `ask` and `generate`)."""

    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)
    collection: Optional[str] = None
    model: Optional[str] = None
    session_id: Optional[RowId] = None
    k: int = Field(DEFAULT_K, ge=1, le=MAX_K)
    where: Optional[dict[str, Any]] = None  # a filter document (genloom.retrieval.filters)
    embedding_model: Optional[str] = None
    rerank: Optional[str] = None
    rerank_depth: Optional[int] = Field(None, ge=1, le=1000)
    no_rerank: bool = False
    # The endpoint's API key from the CLI user's environment (never the server's, for a CLI call).
    endpoint_api_key: Optional[str] = Field(None, min_length=1, max_length=4096)
    template: Optional[str] = None
    user: Optional[str] = None
    system: Optional[str] = Field(None, max_length=MAX_TEXT_CHARS)
    max_new_tokens: int = Field(DEFAULT_MAX_NEW_TOKENS, ge=1, le=MAX_NEW_TOKENS)
    temperature: float = Field(0.0, ge=0.0, le=MAX_TEMPERATURE)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: Optional[int] = None
    stop: list[str] = Field(default_factory=list, max_length=16)


class HelloBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    challenge: str = Field(min_length=32, max_length=128)


def hello_router(token: str) -> APIRouter:
    """The one route without the token: the server proves it knows the token (it never sends it)."""
    from genloom.api.local import proof

    router = APIRouter(prefix="/v1/local", include_in_schema=False)

    @router.post("/hello")
    def hello(body: HelloBody) -> dict:
        return {"proof": proof(token, body.challenge)}

    return router


def local_router(token: str, db_dependency) -> APIRouter:
    """The routes, guarded by `token`; `db_dependency` is the app's per-request session."""

    def authorised(authorization: Annotated[Optional[str], Header()] = None) -> None:
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPException(status_code=401, detail="this route is for the local genloom CLI only")

    router = APIRouter(prefix="/v1/local", include_in_schema=False, dependencies=[Depends(authorised)])

    @router.post("/embed")
    def embed(body: EmbedBody) -> dict:
        from genloom.embeddings import embed as run_embed, embed_query

        if len(body.texts) == 1:  # a CLI search's query: the server's LRU cache answers repeats
            return {"vectors": [embed_query(body.texts[0], name=body.model).tolist()]}
        return {"vectors": run_embed(body.texts, name=body.model).tolist()}

    @router.post("/ask")
    def ask(body: LocalAskBody, session=Depends(db_dependency)) -> dict:
        from genloom.generation.backend import GenParams
        from genloom.generation.call import CallRequest, ask as ask_call
        from genloom.generation.endpoint import caller_api_key

        request = CallRequest(
            question=body.question,
            collection=body.collection,
            model=body.model,
            session_id=body.session_id,
            k=body.k,
            where=body.where,
            template=body.template,
            user=body.user,
            system=body.system,
            embedding_model=body.embedding_model,
            rerank=body.rerank,
            rerank_depth=body.rerank_depth,
            no_rerank=body.no_rerank,
            params=GenParams(
                max_new_tokens=body.max_new_tokens,
                temperature=body.temperature,
                top_p=body.top_p,
                seed=body.seed,
                stop=body.stop,
            ),
        )
        with session.begin(), caller_api_key(body.endpoint_api_key):
            result = ask_call(session, request)
        # status 'error' is committed in the log; the CLI turns it into its one-line error.
        return {
            **result.as_json(),
            "status": result.status,
            "error": result.error,
            "sources": [dataclasses.asdict(s) for s in result.sources],
        }

    return router
