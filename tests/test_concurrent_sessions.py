"""Two pytest sessions at once on one machine, as the same user, both pass (issue 30).

One session runs an embedded server; the other starts while it runs and makes its base temp folder,
as any new pytest session does (which once stripped the o+x that root mode's server user needs);
then the server must still checkpoint and take connections. tests/conftest.py's pytest_configure
gives every session a base temp folder of its own.
"""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO_ROOT


def test_two_pytest_sessions_at_once_both_pass(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("GENLOOM_HOME", "DATABASE_URL")}
    env["GENLOOM_PROBE_DIR"] = str(tmp_path)
    # No --basetemp: each session must find a safe base temp folder by itself.
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    tests = ("test_server_survives_a_neighbouring_session", "test_a_neighbouring_session_makes_its_temp_folder")
    sessions = [
        subprocess.Popen(
            [*cmd, f"tests/session_probe.py::{name}"],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name in tests
    ]
    outputs = [s.communicate(timeout=600)[0] for s in sessions]
    for session, output in zip(sessions, outputs):
        assert session.returncode == 0, output[-3000:]
    assert (tmp_path / "server.up").exists() and (tmp_path / "neighbour.made").exists()
    assert all("1 passed" in output for output in outputs), outputs
