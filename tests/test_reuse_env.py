"""A CLI reusing `genloom serve` brings what the call needs from its own user's environment (the
endpoint key named by --api-key-env); without it, it runs here and says what is missing. The
server's environment never stands in."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from test_cli_startup import _ingest, server  # noqa: F401  (the `server` fixture: a child `genloom serve`)


class _KeyedEngine(BaseHTTPRequestHandler):
    """An OpenAI-compatible stream that answers only the key sk-user."""

    keys: list[str] = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.send_response(404)
        self.end_headers()

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        _KeyedEngine.keys.append(self.headers.get("authorization") or "")
        if self.headers.get("authorization") != "Bearer sk-user":
            body = b'{"error": {"message": "Incorrect API key provided"}}'
            self.send_response(401)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.end_headers()
        for chunk in ({"choices": [{"index": 0, "delta": {"content": "They purr"}, "finish_reason": None}]},
                      {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": 9, "completion_tokens": 2}}):
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")


@pytest.fixture
def engine_url():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _KeyedEngine)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()


def test_the_endpoint_key_comes_from_the_cli_users_environment(server, cli, tmp_path, monkeypatch, engine_url):  # noqa: F811
    _ingest(tmp_path)
    added = cli("models", "add-endpoint", "keyed", "--base-url", engine_url, "--model", "m", "--api-key-env", "GL_KEY",
                "--context-window", "4096")
    assert added.exit_code == 0, added.stderr
    import genloom.generation.call as call

    def no_local_call(*args, **kwargs):
        raise AssertionError("the CLI ran the call itself although a server was running and it had the key")

    # The server was started without GL_KEY; this user has it: the call runs on the server, with this key.
    monkeypatch.setenv("GL_KEY", "sk-user")
    monkeypatch.setattr(call, "ask", no_local_call)
    answered = cli("ask", "Why do cats purr?", "-c", "kb", "--model", "keyed", "--json")
    assert answered.exit_code == 0, answered.stderr
    assert answered.json()["answer"] == "They purr" and _KeyedEngine.keys[-1] == "Bearer sk-user"
    monkeypatch.undo()

    # Without the variable here, the CLI runs the call itself and names what this user lacks.
    monkeypatch.delenv("GL_KEY", raising=False)
    missing = cli("ask", "Why do cats purr?", "-c", "kb", "--model", "keyed")
    assert missing.exit_code == 1
    assert "needs its API key in $GL_KEY, which is not set" in missing.stderr
