"""A feed's source of positions, before the page opens: for the server feed, devices registered through the
admin API and the load generator that connects them; for the redis feed, the feed process on the private
redis-server. Each returns the started worker with its figures for the report."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from tracker.tools.bench.base import BenchError, _Server, proc_cpu_s, progress
from tracker.tools.bench.map.feed import BROADCAST_INTERVAL_MS
from tracker.tools.bench.map.redis_server import REDIS_READY_TIMEOUT_S, _Redis
from tracker.tools.bench.map.walk import FLEETS, device_id
from tracker.tools.bench.map.workers import _FEED_FLAG, _WORKER_FLAG, _Child

REGISTER_CONCURRENCY = 20
CONNECT_CONCURRENCY = 100


async def _register_devices(server: _Server, n: int) -> tuple[list[str], dict[str, Any]]:
    """`n` devices, spread over FLEETS, through the admin API with a few requests in flight; returns their
    tokens and the registration's figures."""
    progress(f"registering {n} devices ({REGISTER_CONCURRENCY} requests in flight)")
    headers = {"Authorization": f"Bearer {server.admin_token}"}
    limit = asyncio.Semaphore(REGISTER_CONCURRENCY)
    cpu0, t0 = proc_cpu_s(server.pid), time.perf_counter()
    async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=30) as http:

        async def one(i: int) -> str:
            fleet = FLEETS[i % len(FLEETS)]
            async with limit:
                r = await http.post("/api/admin/devices", json={"id": device_id(i), "fleet": fleet})
            if r.status_code != 201:
                raise BenchError(f"registering device {i} failed: {r.status_code} {r.text:.300}")
            return str(r.json()["token"])

        tokens = list(await asyncio.gather(*(one(i) for i in range(n))))
    wall, cpu1 = time.perf_counter() - t0, proc_cpu_s(server.pid)
    progress(f"registered {n} devices in {wall:.1f} s")
    return tokens, {
        "devices": n,
        "seconds": round(wall, 2),
        "per_s": round(n / wall, 1),
        "concurrency": REGISTER_CONCURRENCY,
        "server_cpu_s": None if cpu0 is None or cpu1 is None else round(cpu1 - cpu0, 2),
    }


async def _start_load_generator(
    server: _Server, tokens: list[str], rate: float
) -> tuple[_Child, dict[str, Any]]:
    """The load generator with one device connection per token; returns it once they are connected, with the
    connection figures (closed again if none connects)."""
    n = len(tokens)
    progress(f"connecting {n} devices from the load generator")
    config = {
        "url": server.url,
        "tokens": tokens,
        "rate": rate,
        "connect_concurrency": CONNECT_CONCURRENCY,
        "seed": 20260302,
    }
    source = await _Child.start("the load generator", _WORKER_FLAG, config)
    try:
        connect = await source.read(120 + n / 20)
        connect.pop("event", None)
        progress(
            f"{connect['connected']} devices connected in {connect['connect_s']} s "
            f"({connect['failed']} failed), load generator {connect['rss_mb']} MB"
        )
        if not connect["connected"]:
            raise BenchError(f"no device could connect: {connect['failure_samples']}")
    except BaseException:
        await source.close()
        raise
    return source, connect


async def _start_feed(redis: _Redis, n: int, rate: float) -> tuple[_Child, dict[str, Any]]:
    """The feed of `n` devices into `redis`; returns it once it reaches Redis, with its ready answer."""
    progress(f"starting the feed of {n} devices into {redis.url}")
    config = {
        "redis_url": redis.url,
        "devices": n,
        "rate": rate,
        "interval_ms": BROADCAST_INTERVAL_MS,
        "seed": 20260303,
    }
    source = await _Child.start("the feed", _FEED_FLAG, config)
    try:
        ready = await source.read(REDIS_READY_TIMEOUT_S + 30)
    except BaseException:
        await source.close()
        raise
    ready.pop("event", None)
    return source, ready
