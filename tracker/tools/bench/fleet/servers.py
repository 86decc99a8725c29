"""The two servers of a run, each on a free port in its own process tree, both through the shared
harness (`tracker.tools.server_process`).

The tracker is the real `tracker serve` as every bench starts it (`tracker.tools.bench.server`), with its
own settings as `TRACKER_*` variables and `--workers N` when asked. The baseline is
`tracker.tools.bench.fleet.bare` under the same uvicorn options, ready once Engine.IO answers a
handshake. Both are started after the file-descriptor limit is raised to its hard maximum, which they
and the Node generators inherit: 10,000 sockets need 10,000 descriptors on each end.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tracker.tools.bench.report import BenchError, progress
from tracker.tools.bench.server import start_server
from tracker.tools.server_process import ServerProcess, clean_env, free_port

VIEWER_NAME = "bench-fleet-viewer"
BARE_READY_PATH = "/socket.io/?EIO=4&transport=polling"


def check_workers_flag() -> None:
    """BenchError unless `tracker serve` takes `--workers`."""
    help_text = subprocess.run(
        [sys.executable, "-m", "tracker", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
    ).stdout
    if "--workers" not in help_text:
        raise BenchError("--workers: this `tracker serve` has no --workers flag (see `tracker serve --help`)")


def start_tracker(db_url: str, tmp: Path, env: dict[str, str], workers: int | None) -> ServerProcess:
    """The real server, ready (coroutine-free: it blocks until /readyz answers)."""
    args = ["--workers", str(workers)] if workers is not None else []
    return start_server(db_url, tmp, env, args)


def start_bare(tmp: Path, gc_mode: str = "apply") -> ServerProcess:
    """`python -m tracker.tools.bench.fleet.bare` on a free port, ready once Engine.IO answers."""
    port = free_port()
    argv = [sys.executable, "-m", "tracker.tools.bench.fleet.bare", "--port", str(port), "--gc", gc_mode]
    server = ServerProcess.spawn(argv, port, tmp / "bare.log", clean_env())
    progress(f"bare python-socketio server pid {server.pid} on {server.url}")
    return server.wait_ready(BARE_READY_PATH)
