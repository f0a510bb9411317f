"""Reusing a running `genloom serve` from the CLI: its discovery file and the client.

Loading the sentence model (and a generation model) costs seconds per process; a
server already holds them. `genloom serve` writes `$GENLOOM_HOME/serve.json` (mode 0600:
its URL, pid, a random token, and which store it serves) and removes it on exit.
`genloom search` and `genloom ask` look for that file; when the server is alive and
serves the same store (the same DATABASE_URL, or the same GENLOOM_HOME for the embedded
server), `search` asks it for the query's embedding and runs the SQL itself, and `ask`
sends the whole call; otherwise they load the model once in their own process. Set
GENLOOM_REUSE_SERVER=0 to never reuse one.

The routes this client calls (api/local_routes.py) accept only the token from the file,
which only the user who started the server can read. This module imports no web
framework, so the CLI stays fast.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

from genloom.config import database_url, genloom_home
from genloom.errors import BadInput, ConfigError, GenloomError, NotFound

DISCOVERY_FILE = "serve.json"
_ERRORS = {404: NotFound, 422: BadInput, 503: ConfigError}  # api/app.py's statuses, read back
CONNECT_TIMEOUT_S = 0.5  # a stale file must not make the CLI slower than loading the model


def store_key() -> str:
    """Which store this process uses: a hash, so the file never holds a database password."""
    where = database_url() or f"embedded:{genloom_home()}"
    return hashlib.sha256(where.encode("utf-8")).hexdigest()[:32]


def discovery_path() -> Path:
    return genloom_home() / DISCOVERY_FILE


def advertise(host: str, port: int) -> tuple[str, Path]:
    """Write the discovery file for a server about to listen on host:port; returns (token, path)."""
    token = secrets.token_urlsafe(32)
    path = discovery_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    connect_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    body = {"url": f"http://{connect_host}:{port}", "pid": os.getpid(), "store": store_key(), "token": token}
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    # 0600 from the first byte: the token is a credential.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(body, f)
    os.replace(tmp, path)
    return token, path


def withdraw(path: Path) -> None:
    """Remove the discovery file if it is still this process's."""
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_text(encoding="utf-8")).get("pid") == os.getpid():
            path.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ServerGone(Exception):
    """The advertised server did not answer: the caller falls back to working locally."""


class LocalServer:
    """A running `genloom serve` on this machine and store; methods raise ServerGone if it stops answering."""

    def __init__(self, url: str, token: str):
        self.url, self.token = url.rstrip("/"), token

    def _post(self, path: str, body: dict[str, Any], *, timeout: float) -> dict[str, Any]:
        import httpx

        try:
            response = httpx.post(
                self.url + path,
                json=body,
                headers={"Authorization": f"Bearer {self.token}"},
                timeout=httpx.Timeout(timeout, connect=CONNECT_TIMEOUT_S),
            )
        except httpx.TransportError as exc:
            raise ServerGone(str(exc)) from None
        try:
            payload = response.json()
        except ValueError:
            payload = None
        error = payload.get("error") if isinstance(payload, dict) else None
        if response.status_code >= 400 and not isinstance(error, dict):
            # Not genloom's error shape: another program on the port, or a genloom without these routes.
            raise ServerGone(f"{self.url} answered {response.status_code}")
        if isinstance(error, dict):
            # The library's own error, raised again here: the same one line and exit code as locally.
            raise _ERRORS.get(response.status_code, GenloomError)(error.get("message") or "server error")
        return payload

    def embed(self, texts: list[str], name: str | None = None):
        """Embeddings of `texts` by the server's copy of the sentence model (as genloom.embeddings.embed)."""
        import numpy as np

        out = self._post("/v1/local/embed", {"texts": texts, "model": name}, timeout=60)
        return np.asarray(out["vectors"], dtype=np.float32)

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        """One logged call run by the server (the fields of generation.call.CallRequest)."""
        return self._post("/v1/local/ask", request, timeout=3600)


def find_server() -> LocalServer | None:
    """The running server for this store, or None (no file, a dead pid, another store, reuse disabled)."""
    if os.environ.get("GENLOOM_REUSE_SERVER", "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    try:
        info = json.loads(discovery_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or info.get("store") != store_key():
        return None
    if not isinstance(info.get("pid"), int) or not _alive(info["pid"]):
        return None
    if not info.get("url") or not info.get("token"):
        return None
    return LocalServer(info["url"], info["token"])
