"""Sharing the live index between server processes through Redis.

With `--redis-url`, Socket.IO rooms are shared, so a viewer on one process receives positions ingested by
another; but each process's live index (snapshots on subscribe, `last` in `/api/devices`) would only know
its own devices. So every process publishes the positions that moved, coalesced per interval, on one
Redis channel, and applies what the others publish. Applying is forward-only like any update of the
index, so order between processes and redelivery do not matter.

A Redis outage loses what was published meanwhile, so catching up is part of subscribing: whenever the
reader (re)subscribes it asks the others to resend, and resends itself, the current positions of the
devices each process has moved ("held"), taken from its index. Whoever subscribes last asks; whoever was
subscribed first answers. A process applies such a catch-up like any message and also hands the
positions that moved its index forward to `on_catch_up`, so that its own viewers, who missed those moves
in their rooms too, see them. While Redis is down nothing is published (`tracker.redis_link`); a failed
publish asks for the same resend once Redis is back.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import orjson

from tracker.index import LiveIndex
from tracker.model import Position
from tracker.redis_link import ERRORS, RETRY_S, RedisLink, client

log = logging.getLogger("tracker.livesync")

READ_TIMEOUT_S = 1.0  # the reader wakes at least this often, to probe after a publisher's failure


class LiveSync:
    """Publishes this process's moves and applies the other processes' moves to the live index."""

    def __init__(
        self,
        redis_url: str,
        namespace: str,
        index: LiveIndex,
        interval_ms: int,
        on_catch_up: Callable[[list[Position]], Awaitable[None]] | None = None,
    ) -> None:
        self._redis = client(redis_url)
        self._channel = f"{namespace}:live"
        self._index = index
        self._interval = interval_ms / 1000
        self._on_catch_up = on_catch_up
        self._origin = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._pending: dict[str, Position] = {}
        self._held: set[str] = set()  # devices whose moves this process published
        self._resend = False  # publish the held devices' positions at the next interval
        self.link = RedisLink(
            "live positions", "other processes' snapshots miss this process's moves until it is back"
        )

    async def ping(self, timeout: float = 1.0) -> bool:
        """True when Redis answers within `timeout` seconds (coroutine)."""
        try:
            return bool(await asyncio.wait_for(self._redis.ping(), timeout))
        except ERRORS:
            return False

    def offer(self, positions: Iterable[Position]) -> None:
        """Queue moved positions for the next publish (newest per device wins)."""
        for p in positions:
            self._pending[p.device] = p
            self._held.add(p.device)

    async def run(self) -> None:
        """Publish every interval and apply what others publish, until cancelled (coroutine)."""
        reader = asyncio.create_task(self._read(), name="livesync-reader")
        try:
            while True:
                await asyncio.sleep(self._interval)
                await self.publish()
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            await self._redis.aclose()

    async def publish(self) -> None:
        """Send the pending moves (with a resend asked for, the held devices' positions) as one message
        (coroutine). Nothing is sent while Redis is down; a failure is logged once and asks for a resend."""
        if not self.link.up:
            self._pending.clear()  # the resend after the outage covers them
            return
        catch_up = self._resend
        if catch_up:
            self._resend = False
            self._pending |= self._held_positions()
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        message: dict[str, Any] = {
            "origin": self._origin,
            "positions": [_encode(p) for p in pending.values()],
        }
        if catch_up:
            message["catch_up"] = True
        try:
            await self._redis.publish(self._channel, orjson.dumps(message))
        except ERRORS as exc:
            self.link.failed(exc)
            self._resend = True
        else:
            self.link.ok()

    def _held_positions(self) -> dict[str, Position]:
        """The index's newest position of each held device (an erased device is no longer held)."""
        out: dict[str, Position] = {}
        for device in list(self._held):
            position = self._index.get(device)
            if position is None:
                self._held.discard(device)
            else:
                out[device] = position
        return out

    async def _read(self) -> None:
        """Subscribe, ask for a catch-up, apply messages; subscribe again every RETRY_S after a failure."""
        ask = orjson.dumps({"origin": self._origin, "positions": [], "resend": True})
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._channel)
                self.link.ok()
                self._resend = True  # what this process moved may have gone unheard
                await self._redis.publish(self._channel, ask)  # and so may what the others moved
                while True:
                    message = await pubsub.get_message(timeout=READ_TIMEOUT_S)
                    if message is not None and message["type"] == "message":
                        await self._receive(message["data"])
                    await self.link.probe(self._redis)
            except ERRORS as exc:
                self.link.failed(exc)
            except Exception:  # a bug must not end the reader: subscribe again
                log.exception("reading live positions from Redis failed")
            finally:
                await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(RETRY_S)

    async def _receive(self, raw: bytes) -> None:
        """Apply one message of another process; a bad one is logged and skipped."""
        try:
            data = orjson.loads(raw)
            if data.get("origin") == self._origin:
                return
            if data.get("resend"):
                self._resend = True
            positions = [_decode(item) for item in data["positions"]]
            ahead = [p.device for p, _ in positions if _newer(p, self._index.get(p.device))]
            self._index.load(positions)
            if data.get("catch_up") and ahead and self._on_catch_up is not None:
                moved = [self._index.get(device) for device in ahead]
                await self._on_catch_up([p for p in moved if p is not None])
        except Exception:
            log.warning("applying live positions from Redis failed", exc_info=True)


def _newer(p: Position, current: Position | None) -> bool:
    return current is None or current.ts < p.ts


def _encode(p: Position) -> list[Any]:
    return [p.device, p.fleet, p.ts, p.lat, p.lon, p.speed, p.heading, p.cell]


def _decode(item: list[Any]) -> tuple[Position, int]:
    position = Position(*item)
    return position, int(position.cell, 16)
