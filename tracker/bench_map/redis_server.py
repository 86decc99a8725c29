"""A private `redis-server` for the redis feed, started on a free port for one feed's part of the run."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tracker.bench import BenchError, _free_port, progress

REDIS_READY_TIMEOUT_S = 15.0


@dataclass
class _Redis:
    """A private `redis-server` on a free port, for one run: nobody else hears the feed, nor it them."""

    port: int
    process: subprocess.Popen[bytes]
    log: Path
    version: str | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        return self.process.pid

    @classmethod
    def start(cls, folder: Path) -> _Redis:
        import redis

        exe = shutil.which("redis-server")
        if exe is None:
            raise BenchError("redis-server is not on PATH: install it or pass --feed server")
        port = _free_port()
        log = folder / "redis.log"
        args = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        args += ["--dir", str(folder), "--daemonize", "no", "--loglevel", "warning"]
        with log.open("wb") as sink:
            process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=sink, stderr=sink)
        server = cls(port, process, log)
        progress(f"redis-server pid {process.pid} on 127.0.0.1:{port} (private to this run)")
        deadline = time.monotonic() + REDIS_READY_TIMEOUT_S
        try:
            while True:
                server.check_alive()
                try:
                    with redis.Redis(host="127.0.0.1", port=port, socket_timeout=2) as client:
                        server.version = str(client.info("server").get("redis_version"))
                    return server
                except redis.RedisError:
                    if time.monotonic() > deadline:
                        raise BenchError(
                            f"redis-server not ready within {REDIS_READY_TIMEOUT_S:.0f} s"
                        ) from None
                    time.sleep(0.1)  # poll interval, bounded by the deadline
        except BaseException:
            server.stop()
            raise

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise BenchError(f"redis-server exited with {self.process.returncode}:\n{tail}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
