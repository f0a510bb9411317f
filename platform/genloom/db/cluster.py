"""A Citus 14 cluster on this machine: `genloom db cluster init --workers 2`.

1. **Build Citus once** from the vendored source (`../shared/vendor/citus-14.0.1.tar.gz`, or
   $GENLOOM_CITUS_SOURCE) against the embedded wheel's `pg_config`, and cache the result in
   `~/.cache/genloom/citus/<key>` ($GENLOOM_CITUS_CACHE), where the key is the Citus version
   and a hash of the tarball and the PostgreSQL build (`pg_config --version --configure`).
   The wheel's CFLAGS carry `-Wmissing-variable-declarations`, which gcc 12 rejects: the build
   goes through a compiler wrapper that drops that one flag. Nothing in the wheel is touched:
   the server finds Citus through `dynamic_library_path` and `extension_control_path`
   (PostgreSQL 18).
2. **Start a coordinator and N workers** under $GENLOOM_HOME/cluster/, each an embedded-style
   server: Unix socket only, mode 0700, peer authentication (no trust, no TCP). The nodes
   reach each other over those sockets; the node name Citus stores is the socket folder.
3. **Point genloom at the coordinator**: $GENLOOM_HOME/cluster.json records the cluster, and
   `genloom.db.engine.libpq_url()` uses the coordinator while it is there (DATABASE_URL still wins).

Two Citus traps are solved in genloom.db.tenancy: Citus opens worker connections as the
current role, so on a cluster `genloom_app` is a LOGIN role (peer authentication still admits
only the store's owner); and a session `SET genloom.tenant` is not seen on workers, so on a
cluster the tenant and role are set with `SET LOCAL` statements inside the transaction, which
Citus forwards with `citus.propagate_set_commands = 'local'` (set for the database here).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

from genloom.config import genloom_home
from genloom.db import embedded
from genloom.errors import ConfigError, DatabaseError

SOURCE_ENV = "GENLOOM_CITUS_SOURCE"
CACHE_ENV = "GENLOOM_CITUS_CACHE"
DEFAULT_SOURCE = Path(__file__).resolve().parents[3].parent / "shared" / "vendor" / "citus-14.0.1.tar.gz"
CONFIGURE_FLAGS = ["--without-libcurl", "--without-lz4", "--without-zstd"]
# gcc 12 rejects a warning flag the wheel's pg_config carries; the wrapper drops just that flag.
CC_WRAPPER = """#!/bin/sh
# Written by genloom: the compiler, without -Wmissing-variable-declarations (unknown to gcc 12).
for a do
  shift
  [ "$a" = "-Wmissing-variable-declarations" ] || set -- "$@" "$a"
done
exec {cc} "$@"
"""

Progress = Callable[[str], None]
READER_ROLE = "genloom_reader"  # genloom.db.reader's login (importing it from there would close an import cycle)


def source_tarball() -> Path:
    configured = os.environ.get(SOURCE_ENV, "").strip()
    path = Path(configured).expanduser() if configured else DEFAULT_SOURCE
    if not path.is_file():
        raise ConfigError(
            f"Citus source not found at {path}: put citus-14.0.1.tar.gz there (../shared/vendor/) or set {SOURCE_ENV}"
        )
    return path


def source_tarball_available() -> bool:
    try:
        source_tarball()
    except ConfigError:
        return False
    return True


def is_built() -> bool:
    """Is Citus for this PostgreSQL build in the cache already?"""
    return (cache_root() / build_key(source_tarball()) / "BUILD_OK").exists()


def c_compiler() -> str:
    for name in (os.environ.get("CC", "").strip(), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)  # type: ignore[return-value]
    raise ConfigError(
        "building Citus needs a C compiler and make, and none was found: install them "
        "(Debian/Ubuntu: apt-get install build-essential) or set CC"
    )


def _pg_config(*args: str) -> str:
    return subprocess.run(
        [str(embedded.bin_dir() / "pg_config"), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def cache_root() -> Path:
    configured = os.environ.get(CACHE_ENV, "").strip()
    if configured:
        return Path(configured).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "genloom" / "citus"


def build_key(tarball: Path) -> str:
    """Citus version × PostgreSQL build: a new wheel or a new tarball means a new build."""
    version = tarball.name.removesuffix(".tar.gz")
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    pg = _pg_config("--version", "--configure")
    return (
        f"{version}-pg{_pg_config('--version').split()[-1]}-{hashlib.sha256((digest + pg).encode()).hexdigest()[:12]}"
    )


def build(progress: Progress | None = None) -> Path:
    """The folder holding Citus' lib/ and share/ for this PostgreSQL build; built on first call."""
    say = progress or (lambda message: None)
    tarball = source_tarball()
    target = cache_root() / build_key(tarball)
    if (target / "BUILD_OK").exists():
        say(f"citus: cached build {target}")
        return target
    compiler = c_compiler()
    if not shutil.which("make"):
        raise ConfigError("building Citus needs `make`: install it (Debian/Ubuntu: apt-get install build-essential)")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="genloom-citus-build-") as tmp:
        work = Path(tmp)
        say(f"citus: unpacking {tarball.name}")
        with tarfile.open(tarball) as archive:
            archive.extractall(work, filter="data")
        source = next(p for p in work.iterdir() if p.is_dir())
        wrapper = work / "cc"
        wrapper.write_text(CC_WRAPPER.format(cc=compiler))
        wrapper.chmod(0o755)
        jobs = str(max(1, min(os.cpu_count() or 1, 4)))
        steps = [
            ("configure", ["./configure", f"PG_CONFIG={embedded.bin_dir() / 'pg_config'}", f"CC={wrapper}", *CONFIGURE_FLAGS]),
            (f"make -j{jobs} (about 20 minutes on 2 busy cores)", ["make", f"-j{jobs}"]),
            ("make install", ["make", "install", f"DESTDIR={work / 'staging'}"]),
        ]  # fmt: skip
        log = target.parent / f"{target.name}.build.log"
        with open(log, "w") as out:
            for label, args in steps:
                say(f"citus: {label} (log: {log})")
                result = subprocess.run(args, cwd=source, stdout=out, stderr=subprocess.STDOUT)
                if result.returncode != 0:
                    raise DatabaseError(f"building Citus failed at `{label.split(' (')[0]}`; see {log}")
        installed = work / "staging" / _pg_config("--pkglibdir").lstrip("/")
        shared = work / "staging" / _pg_config("--sharedir").lstrip("/")
        partial = target.with_suffix(".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        shutil.copytree(installed, partial / "lib")
        shutil.copytree(shared / "extension", partial / "share" / "extension")
        (partial / "BUILD_OK").write_text(f"{tarball.name}\n")
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)  # whole or not at all: an interrupted build leaves no cache entry
    say(f"citus: built into {target}")
    return target


