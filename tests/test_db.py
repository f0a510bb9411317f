"""The store: embedded server, migrations, schema rules enforced by Postgres itself."""

from __future__ import annotations

import hashlib
import json
import sys

import pytest
import sqlalchemy as sa

from conftest import REPO_ROOT, run_subprocess

EXPECTED_TABLES = {
    "collections", "documents", "chunks", "embeddings", "embedding_models",
    "sessions", "prompts", "generations", "generation_sources", "feedback", "prompt_templates",
    "items", "datasets", "dataset_versions", "dataset_members",
    "runs", "metrics", "models", "run_checkpoints",
}


def test_every_table_exists_at_head(engine):
    names = set(sa.inspect(engine).get_table_names())
    assert EXPECTED_TABLES <= names


def test_extensions_created(engine):
    with engine.connect() as conn:
        exts = dict(conn.execute(sa.text("SELECT extname, extversion FROM pg_extension")).all())
    assert "vector" in exts and "pg_trgm" in exts
    assert tuple(int(p) for p in exts["vector"].split(".")[:2]) >= (0, 7)


def test_migrations_down_to_base_and_up_again(engine):
    from genloom.db import migrate

    head = migrate.head_revision()
    assert migrate.current_revision(engine) == head
    migrate.downgrade(engine, "base")
    assert migrate.current_revision(engine) is None
    assert not ({"items", "runs", "documents"} & set(sa.inspect(engine).get_table_names()))
    migrate.upgrade(engine, "head")
    assert migrate.current_revision(engine) == head
    assert EXPECTED_TABLES <= set(sa.inspect(engine).get_table_names())


def _sealed_version_with_one_item(session):
    from genloom.db.models import Dataset, DatasetMember, DatasetVersion, Item

    payload = b"\x00\x01\x02"
    item = Item(sha256=hashlib.sha256(payload).hexdigest(), modality="tensor", payload=payload)
    ds = Dataset(name="d")
    session.add_all([item, ds])
    session.flush()
    version = DatasetVersion(dataset_id=ds.id, version=1)
    session.add(version)
    session.flush()
    session.add(DatasetMember(version_id=version.id, item_id=item.id, split="train"))
    session.flush()
    session.execute(sa.update(DatasetVersion).where(DatasetVersion.id == version.id).values(sealed=True))
    session.commit()
    return version, item


def test_sealed_version_rejects_insert_and_delete_in_the_database(engine, session):
    version, item = _sealed_version_with_one_item(session)
    other = b"other"
    with engine.begin() as conn:
        other_id = conn.execute(
            sa.text("INSERT INTO items (sha256, modality, payload) VALUES (:h, 'tensor', :p) RETURNING id"),
            {"h": hashlib.sha256(other).hexdigest(), "p": other},
        ).scalar()
    # Plain SQL, not genloom's Python: the rule lives in Postgres.
    for statement, params in [
        ("INSERT INTO dataset_members (version_id, item_id, split) VALUES (:v, :i, 'train')", {"v": version.id, "i": other_id}),
        ("DELETE FROM dataset_members WHERE version_id = :v", {"v": version.id}),
        ("UPDATE dataset_members SET split = 'test' WHERE version_id = :v", {"v": version.id}),
        ("UPDATE dataset_versions SET item_count = 99 WHERE id = :v", {"v": version.id}),
        ("DELETE FROM dataset_versions WHERE id = :v", {"v": version.id}),
        ("TRUNCATE dataset_members", {}),
    ]:
        with pytest.raises(sa.exc.IntegrityError, match="sealed|immutable"):
            with engine.begin() as conn:
                conn.execute(sa.text(statement), params)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM dataset_members")).scalar() == 1


def test_items_are_never_updated_in_place(engine, session):
    _, item = _sealed_version_with_one_item(session)
    with pytest.raises(sa.exc.IntegrityError, match="immutable"):
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE items SET label = 'x' WHERE id = :i"), {"i": item.id})


def test_unsealed_version_accepts_changes(engine, session):
    from genloom.db.models import Dataset, DatasetVersion, Item

    ds = Dataset(name="open")
    items = [Item(sha256=c * 64, modality="text", payload=c.encode(), text=c) for c in "ab"]
    session.add_all([ds, *items])
    session.flush()
    v = DatasetVersion(dataset_id=ds.id, version=1)
    session.add(v)
    session.commit()
    a, b = (item.id for item in items)
    # The same plain SQL the sealed version rejects, each statement committed on its own.
    steps = [
        ("INSERT INTO dataset_members (version_id, item_id, split) VALUES (:v, :a, 'train'), (:v, :b, 'train')",
         [("train", a), ("train", b)]),
        ("UPDATE dataset_members SET split = 'test' WHERE version_id = :v AND item_id = :b",
         [("train", a), ("test", b)]),
        ("DELETE FROM dataset_members WHERE version_id = :v AND item_id = :a", [("test", b)]),
        ("UPDATE dataset_versions SET item_count = 1 WHERE id = :v", [("test", b)]),
    ]
    for statement, expected in steps:
        with engine.begin() as conn:
            conn.execute(sa.text(statement), {"v": v.id, "a": a, "b": b})
        with engine.connect() as conn:
            members = conn.execute(
                sa.text("SELECT split, item_id FROM dataset_members WHERE version_id = :v ORDER BY item_id"), {"v": v.id}
            ).all()
        assert [tuple(m) for m in members] == expected, statement
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT item_count FROM dataset_versions WHERE id = :v"), {"v": v.id}).scalar() == 1


