"""Live fan-out to viewers: coalesced `positions` per room.

Moved positions accumulate per room (`tracker.rooms`) and a flush every interval emits at most one
`positions` event per room, holding the newest position of each device that moved. Rooms nobody listens
to are skipped when moves are queued, so a server with few viewers does little work per fix.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from tracker.metrics import Metrics
from tracker.model import Position
from tracker.rooms import BBOX_ANY, Transport, rooms_for

log = logging.getLogger("tracker.broadcast")


class Broadcaster:
    """Coalesces moved positions per room and emits them once per interval."""

    def __init__(self, transport: Transport, interval_ms: int, metrics: Metrics) -> None:
        self._transport = transport
        self._interval = interval_ms / 1000
        self._metrics = metrics
        self._pending: dict[str, dict[str, Position]] = {}

    def publish(self, positions: Iterable[Position]) -> None:
        """Queue moved positions for the next flush (newest per device per room wins)."""
        pending = self._pending
        listening = self._transport.listening
        with_boxes = listening(BBOX_ANY)
        for p in positions:
            for room in rooms_for(p, with_boxes):
                if listening(room):
                    pending.setdefault(room, {})[p.device] = p

    async def flush(self) -> None:
        """Emit one `positions` event per room with pending moves (coroutine)."""
        pending, self._pending = self._pending, {}
        for room, by_device in pending.items():
            await self._transport.emit("positions", [p.to_json() for p in by_device.values()], room)
            self._metrics.positions_events.inc()

    async def now(self, positions: Iterable[Position]) -> None:
        """Emit these positions at once, without waiting for the interval (coroutine)."""
        self.publish(positions)
        await self.flush()

    async def run(self) -> None:
        """Flush every interval until cancelled (coroutine); a failed flush is logged, not fatal."""
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                await self.flush()
            except Exception:
                log.exception("positions flush failed")
            await asyncio.sleep(max(0.0, self._interval - (loop.time() - started)))
