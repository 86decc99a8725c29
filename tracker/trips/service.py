"""Trips for the edges: create, read, complete and cancel, the expiry loop, and keeping the book current.

A new trip starts with what is known of its device: the remaining distance from its newest fix and the
speed of its last ten minutes of stored fixes (so the ETA is known at once for a device on the move).
Fixes then move it in the ingest path (`tracker.trips.detect`, written with the fixes).

With several processes, a trip created or ended on one process reaches the process that evaluates its
device by NOTIFY (`notified`), within milliseconds: a fix that process evaluates before does not move the
new trip. Every status change is compare-and-set on the stored status, so a stale process never fires a
change twice.

Expiry: a trip that has not arrived `ttl_s` after its creation (default TRACKER_TRIP_TTL_S, 24 h)
becomes `expired`. An arrived trip does not expire: it waits to be completed or cancelled. Every process
runs the expiry loop (the store claims due trips with SKIP LOCKED, so each expires once); the loop wakes
at the earliest expiry, at least every EXPIRY_CHECK_S.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine, Sequence
from dataclasses import replace
from typing import Any

from tracker.errors import Conflict, Forbidden, InvalidInput, NotFound
from tracker.geofence.engine import GeofenceEngine
from tracker.metrics import Metrics
from tracker.model import Device, Viewer, Window
from tracker.notify import Notifier
from tracker.settings import Settings
from tracker.store import Database
from tracker.store import trips as store
from tracker.trips import eta
from tracker.trips.detect import destination_distances
from tracker.trips.model import Destination, Trip

OPEN_TRIPS_MAX = 25  # trips started or approaching per device

log = logging.getLogger("tracker.trips")

EXPIRY_CHECK_S = 30.0
SPEED_HISTORY_MS = 600_000  # the stored fixes a new trip learns its device's speed from


class Trips:
    """The trips of one running server (see the module docstring)."""

    def __init__(
        self, settings: Settings, db: Database, engine: GeofenceEngine, notifier: Notifier, metrics: Metrics
    ) -> None:
        self._db, self._engine, self._notifier, self._metrics = db, engine, notifier, metrics
        self._detour = settings.trip_detour
        self.ttl_s = settings.trip_ttl_s
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    async def create(
        self,
        who: Viewer,
        device: Device,
        destination: Destination,
        *,
        approach_m: float,
        ref: str | None,
        notify: Sequence[str],
        share: bool,
        share_ttl_s: int | None,
        ttl_s: float | None,
    ) -> Trip:
        """Start a trip of `device` (which `who` may see) and announce its `started` event (coroutine).
        InvalidInput when the destination fence is not loaded."""
        if destination.fence is not None and self._engine.rules.fence(destination.fence) is None:
            raise InvalidInput(f"destination.fence {destination.fence!r} is not a loaded fence")
        # Every fix of the device moves each of its open trips, and each status change fans out to their
        # webhooks: a bound keeps one viewer from making a device's fixes and the outbox arbitrarily dear.
        if len((await store.active_of(self._db.pool, [device.id])).get(device.id, ())) >= OPEN_TRIPS_MAX:
            raise Conflict(
                f"device {device.id!r} already has {OPEN_TRIPS_MAX} trips on the way; complete or cancel one"
            )
        now = int(time.time() * 1000)
        draft = Trip(
            id="",
            device=device.id,
            fleet=device.fleet,
            status="started",
            destination=destination,
            approach_m=approach_m,
            ref=ref,
            notify=tuple(notify),
            created_ts=now,
            expires_ts=now + round((ttl_s or self.ttl_s) * 1000),
            share=share,
            share_ttl_s=share_ttl_s,
        )
        draft = await self._progress(draft)
        trip, event = await store.create(self._db, draft, who.name)
        if self._engine.epochs is None or device.id in self._engine.epochs:
            self._engine.trips.put(trip)
        self._notifier.deliver([event])
        self._metrics.trip_events.labels(event.status).inc()
        self._wake.set()
        log.info("device=%s trip %s started (%s)", device.id, trip.id, who.name)
        return trip

    async def _progress(self, trip: Trip) -> Trip:
        """The draft with its distance and ETA from the device's newest fix, and the device's speed."""
        since = trip.created_ts - SPEED_HISTORY_MS
        fixes = await store.recent_fixes(self._db, trip.device, since)
        if not fixes:
            head = self._engine.heads.get(trip.device)
            if head is None:
                return trip
            fixes = [(head.ts, head.lat, head.lon, 0.0)]
        speed = eta.speed_along(fixes)
        ts, lat, lon, _ = fixes[-1]
        distances = destination_distances(trip, [lat], [lon], self._engine.rules.fence)
        if distances is None:
            return trip
        remaining, to_go = float(distances[0][0]), float(distances[1][0])
        return replace(
            trip,
            remaining_m=remaining,
            eta_ts=eta.eta_ts(ts, to_go, speed, self._detour),
            progress_ts=ts,
            speed_mps=eta.known(speed),
        )

    async def get(self, who: Viewer, trip_id: str) -> Trip:
        """The trip with its newest progress, if `who` may see its fleet (coroutine)."""
        trip = await store.get(self._db, trip_id)
        if trip is None:
            raise NotFound(f"trip {trip_id!r} not found")
        if not who.grants(trip.fleet):
            raise Forbidden(f"trip {trip_id!r} is in fleet {trip.fleet!r}, which this token does not grant")
        return self.live(trip)

    def live(self, trip: Trip) -> Trip:
        """`trip` with the progress this process evaluated since it was last stored, if any."""
        held = self._engine.trips.get(trip.id)
        if held is None or held.status != trip.status or (held.progress_ts or 0) <= (trip.progress_ts or 0):
            return trip
        return held

    async def page(
        self, who: Viewer, *, device: str | None, status: str | None, window: Window
    ) -> list[Trip]:
        """Trips `who` may see, open at some time in the window (see `store.page`) (coroutine)."""
        fleets = sorted(who.fleets) if who.fleets is not None else None
        trips = await store.page(self._db, fleets=fleets, device=device, status=status, window=window)
        return [self.live(t) for t in trips]

    async def end(self, who: Viewer, trip_id: str, status: str) -> Trip:
        """Complete or cancel an open trip (coroutine); Conflict when it has ended already."""
        trip = await self.get(who, trip_id)
        ended = await store.end(self._db, trip_id, status, int(time.time() * 1000))
        if ended is None:
            current = await store.get(self._db, trip_id)
            now = current.status if current is not None else trip.status
            raise Conflict(f"trip {trip_id!r} is {now} already; only an open trip can be {status}")
        trip, event = ended
        self._engine.trips.remove(trip.id)
        self._notifier.deliver([event])
        self._metrics.trip_events.labels(event.status).inc()
        log.info("device=%s trip %s %s (%s)", trip.device, trip.id, status, who.name)
        return trip

    async def run(self) -> None:
        """Expire due trips until cancelled (coroutine); database errors are logged and retried."""
        while True:
            self._wake.clear()
            delay = EXPIRY_CHECK_S
            try:
                now = int(time.time() * 1000)
                events = await store.expire_due(self._db, now)
                for event in events:
                    self._engine.trips.remove(event.trip)
                    self._metrics.trip_events.labels(event.status).inc()
                    log.info("device=%s trip %s expired", event.device, event.trip)
                self._notifier.deliver(events)
                if events:
                    continue
                earliest = await store.next_expiry(self._db)
                if earliest is not None:
                    delay = min(delay, max(0.05, (earliest - now) / 1000))
            except Exception:
                log.exception("expiring trips failed; retrying in %.0f s", EXPIRY_CHECK_S)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    def notified(self, device: str) -> None:
        """A trip of `device` was created or ended, by any process (NOTIFY): merge its active trips if this
        process evaluates the device."""
        epochs = self._engine.epochs
        if epochs is None or device in epochs:
            self._spawn(self._merge([device]))

    def catch_up(self) -> None:
        """Notifications may have been missed: merge every held device's active trips again."""
        self._spawn(self._merge(None))

    async def _merge(self, devices: list[str] | None) -> None:
        if devices is None:
            epochs = self._engine.epochs
            held = set(self._engine.trips.active) | (set(epochs) if epochs is not None else set())
            if epochs is None:
                held |= {t.device for t in await store.all_active(self._db)}
            devices = sorted(held)
        stored = await store.active_of(self._db.pool, devices)
        for device in devices:
            self._engine.trips.merge(device, stored.get(device, ()))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        async def guarded() -> None:
            try:
                await work
            except Exception:
                log.exception("reloading trips failed; the next notification or take reloads them")

        task = asyncio.create_task(guarded(), name="trips-merge")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Wait for merges in flight (coroutine)."""
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