def test_database_url_to_the_same_server_works(cli, db_url):
    result = cli("db", "status", "--json")
    assert result.exit_code == 0, result.stderr
    status = result.json()
    assert status["embedded"] is False  # DATABASE_URL is set by the fixture
    assert status["schema_revision"] == status["schema_head"]
    assert int(status["server_version"].split(".")[0]) >= 16


@pytest.mark.parametrize(
    "url, message",
    [
        ("postgresql://nobody:pw@127.0.0.1:1/nothing", "cannot connect to postgresql://nobody:***@127.0.0.1:1/nothing"),
        # libpq's query form of the password (issue 14, finding 5): redacted as well
        ("postgresql://nobody@127.0.0.1:1/nothing?sslmode=disable&password=pw",
         "cannot connect to postgresql://nobody@127.0.0.1:1/nothing?sslmode=disable&password=***"),
        ("mysql://root:pw@localhost/db?password=pw", "DATABASE_URL must look like postgresql://"),
        ("mysql://root@localhost/db", "DATABASE_URL must look like postgresql://"),
        ("postgresql://u@host:notaport/db", "DATABASE_URL is malformed"),
    ],
)
def test_bad_database_url_is_one_line_error(cli, monkeypatch, url, message):
    from genloom.db.engine import reset_engines

    monkeypatch.setenv("DATABASE_URL", url)
    reset_engines()
    result = cli("db", "status", "--json")
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "pw" not in result.stderr  # the password is redacted


def test_unwritable_genloom_home_is_one_line_error(cli, monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("GENLOOM_HOME", str(blocker / "home"))
    result = cli("db", "status", "--start")
    assert result.exit_code == 1
    assert "GENLOOM_HOME" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_embedded_status_from_subprocess_twice_reuses_the_server(pg_server, genloom_home):
    from genloom.db.embedded import Postmaster

    first = run_subprocess("db", "status", "--json")
    assert first.returncode == 0, first.stderr
    before = Postmaster.read(genloom_home / "pg")
    second = run_subprocess("db", "status", "--json")
    assert second.returncode == 0, second.stderr
    a, b = json.loads(first.stdout), json.loads(second.stdout)
    assert a["embedded"] and b["embedded"]
    assert a["data_dir"] == b["data_dir"] == str(genloom_home / "pg")
    assert int(a["server_version"].split(".")[0]) >= 16
    assert tuple(int(x) for x in a["pgvector_version"].split(".")[:2]) >= (0, 7)
    assert a["schema_revision"] == a["schema_head"]
    # Same postmaster: its pid file names the same process before and after the second call
    # (an event, where a wall-clock bound flaked on a loaded machine).
    info = Postmaster.read(genloom_home / "pg")
    assert info is not None and info.alive() and info.status == "ready"
    assert before is not None and info.pid == before.pid


def test_two_processes_starting_at_once_share_one_server(tmp_path):
    import subprocess
    import sys

    from conftest import REPO_ROOT

    home = tmp_path / "home"
    env = {**__import__("os").environ, "GENLOOM_HOME": str(home)}
    env.pop("DATABASE_URL", None)
    procs = [
        subprocess.Popen(
            [sys.executable, str(REPO_ROOT / "cli.py"), "db", "status", "--start", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=180) for p in procs]
    try:
        for p, (out, err) in zip(procs, outs):
            assert p.returncode == 0, err
            assert json.loads(out)["schema_revision"] is not None
        from genloom.db.embedded import Postmaster

        info = Postmaster.read(home / "pg")
        assert info is not None and info.alive() and info.status == "ready"
    finally:
        subprocess.run([sys.executable, str(REPO_ROOT / "cli.py"), "db", "stop"], env=env, capture_output=True)


def test_python_cli_py_is_the_genloom_command(pg_server):
    import os
    import shutil
    import subprocess
    import tomllib

    # The console script is genloom.cli.main:run ...
    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"genloom": "genloom.cli.main:run"}
    # ... and `python cli.py` prints exactly what that function prints, installed or not.
    a = run_subprocess("--help")
    assert a.returncode == 0 and "db" in a.stdout
    entry = subprocess.run(
        [sys.executable, "-c", "import sys; sys.argv[0] = 'genloom'; from genloom.cli.main import run; run()", "--help"],
        capture_output=True, text=True, cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "platform"), str(REPO_ROOT)])},
    )
    assert entry.returncode == 0 and entry.stdout == a.stdout
    exe = shutil.which("genloom")
    if os.environ.get("CI") == "true":
        assert exe, "CI installs the package: `genloom` must be on PATH"
    if exe:
        b = subprocess.run([exe, "--help"], capture_output=True, text=True)
        assert b.stdout == a.stdout