"""The real `tracker serve` as every bench runs it, and the accounts a bench registers on it.

Policy: a bench's server is started by the shared harness (`tracker.tools.server_process`) with only the
settings the bench gives it (the caller's TRACKER_* variables are dropped), a fresh admin token, and a
per-device rate limit far above the load: benches measure the pipeline, not the limit. Accounts go
through the admin API, the supported way to add them, with a few dozen requests in flight: 10,000
devices one call after the other take minutes.
"""

from __future__ import annotations

import asyncio
import resource
import secrets
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx

from tracker.tools.bench.report import BenchError, progress
from tracker.tools.server_process import ServerProcess, clean_env, spawn_tracker

FLEET = "bench"
REGISTER_CONCURRENCY = 32


def server_env(server_settings: Sequence[str]) -> dict[str, str]:
    """`--server-setting NAME=VALUE` pairs as the server's `TRACKER_NAME` environment variables."""
    env: dict[str, str] = {}
    for pair in server_settings:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise BenchError(f"--server-setting takes NAME=VALUE such as INGEST_WRITERS=2; got {pair!r}")
        env["TRACKER_" + name.strip().upper()] = value
    return env


def start_server(
    db_url: str, folder: Path, settings: Mapping[str, str] | None = None, args: Sequence[str] = ()
) -> ServerProcess:
    """`tracker serve ARGS` (e.g. `--workers 2`) on `db_url` with `settings`, ready for clients."""
    env = {
        "TRACKER_ADMIN_TOKEN": "bench-admin-" + secrets.token_hex(16),
        # The load is many times a real phone's rate: measure the pipeline, not the per-device limit.
        "TRACKER_DEVICE_RATE": "1000000",
        # Benches load history into past days: rebuilding those days' indexes would run beside the
        # measurement (a bench that wants compacted days compacts them before it measures).
        "TRACKER_COMPACT_AFTER_S": "0",
        **(settings or {}),
    }
    server = spawn_tracker(db_url, folder, env, args, base_env=clean_env())
    progress(f"server pid {server.pid} on {server.url}; waiting for /readyz")
    return server.wait_ready()


def admin_headers(server: ServerProcess) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.env['TRACKER_ADMIN_TOKEN']}"}


async def register_devices(
    server: ServerProcess,
    ids: Sequence[str],
    fleets: Sequence[str] | None = None,
    concurrency: int = REGISTER_CONCURRENCY,
) -> list[str]:
    """Register `ids` (in `fleets`, one per id; default all in FLEET) through the admin API, with
    `concurrency` requests in flight; their tokens, in order."""
    started = time.perf_counter()
    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=server.url, timeout=30, headers=admin_headers(server), limits=limits
    ) as http:

        async def one(device: str, fleet: str) -> str:
            async with gate:
                r = await http.post("/api/admin/devices", json={"id": device, "fleet": fleet})
            if r.status_code != 201:
                raise BenchError(f"registering {device} failed: {r.status_code} {r.text:.300}")
            return str(r.json()["token"])

        fleet_of = fleets if fleets is not None else [FLEET] * len(ids)
        tokens = list(await asyncio.gather(*(one(d, f) for d, f in zip(ids, fleet_of, strict=True))))
    progress(f"registered {len(ids)} devices in {time.perf_counter() - started:.1f} s")
    return tokens


def register_viewer(server: ServerProcess, name: str, fleets: list[str] | str) -> str:
    """A viewer of `fleets` (a list, or "all") named `name`; its token."""
    r = httpx.post(
        server.url + "/api/admin/viewers",
        json={"name": name, "fleets": fleets},
        headers=admin_headers(server),
        timeout=30,
    )
    if r.status_code != 201:
        raise BenchError(f"registering the viewer failed: {r.status_code} {r.text:.300}")
    return str(r.json()["token"])


def raise_fd_limit(needed: int) -> int:
    """Raise this process's soft descriptor limit to the hard one (children inherit it); the limit.
    BenchError when even the hard limit is below `needed`: a socket per device needs a descriptor on
    each end."""
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
