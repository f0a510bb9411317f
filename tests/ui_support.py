"""A real `genloom serve` app (API + /ui + /mcp) in a uvicorn thread on its own database, with keys
for two tenants; shared by test_ui.py, test_mcp.py and test_ui_browser.py."""

from __future__ import annotations

import dataclasses
import re
import socket
import threading
import time

import httpx
import pytest
from conftest import own_database
from generation_support import ingest_corpus

UI_CORPUS = [
    ("install", "Installing genloom", "Install genloom with pip. The embedded server starts by itself on first use."),
    ("search", "Hybrid search", "Hybrid search fuses BM25 and vector similarity with reciprocal rank fusion."),
    ("feedback", "Feedback", "Feedback joins scores and thumbs to each logged generation for analytics."),
]


@dataclasses.dataclass
class Served:
    url: str
    app: object
    keys: dict[str, str]  # "reader" / "writer" / "admin" of tenant default; "other" = a writer of tenant "globex"
    db_url: str = ""


def serve(keys_of) -> tuple[Served, object]:
    """Start the app; keys_of() makes the keys once the database exists. Returns (served, server)."""
    import uvicorn

    from genloom.api.auth import SecuritySettings
    from genloom.db.tenancy import use_tenant
    from genloom.server import create_app

    ingest_corpus("kb", docs=UI_CORPUS)
    with use_tenant("globex"):
        ingest_corpus("kb", docs=[("secret", "Globex plans", "The globex tenant's secret plan mentions zebras.")])
    app = create_app(SecuritySettings(auth=True))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started
    return Served(f"http://127.0.0.1:{port}", app, keys_of()), server


def make_keys() -> dict[str, str]:
    from genloom.db.engine import session_scope
    from genloom.keys import create_key

    with session_scope() as s:
        keys = {role: create_key(s, role=role).key for role in ("reader", "writer", "admin")}
        keys["other"] = create_key(s, role="writer", tenant="globex").key
    return keys


def login(base_url: str, key: str) -> httpx.Client:
    """An httpx client holding a UI session (as a browser would after the login form)."""
    client = httpx.Client(base_url=base_url, timeout=120)
    form = client.get("/ui/login")
    token = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
    r = client.post("/ui/login", data={"key": key, "csrf": token})
    assert r.status_code == 303, r.text
    return client


def csrf_of(client: httpx.Client) -> str:
    return re.search(r'name="csrf-token" content="([^"]+)"', client.get("/ui/collections").text).group(1)


@pytest.fixture(scope="module")
def served(pg_server):
    """The module's server (import this fixture into a test module): its own database, keys, a corpus."""
    with own_database(pg_server) as url:
        served, server = serve(make_keys)
        served.db_url = url
        yield served
        server.should_exit = True