# -- the nodes -------------------------------------------------------------------------------


def cluster_dir() -> Path:
    return genloom_home() / "cluster"


def _record() -> Path:
    return genloom_home() / "cluster.json"


def nodes() -> list[Path]:
    """The cluster's data folders, coordinator first ([] when there is no cluster)."""
    try:
        return [Path(p) for p in json.loads(_record().read_text())["nodes"]]
    except (OSError, ValueError, KeyError):
        return []


def node_uri(folder: Path, database: str = "postgres") -> str:
    return f"postgresql://postgres@/{database}?host={quote(str(embedded.socket_dir(folder)), safe='/')}"


def coordinator_url() -> str | None:
    """The coordinator's URL while a cluster is recorded, else None (genloom.db.engine asks)."""
    found = nodes()
    return node_uri(found[0], embedded.DATABASE_NAME) if found else None


def _citus_options(folder: Path, citus: Path) -> str:
    # citus.local_hostname: how a node connects back to itself (a query over intermediate
    # results only, under EXPLAIN ANALYZE or when it cannot run locally; shard cleanup). The
    # default, localhost, is TCP, which no node listens on ("connection to the remote node
    # genloom_app@localhost:5432 failed"): it is the node's own socket folder, as in pg_dist_node.
    return (
        "-c shared_preload_libraries=citus "
        f"-c dynamic_library_path='{citus / 'lib'}:$libdir' "
        f"-c extension_control_path='{citus / 'share'}:$system' "
        f"-c citus.local_hostname='{embedded.socket_dir(folder)}' "
        "-c citus.propagate_set_commands=local -c max_connections=200"
    )


def start_node(folder: Path, citus: Path) -> str:
    if embedded._is_root():
        # Run as root, the server's own user loads citus.so from the cache (~/.cache is under a 0700 home).
        embedded._let_server_user_reach(citus / "lib" / "citus.so")
    embedded.start_private_server(folder, _citus_options(folder, citus), what="Citus node")
    return node_uri(folder)


