"""The two servers of a run, each on a free port in its own process tree, and the accounts they need.

The tracker is the real `tracker serve` (`tracker.tools.bench.base._Server`) on a scratch database, with
its own settings as `TRACKER_*` variables and `--workers N` when asked. The baseline is
`tracker.tools.bench.fleet.bare` under the same uvicorn options. Both are started after the
file-descriptor limit is raised to its hard maximum, which they and the Node generators inherit:
10,000 sockets need 10,000 descriptors on each end.

Registering 10,000 devices one HTTP call after the other takes minutes, so the admin API is called with
a few dozen requests in flight (it is the supported way to add devices; the store has no bulk insert).
"""

from __future__ import annotations

import asyncio
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import httpx

from tracker.tools.bench.base import FLEET, BenchError, _child_env, _free_port, _Server, progress

REGISTER_CONCURRENCY = 32
VIEWER_NAME = "bench-fleet-viewer"


def raise_fd_limit(needed: int) -> int:
    """Raise this process's soft descriptor limit to the hard one (children inherit it); the limit.
    BenchError when even the hard limit is below `needed`."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise BenchError(
            f"{needed} file descriptors are needed but the hard limit is {hard}: raise it "
            "(ulimit -Hn, or LimitNOFILE= for a service) or pass fewer --devices"
        )
    target = hard if hard != resource.RLIM_INFINITY else max(soft, needed)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return int(target)


def check_workers_flag() -> None:
    """BenchError unless `tracker serve` takes `--workers`."""
    help_text = subprocess.run(
        [sys.executable, "-m", "tracker", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env=_child_env(),
    ).stdout
    if "--workers" not in help_text:
        raise BenchError("--workers: this `tracker serve` has no --workers flag (see `tracker serve --help`)")


def start_tracker(db_url: str, tmp: Path, env: dict[str, str], workers: int | None) -> _Server:
    """The real server, ready (coroutine-free: it blocks until /readyz answers)."""
    args = ["--workers", str(workers)] if workers is not None else []
    return _Server.start(db_url, tmp, env, args)


async def register_devices(server: _Server, ids: list[str]) -> list[str]:
    """Register `ids` in fleet `bench` through the admin API, many requests in flight; their tokens."""
    started = time.perf_counter()
    gate = asyncio.Semaphore(REGISTER_CONCURRENCY)
    headers = {"Authorization": f"Bearer {server.admin_token}"}
    limits = httpx.Limits(max_connections=REGISTER_CONCURRENCY)
    async with httpx.AsyncClient(base_url=server.url, timeout=30, headers=headers, limits=limits) as http:

        async def one(device: str) -> str:
            async with gate:
                r = await http.post("/api/admin/devices", json={"id": device, "fleet": FLEET})
            if r.status_code != 201:
                raise BenchError(f"registering {device} failed: {r.status_code} {r.text:.300}")
            return str(r.json()["token"])

        tokens = list(await asyncio.gather(*(one(d) for d in ids)))
    progress(f"registered {len(ids)} devices in {time.perf_counter() - started:.1f} s")
    return tokens


def error_samples(log: Path, limit: int = 5) -> list[str]:
    """Up to `limit` distinct ERROR or Traceback lines of a server's log (what log_error_lines counts)."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return []
    found: list[str] = []
    for line in text.splitlines():
        if ("ERROR" in line or "Traceback" in line) and line[:300] not in found:
            found.append(line[:300])
            if len(found) == limit:
                break
    return found


def register_viewer(server: _Server) -> str:
    """A viewer of fleet `bench`; its token."""
    headers = {"Authorization": f"Bearer {server.admin_token}"}
    r = httpx.post(
        server.url + "/api/admin/viewers",
        json={"name": VIEWER_NAME, "fleets": [FLEET]},
        headers=headers,
        timeout=30,
    )
    if r.status_code != 201:
        raise BenchError(f"registering the viewer failed: {r.status_code} {r.text:.300}")
    return str(r.json()["token"])


@dataclass
class BareServer(_Server):
    """`python -m tracker.tools.bench.fleet.bare` on a free port, handled as the tracker's server is (alive
    checks, stop, log), ready once Engine.IO answers a handshake."""

    ready_path: ClassVar[str] = "/socket.io/?EIO=4&transport=polling"

    @classmethod
    def launch(cls, tmp: Path, gc_mode: str = "apply") -> BareServer:
        port = _free_port()
        log = tmp / "bare.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tracker.tools.bench.fleet.bare",
                    "--port",
                    str(port),
                    "--gc",
                    gc_mode,
                ],
                env=_child_env(),
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=sink,
            )
        server = cls(f"http://127.0.0.1:{port}", "", process, log)
        progress(f"bare python-socketio server pid {process.pid} on {server.url}")
        try:
            server._wait_ready()
        except BaseException:
            server.stop()
            raise
        return server
