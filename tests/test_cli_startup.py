"""A fast CLI: the commands a person types to look around never import torch or transformers,
and `genloom search|ask` reuse a running `genloom serve` on the same store instead of loading models."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO_ROOT

# Runs cli.py as `python cli.py ARGS` does, then reports which heavy modules the process imported.
WRAPPER = """
import json, runpy, sys
heavy = ("torch", "transformers", "sentence_transformers")
args = json.loads(sys.argv[1])
sys.argv = ["cli.py", *args]
code = 0
try:
    runpy.run_path("cli.py", run_name="__main__")
except SystemExit as exc:
    code = exc.code or 0
sys.stderr.write("\\nLOADED " + json.dumps([m for m in heavy if m in sys.modules]) + "\\n")
sys.exit(code)
"""


def _loaded(*args: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    proc = subprocess.run([sys.executable, "-c", WRAPPER, json.dumps(list(args))], capture_output=True, text=True,
                          timeout=300, cwd=REPO_ROOT, env=os.environ.copy())
    line = next(x for x in reversed(proc.stderr.splitlines()) if x.startswith("LOADED "))
    return proc, json.loads(line[len("LOADED "):])


def test_help_does_not_import_torch():
    proc, loaded = _loaded("--help")
    assert proc.returncode == 0, proc.stderr
    assert "datasets" in proc.stdout and "search" in proc.stdout
    assert loaded == []


@pytest.mark.parametrize("args", [("db", "status"), ("sql", "SELECT 41 + 1 AS answer"), ("datasets", "list")])
def test_looking_around_does_not_import_torch(db_url, args):
    proc, loaded = _loaded(*args)
    assert proc.returncode == 0, proc.stderr
    assert loaded == []


def test_a_missing_command_module_fails_loudly():
    """No "not built yet" skip: a command module that cannot be imported fails the CLI, naming it."""
    code = (
        "import sys\n"
        "class Missing:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'genloom.cli.dedup':\n"
        "            raise ModuleNotFoundError(\"No module named 'genloom.cli.dedup'\", name=name)\n"
        "sys.meta_path.insert(0, Missing())\n"
        "sys.path[:0] = ['platform', '.']\n"
        "from genloom.cli.main import main\n"
        "sys.exit(main(['--help']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert proc.returncode != 0
    assert "No module named 'genloom.cli.dedup'" in proc.stderr


# --------------------------------------------------------------------------- reusing `genloom serve`


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(db_url, tmp_path):
    """`genloom serve` in a child process on this test's database; its discovery file in GENLOOM_HOME."""
    from genloom.api.local import discovery_path

    port = _free_port()
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen([sys.executable, str(REPO_ROOT / "cli.py"), "serve", "--port", str(port),
                             "--log-level", "warning"], stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
    path = discovery_path()
    try:
        deadline = time.monotonic() + 120
        while True:
            if path.exists() and json.loads(path.read_text())["pid"] == proc.pid:
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", port)) == 0:
                        break
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, "genloom serve did not start"
            time.sleep(0.2)
        yield path
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    assert not path.exists()  # the server withdraws its discovery file when it stops


def _ingest(tmp_path: Path) -> None:
    from ingest.pipeline import IngestOptions, ingest

    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "cats.txt").write_text("Cats purr when they are content and sleep most of the day.")
    (folder / "pg.txt").write_text("PostgreSQL keeps rows in heap pages; vacuum reclaims dead rows.")
    ingest([folder], IngestOptions(collection="kb"))


def test_discovery_file_is_private_and_names_the_store(server):
    import stat

    from genloom.api.local import find_server, store_key

    assert stat.S_IMODE(server.stat().st_mode) == 0o600  # it holds the token
    info = json.loads(server.read_text())
    assert info["store"] == store_key() and len(info["token"]) >= 32
    assert find_server() is not None


