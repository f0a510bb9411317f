"""MCP over streamable HTTP at /mcp in `genloom serve`, behind the API's own key check.

The route is wrapped by genloom.api.auth's guard (ROUTE_ROLES: a reader may connect, 401 without
a key); each tool then checks the role it needs against the same key (tools.py). The SDK's session
manager runs inside the app's lifespan. Stateless and JSON responses: any worker can answer any call.
"""

from __future__ import annotations

import contextlib

from fastapi import FastAPI
from starlette.routing import Route

PATH = "/mcp"


class _AsgiEndpoint:
    """An ASGI callable Starlette's Route passes the raw scope to (a plain function would get a Request)."""

    def __init__(self, inner):
        self.inner = inner
        self.genloom_guarded = True  # what genloom.api.auth.route_is_guarded looks for

    async def __call__(self, scope, receive, send):
        await self.inner(scope, receive, send)


def mount(app: FastAPI) -> None:
    from mcp.server.transport_security import TransportSecuritySettings

    from genloom.api.auth import _guarded
    from genloom.mcp_server.tools import build_server

    server = build_server()
    # The API's Guard already enforces the Host allow-list (DNS rebinding) before this runs.
    server.streamable_http_app(
        stateless_http=True,
        json_response=True,
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )
    manager = server.session_manager

    async def handle(scope, receive, send):
        await manager.handle_request(scope, receive, send)

    app.router.routes.append(
        Route(PATH, endpoint=_AsgiEndpoint(_guarded(handle, PATH)), methods=["GET", "POST", "DELETE"])
    )
    previous = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(application):
        async with manager.run():
            async with previous(application) as state:
                yield state

    app.router.lifespan_context = lifespan
