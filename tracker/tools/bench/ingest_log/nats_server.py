"""A private `nats-server` with JetStream for one bench run: file storage in a folder of the run, a port
the server picks itself, stopped (and its folder left to the caller) at the end.

Policy: the server chooses a free loopback port (`-p -1`) and writes it to a ports file, so that no
other process can take the port between our choice and its bind; it is ready when a client connects.
A missing binary is a BenchError naming the Debian package.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

from tracker.tools.bench.report import BenchError, progress

INSTALL = "apt-get install -y nats-server"
READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0


class NatsServer:
    """One nats-server with JetStream; `start()` returns its URL."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.url = ""
        self.version: str | None = None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None, "not started"
        return self.process.pid

    @property
    def log(self) -> Path:
        return self.folder / "nats-server.log"

    def start(self) -> str:
        """Start the server and wait (bounded) for its ports file; its URL."""
        exe = shutil.which("nats-server") or shutil.which("nats-server", path="/usr/sbin")  # Debian's
        if exe is None:
            raise BenchError(f"nats-server is not installed (not on PATH); install it with: {INSTALL}")
        self.version = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.strip()
        self.folder.mkdir(parents=True, exist_ok=True)
        args = [exe, "-a", "127.0.0.1", "-p", "-1", "-js", "-sd", str(self.folder / "jetstream")]
        args += ["--ports_file_dir", str(self.folder), "-l", str(self.log)]
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        ports = self.folder / f"nats-server_{self.process.pid}.ports"
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not ports.exists() or not ports.read_text().strip():
            if self.process.poll() is not None:
                raise BenchError(f"nats-server exited with {self.process.returncode}: {self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise BenchError(f"nats-server wrote no ports file within {READY_TIMEOUT_S:.0f} s")
            time.sleep(0.05)  # poll interval, bounded by the deadline
        self.url = json.loads(ports.read_text())["nats"][0]
        progress(f"{self.version} pid {self.pid} on {self.url}, JetStream in {self.folder}")
        return self.url

    def check_alive(self) -> None:
        """BenchError, with the end of its log, if the server has exited."""
        if self.process is not None and self.process.poll() is not None:
            raise BenchError(f"nats-server exited with {self.process.returncode}: {self.log_tail()}")

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT_S."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
