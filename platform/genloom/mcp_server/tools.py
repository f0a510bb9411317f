"""The MCP tools: search, ask, list_collections, get_generation, feedback and read-only sql.

Each tool is the HTTP API's call with the same library function and the same JSON out, so an
assistant sees what `curl` sees. Who calls: over HTTP, the bearer key of the request the tool call
came in (checked per call, so a revoked key stops at once); on stdio, the key `genloom mcp` was
started with ($GENLOOM_API_KEY). The key's tenant and role hold exactly as over HTTP: ROLES says
what each tool needs, and a refused call is audited like a refused HTTP request.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Annotated, Any, Optional

import anyio
from fastapi.encoders import jsonable_encoder
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from genloom.errors import GenloomError
from genloom.keys import Principal

ROLES = {
    "search": "reader",
    "list_collections": "reader",
    "get_generation": "reader",
    "sql": "reader",
    "ask": "writer",
    "feedback": "writer",
}
KEY_ENV = "GENLOOM_API_KEY"  # the key `genloom mcp` (stdio) acts with


def _authenticate(key: str | None, tool: str) -> Principal:
    from genloom.db.engine import session_scope
    from genloom.keys import authenticate, role_refusal

    needed = ROLES[tool]
    with session_scope(purpose="api") as s:
        principal = authenticate(s, key)
        refused = role_refusal(
            s,
            principal,
            needed,
            what=f"MCP {tool}",
            refusal=f"this API key's role ({principal.role}) may not call the MCP tool {tool} (needs {needed})",
        )
    if refused is not None:  # after the commit: the refusal stays in the audit log
        raise refused
    return principal


def _bearer_of(ctx: Any) -> str | None:
    """The request's bearer key over HTTP; None on stdio (the process's key is used)."""
    try:
        request = ctx.request_context.request
    except (AttributeError, ValueError):
        return None
    headers = getattr(request, "headers", None)
    if headers is None:
        return None
    scheme, _, token = (headers.get("authorization") or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _run_as(principal: Principal, work: Callable[[], Any]) -> Any:
    from genloom import audit
    from genloom.db.tenancy import use_tenant

    with use_tenant(principal.tenant), audit.acting_as(audit.Actor(key_id=principal.key_id, role=principal.role)):
        return jsonable_encoder(work())


def build_server(stdio_key: str | None = None):
    """An MCPServer with genloom's tools. stdio_key: the key a stdio server acts with."""
    from mcp.server.mcpserver import MCPServer

    from genloom import __version__

    server = MCPServer(
        name="genloom",
        version=__version__,
        instructions="Search, ask (grounded, logged, with citations), read the generation log, give feedback, "
        "and run read-only SQL over one genloom store. Every ask is logged as a generation.",
    )

    async def call(ctx: Context, tool: str, work: Callable[[], Any]) -> Any:
        key = _bearer_of(ctx) or stdio_key

        def run() -> Any:
            try:
                principal = _authenticate(key, tool)
                return _run_as(principal, work)
            except GenloomError as exc:  # one line, as the CLI and the API print it (refusals included)
                raise ToolError(str(exc).splitlines()[0]) from None

        context = contextvars.copy_context()
        return await anyio.to_thread.run_sync(context.run, run)

    @server.tool(
        description="Hybrid (BM25 + vector), bm25 or vector search of a collection; the hits of GET /v1/search."
    )
    async def search(
        ctx: Context,
        query: Annotated[str, Field(min_length=1, description="The query text.")],
        collection: Annotated[str, Field(min_length=1, description="The collection to search.")],
        k: Annotated[int, Field(ge=1, le=100)] = 10,
        mode: Annotated[str, Field(pattern="^(hybrid|bm25|vector)$")] = "hybrid",
        where: Annotated[
            Optional[list[str]], Field(description="Metadata filters: key=value, key!=v, 'key in a,b', key>=x.")
        ] = None,
    ) -> dict[str, Any]:
        def work() -> dict[str, Any]:
            from genloom.api import request_limits
            from genloom.db.engine import session_scope
            from genloom.retrieval.filters import parse_where
            from genloom.retrieval.rerank import search_reranked

            request_limits.check_query(query)
            with session_scope(purpose="api") as s:  # the collection's default reranker applies, as in /v1/search
                hits, timing = search_reranked(
                    s, query, collection=collection, k=k, mode=mode, where=parse_where(where)
                )
                out = {"query": query, "collection": collection, "hits": [h.to_dict() for h in hits]}
                if timing["rerank_ms"] is not None:
                    out["reranker"] = timing["reranker"]
                return out

        return await call(ctx, "search", work)

    @server.tool(description="Answer a question grounded in a collection, with [n] citations; logged as a generation.")
    async def ask(
        ctx: Context,
        question: Annotated[str, Field(min_length=1)],
        collection: Annotated[str, Field(min_length=1)],
        model: Annotated[
            Optional[str], Field(description="A registered model NAME[@V], or the server's default.")
        ] = None,
        template: Annotated[Optional[str], Field(description="Prompt template NAME[@V|@label].")] = None,
        k: Annotated[int, Field(ge=1, le=100)] = 5,
        max_new_tokens: Annotated[int, Field(ge=1, le=4096)] = 256,
    ) -> dict[str, Any]:
        def work() -> dict[str, Any]:
            from genloom.api import request_limits
            from genloom.db.engine import session_scope
            from genloom.generation.backend import GenParams
            from genloom.generation.call import CallRequest, ask as ask_call

            request_limits.check_query(question)
            request_limits.check_http_model(model)  # registered names and the server's model folders only
            request = CallRequest(
                question=question,
                collection=collection,
                model=model or None,
                template=template or None,
                k=k,
                params=GenParams(max_new_tokens=max_new_tokens, temperature=0.0),
            )
            with session_scope(purpose="api") as s:
                result = ask_call(s, request)
            if result.status == "error":  # committed: the failure is in the log
                raise ToolError(f"generation failed: {result.error} (generation {result.generation_id})")
            return result.as_json()

        return await call(ctx, "ask", work)

    @server.tool(description="Every collection with its document and chunk counts and embedding model.")
    async def list_collections(ctx: Context) -> dict[str, Any]:
        def work() -> dict[str, Any]:
            from genloom.db.engine import session_scope
            from genloom.retrieval.collections import list_collections as collections

            with session_scope(purpose="api") as s:
                return {"collections": collections(s)}

        return await call(ctx, "list_collections", work)

    @server.tool(
        description="One logged generation: prompt, answer, parameters, timings, sources with ranks, feedback."
    )
    async def get_generation(ctx: Context, generation_id: Annotated[int, Field(ge=1)]) -> dict[str, Any]:
        def work() -> dict[str, Any]:
            from genloom.db.engine import session_scope
            from genloom.generation.log import generation_detail

            with session_scope(purpose="api") as s:
                return generation_detail(s, generation_id)

        return await call(ctx, "get_generation", work)

    @server.tool(description="Store feedback on a generation: a 1-5 score and/or thumbs (+1/-1), label, comment.")
    async def feedback(
        ctx: Context,
        generation_id: Annotated[int, Field(ge=1)],
        score: Annotated[Optional[int], Field(ge=1, le=5)] = None,
        thumbs: Annotated[Optional[int], Field(description="+1 (up) or -1 (down)")] = None,
        label: Optional[str] = None,
        comment: Annotated[Optional[str], Field(max_length=10_000)] = None,
        user: Optional[str] = None,
    ) -> dict[str, Any]:
        def work() -> dict[str, Any]:
            from genloom.db.engine import session_scope
            from genloom.generation.feedback import add_feedback, feedback_json

            with session_scope(purpose="api") as s:
                row = add_feedback(
                    s, generation_id, score=score, thumbs=thumbs, label=label, comment=comment, user=user
                )
                return feedback_json(row)

        return await call(ctx, "feedback", work)

    @server.tool(description="Run one read-only SQL statement as the reader role (row-level security applies).")
    async def sql(
        ctx: Context,
        query: Annotated[str, Field(min_length=1, description="One SELECT (or WITH ... SELECT) statement.")],
        limit: Annotated[int, Field(ge=1, le=10_000)] = 100,
    ) -> dict[str, Any]:
        def work() -> dict[str, Any]:
            from genloom.analytics.sql import run_sql

            result = run_sql(query, limit=limit)
            return {"columns": result.columns, "rows": result.as_dicts(), "truncated": result.truncated}

        return await call(ctx, "sql", work)

    return server
