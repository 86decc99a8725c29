"""A private `redis-server` for the redis feed, on a free loopback port for one feed's part of the run:
the server's own `tracker.private_redis`, with the bench's error and progress line."""

from __future__ import annotations

from pathlib import Path

from tracker.errors import PrivateRedisError
from tracker.private_redis import READY_TIMEOUT_S, PrivateRedis
from tracker.tools.bench.report import BenchError, progress

REDIS_READY_TIMEOUT_S = READY_TIMEOUT_S


def start_redis(folder: Path) -> PrivateRedis:
    """A started private Redis with its log in `folder`; BenchError if it cannot start."""
    redis = PrivateRedis(folder, tcp=True)
    try:
        redis.start()
    except PrivateRedisError as exc:
        raise BenchError(f"{exc} (or pass --feed server)") from None
    progress(f"redis-server pid {redis.pid} on {redis.url} (private to this run)")
    return redis
