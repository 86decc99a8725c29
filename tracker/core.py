"""The running tracker's parts, started and stopped together: database, live index, geofence engine,
ingest loop, broadcaster, event notifier, webhook worker, device messages, trips. The app's lifespan owns one
`Core`; the edges (sockets, routes) only call into it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from tracker.admission import LoopLag, RateLimiter
from tracker.auth import Authenticator
from tracker.broadcast import Broadcaster
from tracker.erasure import Eraser
from tracker.geofence.engine import GeofenceEngine
from tracker.geofence.watch import watch
from tracker.index import LiveIndex
from tracker.ingest import Ingestor
from tracker.livesync import LiveSync
from tracker.messages import DeviceLink, Messenger
from tracker.metrics import Metrics
from tracker.model import Head
from tracker.notify import Notifier
from tracker.presence import Presence
from tracker.refusals import Refusals
from tracker.rooms import Transport
from tracker.sessions import VIEWER, Disconnect, Sessions
from tracker.settings import Settings
from tracker.shares import Shares
from tracker.store import Database
from tracker.store import messages as messages_store
from tracker.store.accounts import TOKENS_CHANNEL
from tracker.store.database import DAY_MS
from tracker.store.erasure import ERASED_CHANNEL
from tracker.store.fixes import latest_positions
from tracker.store.listener import Listener
from tracker.store.shares import CHANNEL as SHARES_CHANNEL
from tracker.store.trips import CHANNEL as TRIPS_CHANNEL
from tracker.trips.service import Trips
from tracker.webhooks import WebhookWorker

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
    geofences: GeofenceEngine
    notifier: Notifier
    webhooks: WebhookWorker
    messages: Messenger
    sessions: Sessions
    erasure: Eraser
    presence: Presence
    trips: Trips
    shares: Shares
    sync: LiveSync | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    async def start(
        cls,
        settings: Settings,
        database_url: str,
        transport: Transport,
        metrics: Metrics,
        devices: Transport,
        link: DeviceLink,
        cut: Mapping[str, Disconnect],
        here: Transport | None = None,
    ) -> Core:
        """Connect and migrate, seed the live index, start the loops (coroutine). `cut` disconnects one
        connection of the device or viewer namespace (`tracker.sessions`). `here` reaches the viewers of
        this process only: with Redis, the moves another process resends after an outage, which these
        viewers missed, are emitted to them (each process does so for its own viewers)."""
        db = await Database.connect(database_url)
        index = LiveIndex(settings.h3_resolution)
        latest = await latest_positions(db)
        index.load(latest)
        geofences = GeofenceEngine(
            settings.geofences,
            db,
            metrics,
            shared=bool(settings.redis_url),
            trip_detour=settings.trip_detour,
            trip_progress_ms=round(settings.trip_progress_s * 1000),
            index=index,
        )
        await geofences.start({p.device: Head(p.ts, p.lat, p.lon) for p, _ in latest})
        webhooks = WebhookWorker(
            db,
            metrics,
            secret=settings.webhook_secret,
            attempts=settings.webhook_attempts,
            backoff_s=settings.webhook_backoff_s,
            backoff_max_s=settings.webhook_backoff_max_s,
            timeout_s=settings.webhook_timeout_s,
        )
        notifier = Notifier(transport, devices, lambda rule: geofences.rules.by_id.get(rule), webhooks.wake)
        broadcaster = Broadcaster(transport, settings.broadcast_interval_ms, metrics)
        lag = LoopLag(settings.loop_lag_max_ms / 1000, metrics.loop_lag_seconds.observe)
        sync = None
        if settings.redis_url:
            late = Broadcaster(here, settings.broadcast_interval_ms, metrics) if here is not None else None
            sync = LiveSync(
                settings.redis_url,
                settings.redis_namespace or "tracker",
                index,
                settings.broadcast_interval_ms,
                on_catch_up=late.now if late is not None else None,
            )
        ingestor = Ingestor(
            settings, db, index, broadcaster, metrics, lag=lag, engine=geofences, notifier=notifier, sync=sync
        )
        refusals = Refusals(metrics, settings.auth_failure_burst, settings.auth_failure_refill_s)
        trips = Trips(settings, db, geofences, notifier, metrics)
        core = cls(
            settings,
            db,
            Authenticator(db, settings.admin_token, refusals),
            index,
            ingestor,
            broadcaster,
            metrics,
            geofences,
            notifier,
            webhooks,
            Messenger(
                db,
                link,
                transport,
                metrics,
                settings.message_body_max_bytes,
                RateLimiter(settings.device_message_rate, settings.device_message_burst, "messages"),
            ),
            Sessions(db, cut),
            Eraser(db, index, geofences, straggler_wait_s=2 * settings.ingest_max_wait_ms / 1000 + 1),
            Presence(settings.redis_url, settings.presence_expiry_s, settings.redis_namespace or "tracker"),
            trips,
            Shares(db, index, trips, refusals, here or transport, cut[VIEWER]),
            sync,
        )
        listener = Listener(
            db,
            {
                messages_store.CHANNEL: core.messages.notified,
                TOKENS_CHANNEL: core.sessions.notified,
                ERASED_CHANNEL: core.erasure.forget,
                TRIPS_CHANNEL: core.trips.notified,
                SHARES_CHANNEL: core.shares.notified,
            },
            core._catch_up,
        )
        core._tasks = [
            asyncio.create_task(ingestor.run(), name="ingest"),
            asyncio.create_task(lag.run(), name="loop-lag"),
            asyncio.create_task(broadcaster.run(), name="broadcast"),
            asyncio.create_task(core._partitions_ahead(), name="partitions"),
            asyncio.create_task(core._retention(), name="retention"),
            asyncio.create_task(notifier.run(), name="notify"),
            asyncio.create_task(webhooks.run(), name="webhooks"),
            asyncio.create_task(listener.run(), name="notifications"),
            asyncio.create_task(core.messages.record_acks(), name="message-acks"),
            asyncio.create_task(watch(settings.geofences, geofences.reload), name="geofence-watch"),
            asyncio.create_task(core.presence.run(), name="presence"),
            asyncio.create_task(core.trips.run(), name="trips"),
            asyncio.create_task(core.shares.run(), name="shares"),
        ]
        if sync is not None:
            core._tasks.append(asyncio.create_task(sync.run(), name="livesync"))
        await core.erasure.resume()
        log.info("tracker core started; %d devices in the live index", len(index))
        return core

    async def stop(self) -> None:
        """Drain the ingest queue, flush the last positions, close the pool (coroutine)."""
        started = time.monotonic()
        self.ingestor.close()
        await self._tasks[0]
        drained = time.monotonic()
        for task in self._tasks[1:]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.broadcaster.flush()
        await self.notifier.flush()
        await self.messages.close()
        await self.sessions.close()
        await self.erasure.close()
        await self.presence.close()
        await self.trips.close()
        await self.shares.close()
        await self.webhooks.close()
        await self.db.close()
        log.info(
            "tracker core stopped in %.1f s (ingest drained in %.1f s)",
            time.monotonic() - started,
            drained - started,
        )

    async def readiness(self) -> tuple[list[str], list[str]]:
        """What keeps this process from taking fixes (problems), and what works only in part (degraded)
        (coroutine; for /readyz)."""
        problems: list[str] = []
        degraded: list[str] = []
        problem = await self.db.write_problem()
        if problem is not None:
            problems.append(problem)
        elif self.ingestor.storage_error is not None:
            problems.append(f"storing fixes fails: {self.ingestor.storage_error}")
        if self.sync is not None:
            if not await self.sync.ping():
                degraded.append("redis does not answer: positions reach the viewers of this process only")
            elif not self.sync.link.up:
                degraded.append("redis answers again; live positions are not shared yet (reconnecting)")
        link = self.presence.link
        if link is not None and not link.up:
            degraded.append(
                "redis does not answer: online in /api/devices counts this process's devices only"
            )
        return problems, degraded

    def _catch_up(self) -> None:
        """The listener (re)connected: what was announced meanwhile went unheard."""
        self.messages.catch_up()
        self.sessions.catch_up()
        self.trips.catch_up()
        self.shares.catch_up()

    async def _retention(self) -> None:
        """With TRACKER_RETENTION_DAYS, drop expired partitions now and then every hour."""
        days = self.settings.retention_days
        if days is None:
            return
        while True:
            today = int(time.time() * 1000) // DAY_MS
            try:
                await self.db.drop_expired(today - days)
            except Exception:
                log.exception("retention run failed; retrying in an hour")
            await asyncio.sleep(3600)

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
