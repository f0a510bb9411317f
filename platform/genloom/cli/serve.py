"""`genloom serve`: the HTTP API (FastAPI + uvicorn), OpenAI-compatible chat included.

Keys are required on every route but /healthz (create them with `genloom keys create`);
`--no-auth` is accepted only on a loopback address. The limits and the model folders are
passed to the app through the environment (genloom.api.concurrency), which uvicorn's workers read.
"""

from __future__ import annotations

import ipaddress
import signal
from pathlib import Path
from typing import Annotated

import typer

from genloom.api.concurrency import Limits
from genloom.cli.output import info

LOOPBACK_NAMES = {"localhost"}


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve(
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 8000,
    model: Annotated[
        str | None,
        typer.Option(
            "--model", "-m", help="Default model for requests that name none (sets GENLOOM_MODEL); loaded at start."
        ),
    ] = None,
    model_dir: Annotated[
        list[Path] | None,
        typer.Option(
            "--model-dir",
            help="A folder whose model directories requests may name (repeatable); "
            "otherwise only registered model names.",
        ),
    ] = None,
    no_auth: Annotated[
        bool, typer.Option("--no-auth", help="Serve without API keys (loopback addresses only).")
    ] = False,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allowed-host", help="A Host header to accept besides localhost/127.0.0.1/::1 (repeatable; '*' for any)."
        ),
    ] = None,
    max_body_bytes: Annotated[
        int | None, typer.Option("--max-body-bytes", help="Largest request body (default 4 MiB).")
    ] = None,
    max_question_chars: Annotated[
        int | None, typer.Option("--max-question-chars", help="Longest question or message (default 16000).")
    ] = None,
    pii: Annotated[
        str | None,
        typer.Option(
            "--pii", help="off|mask|hash|encrypt PII in the prompt/answer log (a collection's own default wins)."
        ),
    ] = None,
    collection: Annotated[
        str | None,
        typer.Option(
            "--collection",
            "-c",
            help="Default collection: OpenAI requests that name none retrieve from it "
            '(send "collection": null or the header X-Genloom-Retrieval: off to skip retrieval).',
        ),
    ] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn log level.")] = "info",
    workers: Annotated[
        int,
        typer.Option("--workers", help="Processes sharing the store (each with its own model copy, pool and limits)."),
    ] = 1,
    max_concurrent: Annotated[
        int, typer.Option("--max-concurrent", help="Generations running at once, per worker.")
    ] = Limits.max_concurrent,
    max_queue: Annotated[
        int, typer.Option("--max-queue", help="Generations waiting for a slot, per worker; beyond: 429 + Retry-After.")
    ] = Limits.max_queue,
    queue_timeout: Annotated[
        float,
        typer.Option("--queue-timeout", help="Seconds a generation may wait for a slot; beyond: 503 + Retry-After."),
    ] = Limits.queue_timeout,
) -> None:
    """Serve /v1/ask, the OpenAI-compatible /v1/chat/completions, /v1/completions, /v1/embeddings and /v1/models,
    /v1/feedback, /v1/search, /v1/generations/ID."""
    import os

    import uvicorn

    from genloom.api.auth import LOOPBACK_HOSTS, settings_from_env
    from genloom.api.concurrency import check_connections
    from genloom.api.local import advertise, withdraw
    from genloom.db.engine import get_engine, session_scope
    from genloom.db.queries import connection_usage
    from genloom.errors import BadInput
    from genloom.server import create_app

    if not 0 < port < 65536:
        raise BadInput(f"--port must be between 1 and 65535 (got {port})")
    if workers < 1:
        raise BadInput(f"--workers must be at least 1 (got {workers})")
    if no_auth and not is_loopback(host):
        raise BadInput(
            f"refusing to serve {host} without API keys: --no-auth is for loopback addresses only "
            "(create a key with: genloom keys create --role writer)"
        )
    hosts = [h.strip().lower() for h in (allowed_host or []) if h.strip()]
    if not is_loopback(host) and not hosts:
        raise BadInput(
            f"serving on {host} needs --allowed-host NAME: the host names clients reach it by "
            "(a Host allow-list stops DNS rebinding; '*' accepts any)"
        )
    for name, value in (("--max-body-bytes", max_body_bytes), ("--max-question-chars", max_question_chars)):
        if value is not None and value < 1:
            raise BadInput(f"{name} must be at least 1 (got {value})")
    dirs = []
    for folder in model_dir or []:
        if not folder.expanduser().is_dir():
            raise BadInput(f"--model-dir {str(folder)!r} is not a folder")
        dirs.append(str(folder.expanduser().resolve()))
    limits = Limits(max_concurrent=max_concurrent, max_queue=max_queue, queue_timeout=queue_timeout).validate()
    # The app (in every worker process) reads its settings from the environment.
    os.environ.update(limits.to_env())
    os.environ["GENLOOM_API_AUTH"] = "off" if no_auth else "on"
    bind = host.strip("[]").lower()
    os.environ["GENLOOM_ALLOWED_HOSTS"] = ",".join(
        dict.fromkeys([*LOOPBACK_HOSTS, *([bind] if bind not in ("0.0.0.0", "::") else []), *hosts])
    )
    if max_body_bytes:
        os.environ["GENLOOM_MAX_BODY_BYTES"] = str(max_body_bytes)
    if max_question_chars:
        os.environ["GENLOOM_MAX_QUESTION_CHARS"] = str(max_question_chars)
    if dirs:
        os.environ["GENLOOM_MODEL_DIRS"] = os.pathsep.join(dirs)
    if pii is not None:
        from genloom.pii import PII_ENV, check_mode

        os.environ[PII_ENV] = check_mode(pii)
    get_engine()  # connect and migrate now: a bad DATABASE_URL fails here, not on the first request
    from genloom.db.partitions import maintain_daily

    maintain_daily(get_engine())  # the months ahead of the log keep existing while the server runs
    with session_scope() as session:
        max_connections, in_use = connection_usage(session)
    check_connections(limits, workers, max_connections, in_use)
    if collection:
        from genloom.retrieval.collections import get_collection

        with session_scope() as session:
            get_collection(session, collection)  # an unknown name fails now, with the names that exist
        os.environ["GENLOOM_DEFAULT_COLLECTION"] = collection  # read by create_app in every worker
    if model:
        from genloom.generation.resolve import load_backend

        os.environ["GENLOOM_MODEL"] = model
        with session_scope() as session:
            load_backend(session, model)  # warm: the first request does not pay for loading
    if not no_auth:
        from genloom.keys import list_keys

        with session_scope() as session:
            if not list_keys(session):
                info(
                    "no API key exists yet: every request but /healthz will get 401 until you run "
                    "`genloom keys create --role writer`"
                )
    info(
        f"genloom API on http://{host}:{port}  (web UI: http://{host}:{port}/ui; OpenAPI: /docs; "
        f"OpenAI base_url: http://{host}:{port}/v1; MCP: http://{host}:{port}/mcp)"
        + ("  [no auth: loopback only]" if no_auth else "  [API keys required]")
    )
    # `genloom search|ask` on this store reuse this process's loaded models (api/local.py);
    # with several workers no single process holds them, so nothing is advertised.
    token, advertised = advertise(host, port) if workers == 1 else (None, None)
    # uvicorn shuts down on SIGTERM, then raises the signal again under the previous handler:
    # make that an exit, so the `finally` below removes the discovery file.
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        if workers == 1:
            uvicorn.run(create_app(settings_from_env(), local_token=token), host=host, port=port, log_level=log_level)
        else:  # uvicorn starts each worker from the import string (no local-reuse token then)
            uvicorn.run(
                "genloom.server:create_app", factory=True, host=host, port=port, log_level=log_level, workers=workers
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
