"""A feed's source of positions, before the page opens: for the server feed, devices registered through the
admin API and the load generator that connects them; for the redis feed, the feed process on the private
redis-server. Each returns the started worker with its figures for the report. Both workers are
`python -m tracker.tools.bench.map` with a flag, speaking the benches' line protocol."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from tracker.private_redis import PrivateRedis
from tracker.tools.bench.line_protocol import WorkerProcess
from tracker.tools.bench.map.feed import BROADCAST_INTERVAL_MS
from tracker.tools.bench.map.redis_server import REDIS_READY_TIMEOUT_S
from tracker.tools.bench.map.walk import FLEETS, device_id
from tracker.tools.bench.procfs import proc_cpu_s
from tracker.tools.bench.report import BenchError, progress
from tracker.tools.bench.server import register_devices
from tracker.tools.server_process import ServerProcess

WORKER_FLAG = "--worker"
FEED_FLAG = "--feed-worker"
REGISTER_CONCURRENCY = 20
CONNECT_CONCURRENCY = 100


async def start_worker(
    name: str, flag: str, config: dict[str, Any], timeout: float, check: Callable[[dict[str, Any]], None]
) -> tuple[WorkerProcess, dict[str, Any]]:
    """`python -m tracker.tools.bench.map FLAG` (the load generator or the feed), `config` sent; returns it
    with its first answer once `check` accepts that, else closes it again."""
    argv = [sys.executable, "-m", "tracker.tools.bench.map", flag]
    worker = await WorkerProcess.start(name, argv, config, line_limit=2**24, close_timeout=60)
    try:
        first = await worker.read(timeout)
        first.pop("event", None)
        check(first)
    except BaseException:
        await worker.close()
        raise
    return worker, first


async def register_fleet(server: ServerProcess, n: int) -> tuple[list[str], dict[str, Any]]:
    """`n` devices, spread over FLEETS, through the admin API with a few requests in flight; returns their
    tokens and the registration's figures."""
    progress(f"registering {n} devices ({REGISTER_CONCURRENCY} requests in flight)")
    cpu0, t0 = proc_cpu_s(server.pid), time.perf_counter()
    ids, fleets = [device_id(i) for i in range(n)], [FLEETS[i % len(FLEETS)] for i in range(n)]
    tokens = await register_devices(server, ids, fleets, REGISTER_CONCURRENCY)
    wall, cpu1 = time.perf_counter() - t0, proc_cpu_s(server.pid)
    return tokens, {
        "devices": n,
        "seconds": round(wall, 2),
        "per_s": round(n / wall, 1),
        "concurrency": REGISTER_CONCURRENCY,
        "server_cpu_s": None if cpu0 is None or cpu1 is None else round(cpu1 - cpu0, 2),
    }


async def start_load_generator(
    server: ServerProcess, tokens: list[str], rate: float
) -> tuple[WorkerProcess, dict[str, Any]]:
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

    def connected(connect: dict[str, Any]) -> None:
        progress(
            f"{connect['connected']} devices connected in {connect['connect_s']} s "
            f"({connect['failed']} failed), load generator {connect['rss_mb']} MB"
        )
        if not connect["connected"]:
            raise BenchError(f"no device could connect: {connect['failure_samples']}")

    return await start_worker("the load generator", WORKER_FLAG, config, 120 + n / 20, connected)


async def start_feed(redis: PrivateRedis, n: int, rate: float) -> tuple[WorkerProcess, dict[str, Any]]:
    """The feed of `n` devices into `redis`; returns it once it reaches Redis, with its ready answer."""
    progress(f"starting the feed of {n} devices into {redis.url}")
    config = {
        "redis_url": redis.url,
        "devices": n,
        "rate": rate,
        "interval_ms": BROADCAST_INTERVAL_MS,
        "seed": 20260303,
    }
    return await start_worker("the feed", FEED_FLAG, config, REDIS_READY_TIMEOUT_S + 30, lambda ready: None)
