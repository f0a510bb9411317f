"""Run by tests/test_concurrent_sessions.py as two pytest sessions at once (the suite does not
collect it: its name does not start with test_). One session starts its embedded server and waits;
the other then makes its own base temp folder, as every new pytest session does; then the first
makes its server write pg_control (CHECKPOINT), connect anew and write a table. A server whose data
the neighbour made unreachable fails here (issue 30: PANIC on global/pg_control)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import psycopg

RENDEZVOUS = Path(os.environ.get("GENLOOM_PROBE_DIR", "."))


def _wait_for(name: str) -> None:
    deadline = time.monotonic() + 300
    while not (RENDEZVOUS / name).exists():
        assert time.monotonic() < deadline, f"the other pytest session never wrote {name}"
        time.sleep(0.2)


def test_server_survives_a_neighbouring_session(pg_server):
    (RENDEZVOUS / "server.up").write_text(pg_server)
    _wait_for("neighbour.made")
    for i in range(3):
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute("CHECKPOINT")
            conn.execute(f"CREATE TABLE IF NOT EXISTS probe_{i} AS SELECT generate_series(1, 1000) AS g")
            assert conn.execute(f"SELECT count(*) FROM probe_{i}").fetchone()[0] == 1000
        time.sleep(0.5)


def test_a_neighbouring_session_makes_its_temp_folder(tmp_path_factory):
    _wait_for("server.up")
    assert tmp_path_factory.mktemp("neighbour").is_dir()  # pytest's base temp is made only now
    (RENDEZVOUS / "neighbour.made").write_text("")
