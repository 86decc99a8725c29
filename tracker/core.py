"""The running tracker's parts, started and stopped together: database, live index, ingest loop,
broadcaster. The app's lifespan owns one `Core`; the edges (sockets, routes) only call into it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from dataclasses import dataclass, field

from tracker.auth import Authenticator
from tracker.broadcast import Broadcaster, Transport
from tracker.index import LiveIndex, cell_hex
from tracker.ingest import Ingestor, RateLimiter
from tracker.livesync import LiveSync
from tracker.metrics import Metrics
from tracker.model import Position
from tracker.settings import Settings
from tracker.store import Database
from tracker.store.database import DAY_MS
from tracker.store.fixes import latest_fixes

log = logging.getLogger("tracker.core")


@dataclass
class Core:
    """Everything a request or an event handler may need, for one running server."""

    settings: Settings
    db: Database
    auth: Authenticator
    index: LiveIndex
    ingestor: Ingestor
    broadcaster: Broadcaster
    metrics: Metrics
    online: Counter[str] = field(default_factory=Counter)  # device id -> open connections here
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    async def start(
        cls, settings: Settings, database_url: str, transport: Transport, metrics: Metrics
    ) -> Core:
        """Connect and migrate, seed the live index, start the loops (coroutine)."""
        db = await Database.connect(database_url)
        index = LiveIndex()
        rows = await latest_fixes(db)
        index.load((Position(r[0], r[1], r[2], r[3], r[4], r[5], r[6], cell_hex(r[7])), r[7]) for r in rows)
        broadcaster = Broadcaster(transport, settings.broadcast_interval_ms, metrics)
        sync = (
            LiveSync(settings.redis_url, index, settings.broadcast_interval_ms)
            if settings.redis_url
            else None
        )
        ingestor = Ingestor(
            db,
            index,
            broadcaster,
            metrics,
            resolution=settings.h3_resolution,
            queue_max=settings.ingest_queue_max,
            batch_max=settings.ingest_batch_max,
            writers=settings.ingest_writers,
            limiter=RateLimiter(settings.device_rate, settings.device_burst),
            sync=sync,
        )
        core = cls(
            settings,
            db,
            Authenticator(db, settings.admin_token),
            index,
            ingestor,
            broadcaster,
            metrics,
        )
        core._tasks = [
            asyncio.create_task(ingestor.run(), name="ingest"),
            asyncio.create_task(broadcaster.run(), name="broadcast"),
            asyncio.create_task(core._partitions_ahead(), name="partitions"),
        ]
        if sync is not None:
            core._tasks.append(asyncio.create_task(sync.run(), name="livesync"))
        log.info("tracker core started; %d devices in the live index", len(index))
        return core

    async def stop(self) -> None:
        """Drain the ingest queue, flush the last positions, close the pool (coroutine)."""
        self.ingestor.close()
        await self._tasks[0]
        for task in self._tasks[1:]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.broadcaster.flush()
        await self.db.close()

    async def _partitions_ahead(self) -> None:
        """Keep the next days' partitions created ahead of the fixes that need them."""
        while True:
            today = int(time.time() * 1000) // DAY_MS
            try:
                await self.db.ensure_partitions(
                    set(range(today - 1, today + self.settings.partition_days_ahead + 1))
                )
            except Exception:
                log.exception("creating partitions ahead failed; retrying in a minute")
                await asyncio.sleep(60)
                continue
            await asyncio.sleep(3600)
