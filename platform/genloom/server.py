"""The app `genloom serve` runs: the HTTP API (genloom.api), the web UI at /ui (genloom.ui) and,
when the MCP SDK is installed, MCP over streamable HTTP at /mcp (genloom.mcp_server).

One process, one set of keys and tenants: the API checks bearer keys, the UI a session cookie
signed under the same key rows, MCP the same bearer keys per tool call.
"""

from __future__ import annotations

from fastapi import FastAPI

from genloom.api import auth
from genloom.api.app import create_app as create_api


def create_app(security: auth.SecuritySettings | None = None, local_token: str | None = None) -> FastAPI:
    from genloom.mcp_server.http import mount as mount_mcp
    from genloom.ui import error_pages
    from genloom.ui.routes import router as ui_router

    app = create_api(security, local_token=local_token)
    app.include_router(ui_router)
    error_pages.install(app)  # a browser on /ui gets refusals as a page, the API keeps its JSON
    mount_mcp(app)
    return app
