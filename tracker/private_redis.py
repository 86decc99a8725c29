"""A private `redis-server` for the processes of one server (or one benchmark run), started and stopped here.

Policy: `tracker serve --workers N` (N > 1) with no Redis URL starts one, so that its workers share Socket.IO
rooms and their live indexes with nothing for the user to set up. It listens on a Unix socket in a fresh
folder of mode 0700 (no TCP port: nothing else on the machine can reach it, and it can clash with no other
Redis), or on a loopback port when asked (`tcp=True`, a free one, or `port=`: a server started again where
clients look for the one that stopped, as the Redis outage test does). It keeps nothing on disk (no RDB
snapshots, no AOF): what passes through it is live traffic, and PostGIS holds everything durable. It runs in
a session of its own, so a Ctrl-C in the terminal reaches the workers but not it; the owner stops it after
them, with `stop()` or by leaving the `with` block, and on Linux it gets SIGTERM if its owner dies first.
"""

from __future__ import annotations

import ctypes
import logging
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from tracker.errors import PrivateRedisError

log = logging.getLogger("tracker.private_redis")

READY_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0
INSTALL = "apt-get install -y redis-server"
# Publishers outpace a subscriber for a moment under a burst of positions; Redis' default (32 MB, or 8 MB
# for 60 s) would drop that worker's subscription. A private server has only our own workers as clients.
_PUBSUB_BUFFER = "pubsub 256mb 64mb 60"
_PR_SET_PDEATHSIG = 1


def find_redis_server() -> str:
    """The path of `redis-server` on PATH; PrivateRedisError naming the package to install if missing."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise PrivateRedisError(f"redis-server is not installed (not on PATH); install it with: {INSTALL}")
    return exe


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the process that started it dies, even by SIGKILL (Linux),
    so that a supervisor killed hard leaves no redis-server behind."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: stop() still stops it


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateRedis:
    """One `redis-server` of our own. `start()` returns its URL (`unix://...` or `redis://127.0.0.1:<port>`)."""

    def __init__(self, folder: Path | None = None, *, tcp: bool = False, port: int | None = None) -> None:
        self._given = folder  # where its log (and socket) go; None: a temporary folder, removed on stop
        self._tcp = tcp or port is not None
        self.folder: Path | None = None
        self.port: int | None = port  # with tcp and no port, a free one is chosen at start
        self.url = ""
        self.version: str | None = None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None, "not started"
        return self.process.pid

    @property
    def log(self) -> Path:
        assert self.folder is not None, "not started"
        return self.folder / "redis.log"

    def start(self) -> str:
        """Start the server and wait (bounded) until it answers PING; return its URL."""
        import redis

        exe = find_redis_server()
        if self._given is not None:
            self._given.mkdir(parents=True, exist_ok=True)
            self.folder = self._given
        else:
            self.folder = Path(tempfile.mkdtemp(prefix="tracker-redis-"))  # mode 0700
        args = [exe, "--save", "", "--appendonly", "no", "--dir", str(self.folder), "--daemonize", "no"]
        args += ["--loglevel", "warning", "--client-output-buffer-limit", _PUBSUB_BUFFER]
        if self._tcp:
            self.port = self.port or _free_port()
            args += ["--port", str(self.port), "--bind", "127.0.0.1"]
            self.url = f"redis://127.0.0.1:{self.port}/0"
            client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)
        else:
            sock = self.folder / "redis.sock"
            if len(str(sock)) > 100:  # sun_path holds 107 bytes
                raise PrivateRedisError(f"the folder '{self.folder}' is too long a path for a Unix socket")
            args += ["--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700"]
            self.url = f"unix://{sock}?db=0"
            client = redis.Redis(unix_socket_path=str(sock), socket_timeout=2)
        with self.log.open("wb") as sink:
            self.process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=sink,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + READY_TIMEOUT_S
        try:
            with client:
                while True:
                    self.check_alive()
                    try:
                        info: dict[str, object] = client.info("server")  # type: ignore[assignment]
                        self.version = str(info.get("redis_version"))
                        break
                    except redis.RedisError:
                        if time.monotonic() > deadline:
                            raise PrivateRedisError(
                                f"redis-server not ready within {READY_TIMEOUT_S:.0f} s (log: {self.log})"
                            ) from None
                        time.sleep(0.05)  # poll interval, bounded by the deadline
        except BaseException:
            self.stop()
            raise
        log.info("private redis-server %s pid %d at %s", self.version, self.process.pid, self.url)
        return self.url

    def check_alive(self) -> None:
        """PrivateRedisError, with the tail of its log, if the server has exited."""
        if self.process is not None and self.process.poll() is not None:
            tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise PrivateRedisError(f"redis-server exited with {self.process.returncode}:\n{tail}")

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after STOP_TIMEOUT_S) and remove a temporary folder."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._given is None and self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