def test_search_and_ask_use_the_running_server(server, cli, tmp_path, monkeypatch):
    _ingest(tmp_path)
    local = cli("search", "why do cats purr", "-c", "kb", "--json").json()

    # From here on, loading a model in this process fails: every embedding must come from the server.
    import genloom.embeddings as embeddings

    def no_local_model(*args, **kwargs):
        raise AssertionError("the CLI loaded the embedding model although a server was running")

    monkeypatch.setattr(embeddings, "get_embedder", no_local_model)
    remote = cli("search", "why do cats purr", "-c", "kb", "--json")
    assert remote.exit_code == 0, remote.stderr
    assert [h["chunk_id"] for h in remote.json()] == [h["chunk_id"] for h in local]
    assert remote.json()[0]["vector_score"] == pytest.approx(local[0]["vector_score"], abs=1e-5)

    answered = cli("ask", "Why do cats purr?", "-c", "kb", "--model", "extractive", "--json")
    assert answered.exit_code == 0, answered.stderr
    body = answered.json()
    assert body["model"] == "extractive" and body["citations"]
    missing = cli("ask", "Why?", "-c", "nope", "--model", "extractive")
    assert missing.exit_code == 1
    assert missing.stderr.startswith("error: collection 'nope' not found")


def test_ask_through_the_server_prints_its_sources(server, cli, tmp_path):
    """Audit 2, finding 8: with serve up, `genloom ask` printed the answer and then failed on
    `'types.SimpleNamespace' object has no attribute 'location'` for every answer with citations."""
    _ingest(tmp_path)
    r = cli("ask", "Why do cats purr?", "-c", "kb", "--model", "extractive")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.endswith("\n\nSources:\n*[1] cats\n [2] pg\n"), r.stdout  # the cited source is marked


def test_a_call_of_another_tenant_runs_here_as_that_tenant(server, cli, tmp_path, monkeypatch):
    """The tenant reaches Postgres one way, the connection's own setup; it never travels in a request
    body. A `genloom ask` of another tenant than the server's is not sent to it: it runs in this
    process, and its generation belongs to its own tenant."""
    import sqlalchemy as sa

    from genloom.api import local
    from genloom.db.engine import session_scope
    from genloom.db.models import Generation
    from genloom.db.tenancy import use_tenant

    assert local.find_server().tenant == "default"
    monkeypatch.setenv("GENLOOM_TENANT", "globex")
    _ingest(tmp_path)  # globex's own collection kb

    def not_the_server(self, request):
        raise AssertionError("a call of tenant globex was sent to the default tenant's server")

    monkeypatch.setattr(local.LocalServer, "ask", not_the_server)
    r = cli("ask", "Why do cats purr?", "-c", "kb", "--model", "extractive", "--json")
    assert r.exit_code == 0, r.stderr
    generation = sa.select(Generation.id).where(Generation.id == r.json()["generation_id"])
    with use_tenant("globex"), session_scope() as s:
        assert s.scalar(generation) is not None
    with use_tenant("default"), session_scope() as s:
        assert s.scalar(generation) is None


def test_a_server_of_another_store_is_not_used(server, monkeypatch):
    from genloom.api.local import find_server

    assert find_server() is not None
    monkeypatch.setenv("DATABASE_URL", os.environ["DATABASE_URL"] + "_other")
    assert find_server() is None
    monkeypatch.undo()
    monkeypatch.setenv("GENLOOM_REUSE_SERVER", "0")
    assert find_server() is None


def test_one_key_value_parser_for_every_option():
    from genloom.errors import BadInput
    from genloom.pairs import parse_pairs
    from genloom.training.options import parse_set

    assert parse_pairs([" lang =en", "q=a=b"], "--where") == {"lang": "en", "q": "a=b"}
    assert parse_set(["n-layer= 4"]) == {"n_layer": "4"}  # --set: dashes become underscores, values stripped
    for bad in ("novalue", "=x"):
        with pytest.raises(BadInput, match=r"^--meta expects key=value \(got '"):
            parse_pairs([bad], "--meta")
