"""A private PostGIS cluster for `tracker serve` when it is given no database URL.

Policy: the cluster lives in one data folder (`default_data_dir()` unless told) and listens on a
Unix socket inside that folder only, never on TCP, so it cannot clash with another PostgreSQL
server and only the folder's owner (or root) can reach it; that is why `trust` auth is safe here.
Durability settings stay at PostgreSQL's defaults (`fsync`, `synchronous_commit` on: an ack means
committed); `server_settings()` sizes memory and WAL for a steady stream of small inserts.
`initdb` runs the first time only. A server
already running on the folder belongs to someone else: it is reused and left running; a server
started here is stopped by `stop()`. PostgreSQL refuses to run as root, so as root its binaries run
as an unprivileged OS user (`postgres` unless told) and the data folder is owned by that user.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import shlex
import stat
import subprocess
import time
import urllib.parse
from pathlib import Path
from types import TracebackType

import asyncpg

from tracker.errors import EmbeddedDatabaseError
from tracker.postgres_install import check_postgis, command_output, find_bin_dir

log = logging.getLogger("tracker.embedded_db")

SUPERUSER = "tracker"
PORT = 5432  # only names the socket file (.s.PGSQL.5432): no TCP port is opened


def server_settings(memory_bytes: int | None = None) -> dict[str, str]:
    """PostgreSQL settings for the tracker's load: a constant stream of small inserts plus history reads.

    - `shared_buffers` an eighth of the machine's memory (128 MB to 2 GB): the app shares the machine,
      and the newest partitions' indexes, which every insert touches, stay cached;
    - `max_wal_size` 4 GB and `checkpoint_timeout` 15 min: fewer checkpoints, so fewer full-page
      images in the WAL of an insert-heavy load (by default a checkpoint comes every 1 GB of WAL);
    - `wal_compression` pglz (every build has it): what full-page images remain take less disk bandwidth;
    - `work_mem` 16 MB: trail simplification and area queries sort in memory.
    """
    if memory_bytes is None:
        memory_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    mb = 1024 * 1024
    shared = min(2048, max(128, memory_bytes // 8 // mb))
    return {
        "shared_buffers": f"{shared}MB",
        "effective_cache_size": f"{max(shared, memory_bytes // 2 // mb)}MB",
        "max_wal_size": "4GB",
        "checkpoint_timeout": "15min",
        "wal_compression": "pglz",
        "work_mem": "16MB",
    }


def default_data_dir() -> Path:
    """$TRACKER_DATA_DIR, else a system folder for root and a per-user folder for anyone else."""
    if env := os.environ.get("TRACKER_DATA_DIR"):
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/tracker/postgres")
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "share") / "tracker" / "postgres"


def demo_data_dir() -> Path:
    """The folder of `tracker demo`'s own cluster, beside the default one, so that its simulated devices
    never mix with real ones."""
    return default_data_dir().parent / "demo"


def server_running(data_dir: Path) -> bool:
    """Whether a live PostgreSQL server owns `data_dir` (its postmaster.pid names a process that is
    not a zombie); cheap, no binary is run."""
    try:
        pid = int((data_dir / "postmaster.pid").read_text().split()[0])
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, ValueError, IndexError):
        return False
    return state != "Z"


def _url(database: str, socket_dir: str, port: int) -> str:
    """postgresql://tracker@/<db>?host=<socket dir>&port=<port>: asyncpg and libpq accept it."""
    query = urllib.parse.urlencode({"host": socket_dir, "port": port}, safe="/")
    return f"postgresql://{SUPERUSER}@/{urllib.parse.quote(database, safe='')}?{query}"


