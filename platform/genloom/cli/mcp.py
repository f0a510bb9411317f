"""`genloom mcp`: genloom's tools for assistants and IDEs over the Model Context Protocol (stdio)."""

from __future__ import annotations

import typer


def mcp() -> None:
    """Serve the MCP tools (search, ask, list_collections, get_generation, feedback, sql) on stdio.

    Acts with the API key in $GENLOOM_API_KEY (its tenant and role, exactly as over HTTP). Over HTTP
    the same tools are at /mcp in `genloom serve`, behind each request's bearer key.
    """
    import os

    from genloom.db.engine import session_scope
    from genloom.errors import BadInput
    from genloom.keys import authenticate
    from genloom.mcp_server.tools import KEY_ENV, build_server

    key = os.environ.get(KEY_ENV)
    if not key:
        raise BadInput(f"set ${KEY_ENV} to an API key (create one with: genloom keys create --role reader)")
    with session_scope(purpose="api") as s:
        authenticate(s, key)  # a wrong key fails here, with one line, before the client waits on stdio
    build_server(stdio_key=key).run("stdio")


def register(app: typer.Typer) -> None:
    app.command("mcp")(mcp)
