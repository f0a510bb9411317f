"""Who may call what over HTTP: API keys, roles, tenants, and the guards that run before any work.

`install(app, settings)` is called by `create_app` before any route is defined, and adds:

1. `authorize`, a dependency on the app's router, so every APIRoute (including routes that
   other modules add later with `app.include_router` or `@app.get`) checks the caller's key
   (`Authorization: Bearer glk_…`, which is what the OpenAI client sends as its api_key)
   and role before its body is parsed into work. It also sets the transaction tenant
   (genloom.db.tenancy) and the audit actor from the key.
2. The same check wrapped around FastAPI's own routes (/docs, /openapi.json, /redoc).
3. `Guard`, an ASGI middleware: the Host allow-list (a browser page on another origin
   reaching 127.0.0.1 by DNS rebinding sends its own host name) and the body-size limit
   (413 before the body is parsed).

Roles nest (reader < writer < admin). ROUTE_ROLES says what each route needs; a route not
listed needs admin, so a new route is closed until someone decides who may call it.
Only /healthz is public.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from genloom.api import request_limits as limits
from genloom.errors import Forbidden, GenloomError, Unauthorized

PUBLIC = frozenset({"/healthz"})
ROUTE_ROLES: dict[tuple[str, str], str] = {
    ("GET", "/docs"): "reader",
    ("GET", "/docs/oauth2-redirect"): "reader",
    ("GET", "/redoc"): "reader",
    ("GET", "/openapi.json"): "reader",
    ("GET", "/v1/search"): "reader",
    ("GET", "/v1/generations/{generation_id}"): "reader",
    ("GET", "/v1/sessions/{session_id}"): "reader",
    ("GET", "/v1/models"): "reader",
    ("GET", "/v1/models/{model_id}"): "reader",
    ("POST", "/tokenize"): "reader",  # vLLM's token counter: reads nothing stored
    ("POST", "/v1/ask"): "writer",
    ("POST", "/v1/chat/completions"): "writer",
    ("POST", "/v1/completions"): "writer",
    ("POST", "/v1/embeddings"): "writer",
    ("POST", "/v1/feedback"): "writer",
    ("POST", "/v1/ingest"): "writer",
    # retrieval that learns (genloom.api.retrieval_routes): a new model changes nothing anyone gets until an
    # admin switches a collection's defaults to it
    ("POST", "/v1/train/{kind}"): "writer",
    ("POST", "/v1/collections/{name}/defaults"): "admin",
    # MCP over streamable HTTP (genloom.mcp_server): a reader may connect; each tool checks its own role.
    ("GET", "/mcp"): "reader",
    ("POST", "/mcp"): "reader",
    ("DELETE", "/mcp"): "reader",
}
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclasses.dataclass
class SecuritySettings:
    auth: bool = True
    allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS
    max_body_bytes: int = limits.DEFAULT_MAX_BODY_BYTES


# `genloom serve`'s routes for the CLI of the user who started it (api/local_routes.py): they
# check their own token, a random secret in the 0600 file $GENLOOM_HOME/serve.json, not a key.
LOCAL_PREFIX = "/v1/local/"
# The web UI (genloom.ui) checks its own session cookie, issued for and verified against the same
# keys (keys.issue_session / keys.authenticate_session), with its own role table (ui/routes.py).
UI_PREFIX = "/ui"


def required_role(method: str, path: str) -> str | None:
    """The role a route needs (None: no API key; public, or guarded by the serve token)."""
    if path in PUBLIC or path == UI_PREFIX or path.startswith((LOCAL_PREFIX, UI_PREFIX + "/")):
        return None
    path = re.sub(r"\{(\w+):[^}]+\}", r"{\1}", path)  # "/v1/models/{model_id:path}" → "{model_id}"
    return ROUTE_ROLES.get(("GET" if method == "HEAD" else method, path), "admin")


def _bearer(headers) -> str | None:
    value = headers.get("authorization") or ""
    scheme, _, token = value.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def _check(token: str | None, method: str, path: str, needed: str):
    """Authenticate and authorise in one short transaction; failures are audited."""
    from genloom import audit
    from genloom.db.engine import session_scope
    from genloom.keys import allows, authenticate

    failure: GenloomError | None = None
    principal = None
    with session_scope(purpose="api") as s:
        try:
            principal = authenticate(s, token)
            if not allows(principal.role, needed):
                failure = Forbidden(
                    f"this API key's role ({principal.role}) may not call {method} {path} (needs {needed})"
                )
        except Unauthorized as exc:
            failure = exc
        if failure is not None:
            actor = (
                audit.Actor(key_id=principal.key_id, role=principal.role)
                if principal
                else audit.Actor(None, "anonymous")
            )
            audit.record(
                s, "auth.failure", f"{method} {path}", outcome="refused", detail={"reason": str(failure)}, actor=actor
            )
    if failure is not None:
        raise failure
    return principal


async def authorize(request: Request) -> None:
    """The app-wide dependency (see the module docstring)."""
    route = request.scope.get("route")
    path = getattr(route, "path_format", None) or getattr(route, "path", None) or request.url.path
    await _authorize(request.app, request.method, path, request.headers)


async def _authorize(app, method: str, path: str, headers) -> None:
    from genloom import audit
    from genloom.db.tenancy import current_tenant, set_tenant

    needed = required_role(method, path)
    if needed is None:
        return
    settings: SecuritySettings = app.state.genloom_security
    if not settings.auth:  # --no-auth on a loopback address: the CLI user's own tenant
        set_tenant(current_tenant())
        audit.set_actor(audit.Actor(key_id=None, role="no-auth"))
        return
    # Database and scrypt work off the event loop.
    principal = await run_in_threadpool(_check, _bearer(headers), method, path, needed)
    set_tenant(principal.tenant)  # context variables set here reach the endpoint's thread
    audit.set_actor(audit.Actor(key_id=principal.key_id, role=principal.role))


def _error(status: int, message: str, kind: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        status_code=status, content={"error": {"message": message, "type": kind, "code": status}}, headers=headers
    )


def _auth_error(exc: GenloomError) -> JSONResponse:
    if isinstance(exc, Unauthorized):
        return _error(401, str(exc), "authentication_error", {"WWW-Authenticate": "Bearer"})
    return _error(403, str(exc), "permission_error")


def _guarded(inner, path: str):
    """FastAPI's docs routes are plain Starlette routes: the same check, as an ASGI wrapper."""

    async def app(scope, receive, send):
        if scope["type"] == "http":
            from starlette.datastructures import Headers

            try:
                await _authorize(scope["app"], scope["method"], path, Headers(scope=scope))
            except (Unauthorized, Forbidden) as exc:
                await _auth_error(exc)(scope, receive, send)
                return
        await inner(scope, receive, send)

    app.genloom_guarded = True  # type: ignore[attr-defined]  # marks an ASGI callable as wrapped
    return app


