"""`genloom serve`: the HTTP API (FastAPI + uvicorn), OpenAI-compatible chat included."""

from __future__ import annotations

import signal
from typing import Annotated, Optional

import typer

from genloom.api.limits import Limits
from genloom.cli.output import info


def serve(
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 8000,
    model: Annotated[
        Optional[str],
        typer.Option("--model", "-m", help="Default model for requests that name none (sets GENLOOM_MODEL); loaded at start."),
    ] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn log level.")] = "info",
    workers: Annotated[
        int, typer.Option("--workers", help="Processes sharing the store (each with its own model copy, pool and limits).")
    ] = 1,
    max_concurrent: Annotated[
        int, typer.Option("--max-concurrent", help="Generations running at once, per worker.")
    ] = Limits.max_concurrent,
    max_queue: Annotated[
        int, typer.Option("--max-queue", help="Generations waiting for a slot, per worker; beyond: 429 + Retry-After.")
    ] = Limits.max_queue,
    queue_timeout: Annotated[
        float, typer.Option("--queue-timeout", help="Seconds a generation may wait for a slot; beyond: 503 + Retry-After.")
    ] = Limits.queue_timeout,
) -> None:
    """Serve /v1/ask, /v1/chat/completions (OpenAI-compatible), /v1/feedback, /v1/search, /v1/generations/ID."""
    import os

    import sqlalchemy as sa
    import uvicorn

    from genloom.api.app import create_app
    from genloom.api.limits import check_connections
    from genloom.api.local import advertise, withdraw
    from genloom.db.engine import get_engine, session_scope
    from genloom.errors import BadInput

    if not 0 < port < 65536:
        raise BadInput(f"--port must be between 1 and 65535 (got {port})")
    if workers < 1:
        raise BadInput(f"--workers must be at least 1 (got {workers})")
    limits = Limits(max_concurrent=max_concurrent, max_queue=max_queue, queue_timeout=queue_timeout).validate()
    os.environ.update(limits.to_env())  # the app (in every worker process) reads its limits from here
    get_engine()  # connect and migrate now: a bad DATABASE_URL fails here, not on the first request
    with session_scope() as session:
        max_connections = int(session.execute(sa.text("SHOW max_connections")).scalar())
        in_use = int(session.execute(sa.text("SELECT count(*) FROM pg_stat_activity")).scalar())
    check_connections(limits, workers, max_connections, in_use)
    if model:
        from genloom.generation.resolve import load_backend

        os.environ["GENLOOM_MODEL"] = model
        with session_scope() as session:
            load_backend(session, model)  # warm: the first request does not pay for loading
    info(f"genloom API on http://{host}:{port}  (OpenAPI: /docs, /openapi.json; OpenAI base_url: http://{host}:{port}/v1)")
    # `genloom search|ask` on this store reuse this process's loaded models (api/local.py);
    # with several workers no single process holds them, so nothing is advertised.
    token, advertised = advertise(host, port) if workers == 1 else (None, None)
    # uvicorn shuts down on SIGTERM, then raises the signal again under the previous handler:
    # make that an exit, so the `finally` below removes the discovery file.
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        if workers == 1:
            uvicorn.run(create_app(local_token=token), host=host, port=port, log_level=log_level)
        else:  # uvicorn starts each worker from the import string (no local-reuse token then)
            uvicorn.run(
                "genloom.api.app:create_app", factory=True, host=host, port=port, log_level=log_level, workers=workers
            )
    except OSError as exc:
        raise BadInput(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    finally:
        if advertised is not None:
            withdraw(advertised)
        signal.signal(signal.SIGTERM, previous)


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signal.SIGTERM)


def register(app: typer.Typer) -> None:
    app.command()(serve)
