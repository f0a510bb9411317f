"""`genloom serve`: the HTTP API (FastAPI + uvicorn), OpenAI-compatible chat included."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from genloom.cli.output import info


def serve(
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 8000,
    model: Annotated[
        Optional[str],
        typer.Option("--model", "-m", help="Default model for requests that name none (sets GENLOOM_MODEL); loaded at start."),
    ] = None,
    collection: Annotated[
        Optional[str],
        typer.Option("--collection", "-c", help="Default collection: OpenAI requests that name none retrieve from it "
                     "(send \"collection\": null or the header X-Genloom-Retrieval: off to skip retrieval)."),
    ] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn log level.")] = "info",
) -> None:
    """Serve /v1/ask, the OpenAI-compatible /v1/chat/completions, /v1/completions, /v1/embeddings and /v1/models,
    /v1/feedback, /v1/search, /v1/generations/ID."""
    import os

    import uvicorn

    from genloom.api.app import create_app
    from genloom.db.engine import get_engine, session_scope
    from genloom.errors import BadInput

    if not 0 < port < 65536:
        raise BadInput(f"--port must be between 1 and 65535 (got {port})")
    get_engine()  # connect and migrate now: a bad DATABASE_URL fails here, not on the first request
    if collection:
        from genloom.retrieval.collections import get_collection

        with session_scope() as session:
            get_collection(session, collection)  # an unknown name fails now, with the names that exist
    if model:
        from genloom.generation.backend import load_backend

        os.environ["GENLOOM_MODEL"] = model
        with session_scope() as session:
            load_backend(session, model)  # warm: the first request does not pay for loading
    info(f"genloom API on http://{host}:{port}  (OpenAPI: /docs, /openapi.json; OpenAI base_url: http://{host}:{port}/v1)")
    app = create_app()
    app.state.default_collection = collection
    try:
        uvicorn.run(app, host=host, port=port, log_level=log_level)
    except OSError as exc:
        raise BadInput(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def register(app: typer.Typer) -> None:
    app.command()(serve)
