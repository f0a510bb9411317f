"""Streaming replicas of the embedded server (`genloom db replica create|start|stop|remove`).

A replica is PostgreSQL's own physical streaming standby, made with the wheel's
`pg_basebackup`: nothing genloom-specific runs in it.

- **A replication slot** per replica (`genloom_replica_<hash of its folder>`), so the primary
  keeps the WAL a stopped replica still needs; `remove` drops it (a forgotten slot would keep
  WAL forever).
- **Same rules as the primary.** Unix socket only (`listen_addresses=''`), in the replica's
  folder (or a private short folder), mode 0700, peer authentication mapped to the OS user
  who owns the store; no trust, no TCP. The replica's WAL receiver connects to the primary
  over the primary's socket with `replication` access, which pg_hba.conf grants to the same
  peer map (embedded.PG_HBA).
- **genloom finds its replicas**: each is listed in $GENLOOM_HOME/replicas.json, and
  `genloom.db.routing` reads from them (besides any DATABASE_READ_URL).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

from genloom.config import database_url, genloom_home
from genloom.db import embedded
from genloom.errors import BadInput, ConfigError, DatabaseError

START_TIMEOUT_S = embedded.START_TIMEOUT_S


def _registry() -> Path:
    return genloom_home() / "replicas.json"


def registered() -> list[Path]:
    try:
        return [Path(d) for d in json.loads(_registry().read_text())]
    except (OSError, ValueError):
        return []


def _save(dirs: list[Path]) -> None:
    path = _registry()
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps([str(d) for d in dirs], indent=1))
    os.replace(tmp, path)


def slot_name(folder: Path) -> str:
    return "genloom_replica_" + hashlib.sha256(str(folder).encode()).hexdigest()[:12]


def url_of(folder: Path, database: str = embedded.DATABASE_NAME) -> str:
    return f"postgresql://postgres@/{database}?host={quote(str(embedded.socket_dir(folder)), safe='/')}"


def embedded_replica_urls() -> list[str]:
    return [url_of(folder) for folder in registered()]


def _require_embedded() -> None:
    if database_url() is not None:
        raise ConfigError(
            "genloom db replica manages replicas of the embedded server; for DATABASE_URL's server, make a "
            "standby with its own tools and list it in DATABASE_READ_URL"
        )


def create(folder: Path, *, progress=None) -> dict:
    """Base-backup the embedded server into `folder`, start it as a streaming standby, register it.

    The caller makes sure the store exists and is migrated first (get_engine()).
    """
    import psycopg

    _require_embedded()
    say = progress or (lambda message: None)
    folder = folder.expanduser().resolve()
    if folder.exists() and any(folder.iterdir()):
        raise BadInput(f"{folder} is not empty: give a new folder for the replica")
    primary_uri = embedded.start()
    pgdata = embedded.data_dir()
    if embedded.write_access_rules(pgdata):
        with psycopg.connect(primary_uri, autocommit=True) as conn:
            conn.execute("SELECT pg_reload_conf()")
    slot = slot_name(folder)
    with psycopg.connect(primary_uri, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone():
            conn.execute("SELECT pg_create_physical_replication_slot(%s, true)", (slot,))
    postmaster = embedded.Postmaster.read(pgdata)
    assert postmaster is not None, "the primary runs: embedded.start() returned"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    say(f"copying the primary into {folder} (pg_basebackup, slot {slot})")
    result = subprocess.run(
        [
            str(embedded.bin_dir() / "pg_basebackup"),
            "-D",
            str(folder),
            "-d",
            f"host={postmaster.socket_dir} user=postgres",
            "-X",
            "stream",
            "-S",
            slot,
            "-R",  # standby.signal + primary_conninfo: start as a streaming standby
            "-c",
            "fast",
            "--no-password",
        ],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if result.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        _drop_slot(primary_uri, slot)
        raise DatabaseError(f"pg_basebackup failed: {embedded.first_line(result.stderr or result.stdout)}")
    for stale in folder.glob(".s.PGSQL.*"):  # the primary's socket lock, copied with its folder
        stale.unlink()
    (folder / "log").write_text("")
    _hand_to_server_user(folder)
    _save([*[d for d in registered() if d != folder], folder])
    say("starting the standby")
    start(folder)
    return {"dir": str(folder), "slot": slot, "url": url_of(folder)}


def _hand_to_server_user(folder: Path) -> None:
    uid = embedded.server_uid()
    folder.chmod(0o700)
    if uid != os.geteuid():
        for root, dirs, files in os.walk(folder):
            os.chown(root, uid, -1, follow_symlinks=False)
            for name in dirs + files:
                os.chown(os.path.join(root, name), uid, -1, follow_symlinks=False)


def start(folder: Path) -> str:
    """Start a registered replica (no-op when it runs); wait until it accepts reads."""
    folder = folder.expanduser().resolve()
    if folder not in registered():
        raise BadInput(f"{folder} is not a replica of this store (genloom db replica create {folder})")
    embedded.start_private_server(folder, "-c hot_standby=on", what="replica")
    _wait_until_readable(folder)
    return url_of(folder)


def _wait_until_readable(folder: Path) -> None:
    import psycopg

    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            with psycopg.connect(url_of(folder, "postgres"), connect_timeout=3) as conn:
                conn.execute("SELECT 1")
                return
        except psycopg.OperationalError as exc:
            if time.monotonic() > deadline:
                raise DatabaseError(f"the replica in {folder} does not accept reads: {exc}") from None
            time.sleep(0.2)


def stop(folder: Path) -> bool:
    return embedded.stop_private_server(folder.expanduser().resolve(), what="replica")


def remove(folder: Path) -> None:
    """Stop the replica, drop its slot (the primary stops keeping WAL for it), forget it; the folder stays."""
    folder = folder.expanduser().resolve()
    if folder not in registered():
        raise BadInput(f"{folder} is not a replica of this store")
    stop(folder)
    _drop_slot(embedded.start(), slot_name(folder))
    _save([d for d in registered() if d != folder])


def _drop_slot(primary_uri: str, slot: str) -> None:
    import psycopg

    with psycopg.connect(primary_uri, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s", (slot,)
        )