class Guard:
    """Host allow-list and body-size limit, before routing and before any body is parsed."""

    def __init__(self, app, settings: SecuritySettings):
        self.app = app
        self.settings = settings

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from starlette.datastructures import Headers

        headers = Headers(scope=scope)
        host = limits.host_name(headers.get("host", ""))
        if host not in self.settings.allowed_hosts and "*" not in self.settings.allowed_hosts:
            shown = json.dumps(headers.get("host", ""))[1:-1][:100]
            await _error(
                400,
                f"host {shown!r} is not allowed (start serve with --allowed-host to add it)",
                "invalid_request_error",
            )(scope, receive, send)
            return
        limit = self.settings.max_body_bytes
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await self._too_large(scope, receive, send, limit)
            return
        # Read (at most limit bytes of) the body now, then replay it: a chunked body cannot lie its way past.
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._too_large(scope, receive, send, limit)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    @staticmethod
    async def _too_large(scope, receive, send, limit: int) -> None:
        await _error(
            413,
            f"request body is larger than the server's limit of {limit} bytes (raise it with serve --max-body-bytes)",
            "invalid_request_error",
        )(scope, receive, send)


def install(app: FastAPI, settings: SecuritySettings) -> None:
    """Wire the guards into a new app (call before defining routes)."""
    from fastapi import Depends

    app.state.genloom_security = settings
    app.router.dependencies.append(Depends(authorize))
    for route in app.routes:
        if not isinstance(route, APIRoute) and getattr(route, "path", None) not in PUBLIC:
            route.app = _guarded(route.app, route.path)  # type: ignore[attr-defined]  # Mount/Route have both
    app.add_middleware(Guard, settings=settings)
    app.add_exception_handler(Unauthorized, lambda request, exc: _auth_error(exc))
    app.add_exception_handler(Forbidden, lambda request, exc: _auth_error(exc))


def route_is_guarded(app: FastAPI, route: Any) -> bool:
    """Whether a route runs the key check (tests enumerate app.routes with this).

    A router included into the app (FastAPI keeps it as one entry of app.routes) is guarded when
    the app's dependencies, `authorize` among them, were carried into its include context."""
    included = getattr(route, "include_context", None)
    if included is not None:
        return any(getattr(d, "dependency", None) is authorize for d in included.dependencies)
    if isinstance(route, APIRoute):
        return any(getattr(d, "dependency", None) is authorize for d in route.dependencies) or any(
            getattr(d.call, "__name__", "") == "authorize" for d in route.dependant.dependencies
        )
    return bool(getattr(route.app, "genloom_guarded", False))


def settings_from_env() -> SecuritySettings:
    """What `genloom serve` decided, passed to the app through the environment (uvicorn may import the app)."""
    auth = os.environ.get("GENLOOM_API_AUTH", "on") != "off"
    hosts = tuple(h.strip().lower() for h in os.environ.get("GENLOOM_ALLOWED_HOSTS", "").split(",") if h.strip())
    return SecuritySettings(auth=auth, allowed_hosts=hosts or LOOPBACK_HOSTS, max_body_bytes=limits.max_body_bytes())