def init(workers: int = 2, progress: Progress | None = None) -> dict:
    """Build (or reuse) Citus, create and start a coordinator and `workers` workers, join them."""
    import psycopg

    say = progress or (lambda message: None)
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1 (got {workers})")
    citus = build(say)
    root = cluster_dir()
    if nodes():
        raise ConfigError(f"a cluster already exists in {root}: start it with `genloom db cluster start`")
    if root.exists() and any(root.iterdir()):
        raise ConfigError(f"{root} is not empty: move it away to create a new cluster")
    folders = [root / "coordinator", *[root / f"worker{i}" for i in range(1, workers + 1)]]
    for folder in folders:
        say(f"cluster: initdb {folder.name}")
        folder.parent.mkdir(parents=True, exist_ok=True)
        embedded.init_private_server(folder, cluster_peers=True)
        start_node(folder, citus)
        with psycopg.connect(node_uri(folder), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{embedded.DATABASE_NAME}"')
        with psycopg.connect(node_uri(folder, embedded.DATABASE_NAME), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION citus")
            conn.execute("CREATE EXTENSION vector")
            conn.execute("CREATE EXTENSION pg_trgm")
    with psycopg.connect(node_uri(folders[0], embedded.DATABASE_NAME), autocommit=True) as conn:
        conn.execute("SELECT citus_set_coordinator_host(%s, 5432)", (str(embedded.socket_dir(folders[0])),))
        for folder in folders[1:]:
            say(f"cluster: adding {folder.name}")
            conn.execute("SELECT citus_add_node(%s, 5432)", (str(embedded.socket_dir(folder)),))
        (active,) = conn.execute("SELECT count(*) FROM citus_get_active_worker_nodes()").fetchone() or (0,)
    _record().write_text(json.dumps({"citus": str(citus), "nodes": [str(f) for f in folders]}, indent=1))
    return {"coordinator": coordinator_url(), "workers": active, "citus": str(citus)}


def start(progress: Progress | None = None) -> None:
    citus = Path(json.loads(_record().read_text())["citus"])
    for folder in nodes():
        start_node(folder, citus)


def stop() -> int:
    return sum(embedded.stop_private_server(folder, what="Citus node") for folder in reversed(nodes()))


def prepare(engine) -> None:
    """On a Citus coordinator (ours or any other), after migrating: make genloom's tenancy work on workers.

    - `genloom_app` becomes a LOGIN role: Citus opens worker connections as the current role,
      and a NOLOGIN role is refused there ("role … is not permitted to log in"). Who may log
      in is still decided by pg_hba.conf (peer, or passwords the operator sets), not by this flag.
    - `citus.propagate_set_commands = 'local'` for the database: the SET LOCAL statements
      genloom.tenancy issues reach the workers.
    """
    import sqlalchemy as sa

    from genloom.db.tenancy import APP_ROLE

    with engine.begin() as conn:
        if not conn.execute(sa.text("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')")).scalar():
            return
        if conn.execute(sa.text("SELECT NOT rolcanlogin FROM pg_roles WHERE rolname = :r"), {"r": APP_ROLE}).scalar():
            conn.execute(sa.text(f"ALTER ROLE {APP_ROLE} LOGIN"))
        database = conn.execute(sa.text("SELECT current_database()")).scalar()
        conn.execute(sa.text(f"ALTER DATABASE \"{database}\" SET citus.propagate_set_commands = 'local'"))
        # Joins that do not say `tenant = :tenant` for each table (the log's detail reads, the
        # analytics views, dataset reads) are repartitioned: correct, slower; the hot paths (search,
        # BM25 indexing, ingest) filter on the tenant and are router queries (genloom.db.distribute).
        conn.execute(sa.text(f'ALTER DATABASE "{database}" SET citus.enable_repartition_joins = on'))
        _lift_reader_limit_on_workers(conn)
    engine.dispose()  # a database's settings apply to new connections: none opened before may stay pooled


def _lift_reader_limit_on_workers(conn) -> None:
    """genloom_reader's CONNECTION LIMIT (migration 0013) bounds `genloom sql` sessions on the
    coordinator. Citus copies the role to the workers with its limit, but there each connection
    is one Citus opened for a coordinator session: one per shard task (up to
    citus.max_adaptive_executor_pool_size per worker) and one per worker-to-worker fetch of an
    intermediate result. A single `genloom sql` query over a view (v_model_stats) or a join not on
    the tenant ran out of the 4 and failed with "cannot connect to worker1 … to fetch intermediate
    results" ("too many connections for role genloom_reader" in the worker's log). On the workers
    the limit is lifted; the coordinator keeps it, and with it the bound on sessions."""
    import sqlalchemy as sa

    exists = sa.text("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :r)")
    if not conn.execute(exists, {"r": READER_ROLE}).scalar():
        return
    # Each worker's own setting: unpropagated, or Citus would forward the ALTER ROLE from that
    # worker to every node, the coordinator included.
    on_each_worker = f"""
        DO $$
        BEGIN
            PERFORM set_config('citus.enable_alter_role_propagation', 'off', true);
            ALTER ROLE {READER_ROLE} CONNECTION LIMIT -1;
        END $$
    """
    failed = conn.execute(
        sa.text("SELECT nodename, result FROM run_command_on_workers(:c) WHERE NOT success"), {"c": on_each_worker}
    ).all()
    if failed:
        raise DatabaseError(
            f"could not lift {READER_ROLE}'s connection limit on worker {failed[0].nodename}: {failed[0].result}"
        )


def node_states() -> list[dict]:
    """Each node's folder and whether it runs (for `genloom db status`)."""
    states = []
    for index, folder in enumerate(nodes()):
        info = embedded.Postmaster.read(folder)
        running = info is not None and info.alive()
        states.append({"node": "coordinator" if index == 0 else folder.name, "dir": str(folder),
                       "state": "running" if running else "stopped"})  # fmt: skip
    return states
