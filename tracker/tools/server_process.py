"""A server in a child process on a loopback port: started, waited for until it answers, stopped.

The one harness of the tests and the benchmarks: both start the real `tracker serve` through
`spawn_tracker` (the fleet bench also its bare baseline through `ServerProcess.spawn`), so how a server is
started, found ready and stopped is written once. Policy: stdout and stderr go to a log file beside the
run; a server is ready when an HTTP path answers 200 (`/readyz` for the tracker), polled until a
deadline; one that exits first or never answers is stopped and raises `ServerProcessError` ending with
its log's last lines. Stopping is a signal (SIGTERM), then SIGKILL after STOP_TIMEOUT_S. An error in the
log is a JSON line (the tracker's format) at level error or critical or carrying a traceback, or any other
line that says ERROR or Traceback.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson

from tracker.errors import TrackerError

HOST = "127.0.0.1"
READY_PATH = "/readyz"
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
LOG_TAIL_LINES = 40


class ServerProcessError(TrackerError, RuntimeError):
    """A server process exited, or did not answer in time; the message ends with its log's last lines."""


def free_port() -> int:
    """A TCP port of the loopback interface that nothing listens on now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def clean_env() -> dict[str, str]:
    """This process's environment without TRACKER_* settings, so that only a child's own apply."""
    return {k: v for k, v in os.environ.items() if not k.startswith("TRACKER_")}


@dataclass
class ServerProcess:
    """A server process listening on `url`, its output in `log`, started with `env`."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.process.pid

    @classmethod
    def spawn(
        cls, argv: Sequence[str], port: int, log: Path, env: Mapping[str, str], cwd: Path | None = None
    ) -> ServerProcess:
        """Start `argv`, a server that will listen on `port`, its output into `log`; not waited for."""
        with log.open("wb") as sink:
            process = subprocess.Popen(
                list(argv), env=dict(env), stdin=subprocess.DEVNULL, stdout=sink, stderr=sink, cwd=cwd
            )
        return cls(f"http://{HOST}:{port}", process, log, dict(env))

    def wait_ready(self, path: str = READY_PATH, timeout: float = READY_TIMEOUT_S) -> ServerProcess:
        """Poll `path` until it answers 200 and return this server; if the process exits first or
        `timeout` passes, stop it and raise ServerProcessError."""
        deadline = time.monotonic() + timeout
        try:
            with httpx.Client(timeout=2) as http:
                while time.monotonic() < deadline:
                    self.check_alive()
                    try:
                        if http.get(self.url + path).status_code == 200:
                            return self
                    except httpx.HTTPError:
                        pass
                    time.sleep(0.1)  # poll interval, bounded by the deadline
            raise ServerProcessError(f"server not ready within {timeout:.0f} s:\n{self.log_tail()}")
        except BaseException:
            self.stop()
            raise

    def check_alive(self) -> None:
        """Raise ServerProcessError if the process has exited."""
        if self.process.poll() is not None:
            raise ServerProcessError(f"server exited with {self.process.returncode}:\n{self.log_tail()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Send `sig` and wait for the exit; SIGKILL after STOP_TIMEOUT_S. Nothing if it has exited."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            return "\n".join(self.log_text().splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    def log_size(self) -> int:
        """How many bytes the log holds now: a mark for `log_error_samples(since=...)`."""
        try:
            return self.log.stat().st_size
        except OSError:
            return 0

    def log_error_lines(self, since: int = 0) -> int:
        """How many lines of the log (from byte `since` on) are errors or start a traceback."""
        return len(self._error_lines(since))

    def log_error_samples(self, limit: int = 5, since: int = 0) -> list[str]:
        """Up to `limit` distinct lines (their first 300 characters) of those `log_error_lines` counts."""
        found: list[str] = []
        for line in self._error_lines(since):
            if line[:300] not in found:
                found.append(line[:300])
                if len(found) == limit:
                    break
        return found

    def _error_lines(self, since: int) -> list[str]:
        try:
            with self.log.open("rb") as f:
                f.seek(since)
                text = f.read().decode(errors="replace")
        except OSError:
            return []
        return [line for line in text.splitlines() if _is_error(line)]


_ERROR_LEVELS = frozenset({"error", "critical"})


def _is_error(line: str) -> bool:
    """True for a log line that reports an error: by its level and traceback when it is one of the
    tracker's JSON lines, else by the words ERROR or Traceback."""
    if line.startswith("{"):
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            record = None
        if isinstance(record, dict) and "level" in record:
            return record["level"] in _ERROR_LEVELS or "exc" in record
    return "ERROR" in line or "Traceback" in line


def spawn_tracker(
    database_url: str | None,
    folder: Path,
    settings: Mapping[str, str] | None = None,
    args: Sequence[str] = (),
    *,
    port: int | None = None,
    base_env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> ServerProcess:
    """`tracker serve ARGS` on `port` (else a free one) with fleet rules from `folder/geofences` (made
    when missing) and its log in `folder`; not waited for (`.wait_ready()`).

    The environment is `base_env` (default: this process's), then the port, host and rules folder, then
    `settings` (TRACKER_* variables), then `database_url` when given."""
    port = port or free_port()
    rules = folder / "geofences"
    rules.mkdir(parents=True, exist_ok=True)
    env = {
        **(os.environ if base_env is None else base_env),
        "TRACKER_PORT": str(port),
        "TRACKER_HOST": HOST,
        "TRACKER_GEOFENCES": str(rules),
        **(settings or {}),
    }
    if database_url:
        env["TRACKER_DATABASE_URL"] = database_url
    argv = [sys.executable, "-m", "tracker", "serve", *args]
    return ServerProcess.spawn(argv, port, folder / f"server-{port}.log", env, cwd)