class EmbeddedPostgres:
    """One PostGIS cluster in `data_dir`, created and started on demand; a context manager too.

    `start()` returns a URL of the form `postgresql://tracker@/<database>?host=<data_dir>&port=5432`
    (the host is the socket folder). `created` tells whether initdb ran in that start, `started`
    whether this object started the server and so will stop it.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        bin_dir: Path | None = None,
        database: str = "tracker",
        os_user: str | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.bin_dir = bin_dir
        self.database = database
        self.os_user = os_user  # used only when running as root
        self.created = False
        self.started = False
        self._url: str | None = None
        self._bin = Path()
        self._pw: pwd.struct_passwd | None = None  # whom the binaries run as; None: ourselves

    @property
    def url(self) -> str:
        if self._url is None:
            raise EmbeddedDatabaseError("the embedded database has not been started")
        return self._url

    def start(self) -> str:
        """Make sure the cluster exists, runs, has the database and PostGIS; return its URL."""
        if self.started:
            return self.url
        began = time.monotonic()
        self.created = False
        self._bin = find_bin_dir(self.bin_dir)
        check_postgis(self._bin)
        self._pw = self._server_user()
        self._prepare_data_dir()
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        self._clear_zombie_lock()
        if self._running():
            socket_dir, port = self._running_socket()
            log.info("reusing the PostgreSQL server already running on %s", self.data_dir)
        else:
            socket_dir, port = str(self.data_dir), PORT
            self._pg_start()
        try:
            asyncio.run(self._ensure_database(socket_dir, port))
        except BaseException:
            self.stop()
            raise
        self._url = _url(self.database, socket_dir, port)
        log.info("embedded PostGIS ready at %s in %.1f s", self._url, time.monotonic() - began)
        return self._url

    def stop(self) -> None:
        """Stop the server if this object started it; a reused server is someone else's."""
        if not self.started:
            return
        self._clear_zombie_lock()  # else pg_ctl would wait for a dead server to remove its files
        res = self._run("pg_ctl", "stop", "-m", "fast", "-w", "-D", str(self.data_dir))
        if res.returncode != 0 and self._running():
            failed = f"cannot stop PostgreSQL on {self.data_dir}: {res.stderr.strip()}"
            raise EmbeddedDatabaseError(failed + self._server_log())
        self.started = False
        log.info("stopped the PostgreSQL server on %s", self.data_dir)

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _run(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        """Run a PostgreSQL binary, as the unprivileged user when we are root (they refuse root)."""
        pw = self._pw
        return subprocess.run(
            [str(self._bin / tool), *args],
            capture_output=True,
            text=True,
            cwd=self.data_dir,
            user=pw.pw_uid if pw else None,
            group=pw.pw_gid if pw else None,
            extra_groups=[] if pw else None,  # else the server would keep root's groups
        )

    def _running(self) -> bool:
        """pg_ctl status exits 0 when a live server owns the data folder."""
        return self._run("pg_ctl", "status", "-D", str(self.data_dir)).returncode == 0

    def _server_log(self) -> str:
        """The end of server.log, for error messages: that is where the server says what failed."""
        path = self.data_dir / "server.log"
        try:
            lines = path.read_text(errors="replace").splitlines()[-20:]
        except OSError as exc:
            lines = [f"({exc})"]
        return f"\nlast lines of {path}:\n" + "\n".join(lines)

    def _server_user(self) -> pwd.struct_passwd | None:
        """The OS user the binaries run as when we are root; None means "ourselves"."""
        if os.geteuid() != 0:
            return None
        name = self.os_user or "postgres"
        try:
            return pwd.getpwnam(name)
        except KeyError:
            raise EmbeddedDatabaseError(
                f"running as root, PostgreSQL must run as an unprivileged OS user, but user "
                f"{name!r} does not exist; create it (useradd --system {name}) or pick another"
            ) from None

    def _prepare_data_dir(self) -> None:
        """Create the folder, give it to the server's user, and check that user can reach it."""
        pw = self._pw
        try:
            os.makedirs(self.data_dir, exist_ok=True)
            if not (self.data_dir / "PG_VERSION").exists():
                if pw is not None:
                    os.chown(self.data_dir, pw.pw_uid, pw.pw_gid)
                os.chmod(self.data_dir, 0o700)
        except OSError as exc:
            raise EmbeddedDatabaseError(f"cannot prepare {self.data_dir}: {exc}") from exc
        if pw is None:
            return  # we run the binaries ourselves: makedirs would have failed already
        for parent in self.data_dir.resolve().parents:
            st = parent.stat()
            group_bit = stat.S_IXGRP if st.st_gid == pw.pw_gid else stat.S_IXOTH
            bit = stat.S_IXUSR if st.st_uid == pw.pw_uid else group_bit
            if not st.st_mode & bit:
                raise EmbeddedDatabaseError(
                    f"PostgreSQL runs as OS user {pw.pw_name!r}, which cannot enter {parent} "
                    f"(mode {stat.filemode(st.st_mode)}); choose a data folder it can reach, "
                    "such as /var/lib/tracker/postgres"
                )

    def _initdb(self) -> None:
        has_c_utf8 = "c.utf8" in command_output("locale", "-a").lower().replace("-", "")
        log.info("creating a new PostgreSQL cluster in %s", self.data_dir)
        res = self._run(
            "initdb",
            *("-D", str(self.data_dir), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8"),
            "--locale=C.UTF-8" if has_c_utf8 else "--no-locale",
        )
        if res.returncode != 0:
            output = (res.stdout + res.stderr).strip()
            raise EmbeddedDatabaseError(f"initdb failed in {self.data_dir}:\n{output}")
        self.created = True

    def _clear_zombie_lock(self) -> None:
        """Drop the lock files of a killed server not yet reaped (PID 1 may reap late or never):
        a zombie answers kill(pid, 0), so pg_ctl calls it running and a new server would refuse."""
        pid_file = self.data_dir / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().split()[0])
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, ValueError, IndexError):
            return  # no pid file, no such process, or no /proc: nothing to clear
        if state == "Z":
            log.warning("removing the lock files of dead PostgreSQL server %d", pid)
            pid_file.unlink(missing_ok=True)
            (self.data_dir / f".s.PGSQL.{PORT}.lock").unlink(missing_ok=True)

    def _pg_start(self) -> None:
        tuning = [arg for name, value in server_settings().items() for arg in ("-c", f"{name}={value}")]
        opts = shlex.join(["-c", "listen_addresses=", "-k", str(self.data_dir), "-p", str(PORT), *tuning])
        log.info("starting PostgreSQL on %s", self.data_dir)
        logfile = str(self.data_dir / "server.log")
        res = self._run("pg_ctl", "start", "-w", "-D", str(self.data_dir), "-l", logfile, "-o", opts)
        if res.returncode != 0:
            failed = f"could not start PostgreSQL on {self.data_dir}: {res.stderr.strip()}"
            raise EmbeddedDatabaseError(failed + self._server_log())
        self.started = True

    def _running_socket(self) -> tuple[str, int]:
        """Socket folder and port of a server someone else started, from its postmaster.pid."""
        pid_file = self.data_dir / "postmaster.pid"
        try:
            lines = pid_file.read_text().splitlines()
            port, socket_dir = int(lines[3]), lines[4].strip()
            if not socket_dir:
                raise ValueError("it listens on no Unix socket")
        except (OSError, IndexError, ValueError) as exc:
            raise EmbeddedDatabaseError(
                f"cannot reuse the server running on {self.data_dir} ({pid_file}: {exc}); "
                "stop it or pass --database-url"
            ) from exc
        return socket_dir, port

    async def _ensure_database(self, socket_dir: str, port: int) -> None:
        """Create the database and the PostGIS extension in it if they are missing."""
        create_db = 'CREATE DATABASE "{}"'.format(self.database.replace('"', '""'))
        try:
            conn = await asyncpg.connect(_url("postgres", socket_dir, port), timeout=10)
            try:
                sql = "SELECT 1 FROM pg_database WHERE datname = $1"
                if not await conn.fetchval(sql, self.database):
                    log.info("creating database %s", self.database)
                    await conn.execute(create_db)
            finally:
                await conn.close()
            conn = await asyncpg.connect(_url(self.database, socket_dir, port), timeout=10)
            try:
                await conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")
            finally:
                await conn.close()
        except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
            raise EmbeddedDatabaseError(
                f"cannot set up database {self.database!r} on the server of {self.data_dir} "
                f"(socket {socket_dir}): {exc}" + self._server_log()
            ) from exc
