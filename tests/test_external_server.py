"""The external-server path: genloom on a second, independently started PostgreSQL via DATABASE_URL.

The test session's own server is not involved: a second embedded server runs from another data
directory (its own GENLOOM_HOME), started by a separate process, and the CLI reaches it only
through DATABASE_URL, as it would reach a managed Postgres: it migrates the empty database,
ingests, answers and logs there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import sqlalchemy as sa

from conftest import REPO_ROOT


def _python(code: str, env: dict) -> str:
    r = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout.strip()


def _cli(*args, env: dict) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, str(REPO_ROOT / "cli.py"), *map(str, args)], env=env, cwd=REPO_ROOT,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return r


def test_cli_against_a_second_independently_started_server(tmp_path, pg_server):
    base = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "GENLOOM_HOME")}
    base.update(PYTHONPATH=os.pathsep.join([str(REPO_ROOT / "platform"), str(REPO_ROOT)]), OMP_NUM_THREADS="1")
    second_home = {**base, "GENLOOM_HOME": str(tmp_path / "second")}
    server_uri = _python("from genloom.db import embedded; print(embedded.start())", second_home)
    try:
        assert server_uri != pg_server
        # From here on the CLI knows only DATABASE_URL (and a GENLOOM_HOME that has no server).
        env = {**base, "DATABASE_URL": server_uri, "GENLOOM_HOME": str(tmp_path / "client")}
        status = json.loads(_cli("db", "status", "--json", env=env).stdout)
        assert status["embedded"] is False and status["schema_revision"] == status["schema_head"]
        _cli("ingest", REPO_ROOT / "platform" / "genloom" / "data" / "sample_docs", "--collection", "kb", env=env)
        answer = json.loads(_cli("ask", "How does genloom rank keywords?", "-c", "kb", "--json", env=env).stdout)
        assert answer["generation_id"] and answer["citations"]
        engine = sa.create_engine(server_uri.replace("postgresql://", "postgresql+psycopg://", 1),
                                  poolclass=sa.pool.NullPool)
        with engine.connect() as conn:
            docs = conn.execute(sa.text("SELECT count(*) FROM documents")).scalar()
            logged = conn.execute(sa.text("SELECT id FROM generations")).scalars().all()
        assert docs == 5 and logged == [answer["generation_id"]]
        assert not (tmp_path / "client" / "pg").exists()  # nothing started an embedded server for the client
    finally:
        subprocess.run([sys.executable, str(REPO_ROOT / "cli.py"), "db", "stop"], env=second_home, cwd=REPO_ROOT,
                       capture_output=True, timeout=120)
