"""Sharing the live index between server processes through Redis.

With `--redis-url`, Socket.IO rooms are shared, so a viewer on one process receives positions ingested by
another; but each process's live index (snapshots on subscribe, `last` in `/api/devices`) would only know
its own devices. So every process publishes the positions that moved, coalesced per interval, on one
Redis channel, and applies what the others publish. Applying is forward-only like any update of the
index, so order between processes and redelivery do not matter.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from collections.abc import Iterable
from typing import Any

import orjson
import redis.asyncio as aioredis

from tracker.index import LiveIndex
from tracker.model import Position

log = logging.getLogger("tracker.livesync")

CHANNEL = "tracker:live"


class LiveSync:
    """Publishes this process's moves and applies the other processes' moves to the live index."""

    def __init__(self, redis_url: str, index: LiveIndex, interval_ms: int) -> None:
        self._redis = aioredis.from_url(redis_url)  # type: ignore[no-untyped-call]
        self._index = index
        self._interval = interval_ms / 1000
        self._origin = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._pending: dict[str, Position] = {}

    async def ping(self, timeout: float = 1.0) -> bool:
        """True when Redis answers within `timeout` seconds (coroutine)."""
        try:
            return bool(await asyncio.wait_for(self._redis.ping(), timeout))
        except (OSError, TimeoutError, aioredis.RedisError):
            return False

    def offer(self, positions: Iterable[Position]) -> None:
        """Queue moved positions for the next publish (newest per device wins)."""
        for p in positions:
            self._pending[p.device] = p

    async def run(self) -> None:
        """Publish every interval and apply what others publish, until cancelled (coroutine)."""
        pubsub = self._redis.pubsub()
        await pubsub.subscribe(CHANNEL)
        reader = asyncio.create_task(self._apply(pubsub), name="livesync-reader")
        try:
            while True:
                await asyncio.sleep(self._interval)
                await self.publish()
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            await pubsub.aclose()
            await self._redis.aclose()

    async def publish(self) -> None:
        """Send the pending moves as one message (coroutine); a failure is logged and they are dropped."""
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        message = {"origin": self._origin, "positions": [_encode(p) for p in pending.values()]}
        try:
            await self._redis.publish(CHANNEL, orjson.dumps(message))
        except (OSError, aioredis.RedisError) as exc:
            log.warning("publishing %d live positions to Redis failed: %s", len(pending), exc)

    async def _apply(self, pubsub: Any) -> None:
        while True:
            try:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is None:
                    continue
                data = orjson.loads(message["data"])
                if data.get("origin") != self._origin:
                    self._index.load(_decode(item) for item in data["positions"])
            except asyncio.CancelledError:
                raise
            except Exception:  # a bad message or a Redis hiccup must not end the reader
                log.warning("applying live positions from Redis failed", exc_info=True)
                await asyncio.sleep(1)


def _encode(p: Position) -> list[Any]:
    return [p.device, p.fleet, p.ts, p.lat, p.lon, p.speed, p.heading, p.cell]


def _decode(item: list[Any]) -> tuple[Position, int]:
    position = Position(*item)
    return position, int(position.cell, 16)
