"""Reusing a running `genloom serve` from the CLI: its discovery file and the client.

Loading the sentence model (and a generation model) costs seconds per process; a
server already holds them. `genloom serve` writes `$GENLOOM_HOME/serve.json` (mode 0600:
its URL, pid, a random token, which store it serves and for which tenant) and removes it on exit.
`genloom search` and `genloom ask` look for that file; when the server is alive and
serves the same store (the same DATABASE_URL, or the same GENLOOM_HOME for the embedded
server), `search` asks it for the query's embedding and runs the SQL itself, and `ask`
sends the whole call when the server works for this CLI user's tenant (a call of another
tenant runs here: the tenant reaches Postgres one way, the server's own connection setup, and
never travels in a request body); otherwise they load the model once in their own process. Set
GENLOOM_REUSE_SERVER=0 to never reuse one.

The routes this client calls (api/local_routes.py) accept only the token from the file,
which only the user who started the server can read. The client authenticates the server
too, before it sends the token or a question: the file must be this user's and private,
its pid a process of this user started when the file says (a pid recycled by another
user's process after a `kill -9` is not the server), and whatever listens on the URL must
answer a random challenge with an HMAC under the token (`proof`), which only the process
that wrote the file knows. This module imports no web framework, so the CLI stays fast.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path
from typing import Any

from genloom.config import genloom_home, store_key
from genloom.errors import BadInput, ConfigError, GenloomError, NotFound

DISCOVERY_FILE = "serve.json"
_ERRORS = {404: NotFound, 422: BadInput, 503: ConfigError}  # api/app.py's statuses, read back
CONNECT_TIMEOUT_S = 0.5  # a stale file must not make the CLI slower than loading the model


def discovery_path() -> Path:
    return genloom_home() / DISCOVERY_FILE


def advertise(host: str, port: int) -> tuple[str, Path]:
    """Write the discovery file for a server about to listen on host:port; returns (token, path)."""
    from genloom.db.tenancy import current_tenant

    token = secrets.token_urlsafe(32)
    path = discovery_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    connect_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    body = {
        "url": f"http://{connect_host}:{port}",
        "pid": os.getpid(),
        "started": _started(os.getpid()),  # with the pid: a recycled pid is another process
        "store": store_key(),
        "tenant": current_tenant(),  # whom the server's local routes work for
        "token": token,
    }
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


def proof(token: str, challenge: str) -> str:
    """What the server answers to `challenge`: an HMAC under its token (the token is never sent)."""
    return hmac.new(token.encode(), b"genloom-serve-proof\0" + challenge.encode(), hashlib.sha256).hexdigest()


def _started(pid: int) -> float | None:
    """When process `pid` started (seconds since the epoch), or None if there is none."""
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def _is_our_server_process(pid: object, started: object) -> bool:
    """A live process of this OS user that started when the discovery file says."""
    import psutil

    if not isinstance(pid, int) or not isinstance(started, (int, float)):
        return False
    try:
        process = psutil.Process(pid)
        uid, created = process.uids().real, process.create_time()
    except psutil.Error:  # gone, or another user's process we may not inspect
        return False
    return uid == os.getuid() and abs(created - started) < 0.01


def _private_file_of_ours(path: Path) -> bool:
    """The discovery file is this user's and nobody else may read or replace it."""
    try:
        st = path.stat()
    except OSError:
        return False
    return st.st_uid == os.getuid() and st.st_mode & 0o077 == 0


class ServerGone(Exception):
    """The advertised server did not answer: the caller falls back to working locally."""


class LocalServer:
    """A running `genloom serve` on this machine and store; methods raise ServerGone if it stops answering."""

    def __init__(self, url: str, token: str, tenant: str | None = None):
        self.url, self.token = url.rstrip("/"), token
        self.tenant = tenant  # the tenant its local routes work for (None: an older server, unknown)

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

    def authenticate(self) -> None:
        """Make whatever listens on the URL prove it knows the token, before anything secret is sent."""
        import httpx

        challenge = secrets.token_hex(16)
        try:
            response = httpx.post(
                self.url + "/v1/local/hello",
                json={"challenge": challenge},
                timeout=httpx.Timeout(5, connect=CONNECT_TIMEOUT_S),
            )
            answer = response.json().get("proof") if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError, AttributeError):
            raise ServerGone(f"{self.url} did not answer the challenge") from None
        if not isinstance(answer, str) or not hmac.compare_digest(answer, proof(self.token, challenge)):
            raise ServerGone(f"{self.url} is not the server that wrote {DISCOVERY_FILE}")

    def embed(self, texts: list[str], name: str | None = None):
        """Embeddings of `texts` by the server's copy of the sentence model (as genloom.embeddings.embed)."""
        import numpy as np

        out = self._post("/v1/local/embed", {"texts": texts, "model": name}, timeout=60)
        return np.asarray(out["vectors"], dtype=np.float32)

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        """One logged call run by the server (the fields of generation.call.CallRequest)."""
        return self._post("/v1/local/ask", request, timeout=3600)


def find_server() -> LocalServer | None:
    """The running server for this store, authenticated, or None (no file, a file or pid not this
    user's, a pid started at another time, another store, a listener that cannot prove it knows the
    token, reuse disabled): the caller then works locally."""
    if os.environ.get("GENLOOM_REUSE_SERVER", "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    path = discovery_path()
    if not _private_file_of_ours(path):
        return None
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or info.get("store") != store_key():
        return None
    if not _is_our_server_process(info.get("pid"), info.get("started")):
        return None
    if not isinstance(info.get("url"), str) or not isinstance(info.get("token"), str):
        return None
    tenant = info.get("tenant")
    server = LocalServer(info["url"], info["token"], tenant if isinstance(tenant, str) else None)
    try:
        server.authenticate()
    except ServerGone:
        return None
    return server
