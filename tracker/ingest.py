"""The ingest loop: the one path every fix takes from a device to PostGIS and the viewers.

Handlers validate a `fix` event, then `submit` the good fixes and wait. Submissions go to one of a few
writer lanes by device, so one device's fixes are always written in the order they came, while the
lanes' transactions overlap (one transaction at a time left PostgreSQL idle between commits). Each
lane drains its queue a batch at a time: it computes H3 cells, evaluates the fences (pure: events and
state changes out), writes the fixes with those changes and events in one transaction on the lane's
own connection, and only after COMMIT resolves the waiting submissions (so an ack means stored, events
included), applies the fence state, queues the events for delivery, advances the live index and hands
the moved positions to the broadcaster.
Admission comes first (`tracker.admission`): `check_connection` (which the websocket gate calls on the
frame, before it is decoded), `check_load` and `submit` raise `Busy` at once, with the wait to name,
while the loop lags, while a connection has its bound of fix events in flight, while the device's lane
would take longer than `max_wait_s` to drain (its backlog over the rate the lane has shown while busy),
or past the device's token bucket; the queue is also bounded in fixes. A failed write raises `Busy` for
every submission of that batch, and nothing of it is stored.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from tracker.admission import LoopLag, RateLimiter
from tracker.broadcast import Broadcaster
from tracker.errors import Busy
from tracker.geofence.detect import Detection
from tracker.geofence.engine import GeofenceEngine
from tracker.index import LiveIndex, assign_cells
from tracker.lanes import Lane, Submission, fail, flagged_new, take_new
from tracker.livesync import LiveSync
from tracker.metrics import Metrics
from tracker.model import Acceptance, Device, Fix, GeofenceEvent, WriteResult
from tracker.notify import Notifier
from tracker.settings import Settings
from tracker.store import Database
from tracker.store.database import write_failure
from tracker.store.fence_owner import FenceOwnerChanged
from tracker.store.fixes import days_of
from tracker.store.geofences import write_batch
from tracker.validation import parse_batch

log = logging.getLogger("tracker.ingest")


OWNER_TRIES = 3  # evaluations of a batch whose devices another process keeps taking, before `retry`


class Ingestor:
    """Owns the ingest queues and the writer lanes that drain them."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        index: LiveIndex,
        broadcaster: Broadcaster,
        metrics: Metrics,
        *,
        lag: LoopLag,
        engine: GeofenceEngine,
        notifier: Notifier,
        sync: LiveSync | None = None,
    ) -> None:
        """Bounds come from `settings` (`TRACKER_INGEST_*`, `TRACKER_DEVICE_*`, the H3 resolution and the
        retention); the rest are the collaborators a stored batch is handed to."""
        self._db, self._index, self._broadcaster, self._metrics = db, index, broadcaster, metrics
        self._lag, self._engine, self._notifier, self._sync = lag, engine, notifier, sync
        self._resolution = settings.h3_resolution
        self._queue_max, self._batch_max = settings.ingest_queue_max, settings.ingest_batch_max
        self._lanes = [Lane() for _ in range(settings.ingest_writers)]
        self._limiter = RateLimiter(settings.device_rate, settings.device_burst)
        self._max_wait_s = settings.ingest_max_wait_ms / 1000
        self._inflight_max = settings.device_inflight_max
        self._retention_days = settings.retention_days
        self.storage_error: str | None = None  # why the last write failed, until one succeeds
        self._queued = 0  # fixes waiting in all lanes
        metrics.queue_depth.set_function(lambda: self._queued)  # read when scraped, not set per event
        self._closing = False

    def check_process(self) -> None:
        """Raise Busy, changing nothing, while this process takes no submission at all (shutting down,
        or its event loop running late)."""
        if self._closing:
            raise Busy("server shutting down; retry")
        try:
            self._lag.check()
        except Busy:
            self._metrics.submissions_busy.labels("overloaded").inc()
            raise

    def check_connection(self, inflight: int) -> None:
        """Raise Busy, changing nothing, when a connection with `inflight` fix events unanswered may not
        send another: the process takes nothing, or the connection has its bound in flight."""
        self.check_process()
        if inflight >= self._inflight_max:
            self._metrics.submissions_busy.labels("inflight").inc()
            raise Busy(
                f"{inflight} fix events of this connection wait for their acks; retry",
                self._lag.retry_after(),
            )

    def check_load(self, device: str) -> None:
        """Raise Busy, changing nothing, when a submission of `device` would not be taken now.

        The edges call this before decoding an event, so that under overload a refusal costs little.
        """
        self.check_process()
        lane = self._lane(device)
        wait = lane.wait_s(time.monotonic())
        if wait > self._max_wait_s:
            self._metrics.submissions_busy.labels("queue_wait").inc()
            raise Busy(
                f"server busy: {lane.queued} fixes wait to be stored, about {wait:.1f} s; retry",
                self._lag.retry_after(wait - self._max_wait_s),
            )

    async def accept(self, device: Device, payload: Any, *, refresh_state: bool) -> Acceptance:
        """Take one batch of fix objects from `device`, whatever brought it: validate, count and log
        what is refused, store the rest and return after COMMIT (coroutine).

        `payload` is the `fix` event's: one fix object or a list of them. `refresh_state` says the edge
        cannot promise this process saw the device's last fixes (each HTTP request may reach any
        process); with processes sharing devices, this one then takes the device (`GeofenceEngine.take`).
        Raises Busy (nothing stored; retry) and InvalidInput when the payload is no batch at all.
        """
        started = time.perf_counter()
        self.check_load(device.id)  # before decoding: under overload a refusal must be cheap
        fixes, rejected = parse_batch(
            payload, device.id, device.fleet, int(time.time() * 1000), self._retention_days
        )
        if rejected:
            self._metrics.fixes_rejected.inc(len(rejected))
            log.info("device=%s rejected %d fixes, first: %s", device.id, len(rejected), rejected[0]["error"])
        if not fixes:
            return Acceptance(WriteResult(0, 0), rejected)
        if refresh_state:
            await self._engine.take([device.id])
        result = await self.submit(fixes)
        self._metrics.ack_seconds.observe(time.perf_counter() - started)
        flagged = []
        if result.flagged:  # positions among the good fixes -> indexes in the payload
            refused = {r["index"] for r in rejected}
            index = [i for i in range(len(fixes) + len(refused)) if i not in refused]
            flagged = [{"index": index[i], "flag": flag} for i, flag in result.flagged]
        return Acceptance(result, rejected, flagged)

    async def submit(self, fixes: Sequence[Fix]) -> WriteResult:
        """Queue validated fixes of one device and wait until they are committed (coroutine).

        Raises Busy when the server cannot take them now (see `check_load`), the queue is full, the
        device is over its rate, or the write failed; in each case nothing of `fixes` was stored and
        the same batch may be sent again.
        """
        if not fixes:
            return WriteResult(0, 0)
        device = fixes[0].device
        self.check_load(device)
        if self._queued + len(fixes) > self._queue_max:
            self._metrics.submissions_busy.labels("queue_full").inc()
            raise Busy(f"server busy: {self._queued} fixes are waiting to be stored; retry")
        try:
            self._limiter.take(device, len(fixes))
        except Busy:
            self._metrics.submissions_busy.labels("rate_limit").inc()
            raise
        future: asyncio.Future[WriteResult] = asyncio.get_running_loop().create_future()
        lane = self._lane(device)
        lane.queue.append(Submission(fixes, future, time.monotonic()))
        lane.queued += len(fixes)
        self._queued += len(fixes)
        lane.wakeup.set()
        return await future

    def _lane(self, device: str) -> Lane:
        return self._lanes[hash(device) % len(self._lanes)]

    async def run(self) -> None:
        """Drain every lane until `close` is called and the queues are empty (coroutine)."""
        try:
            await asyncio.gather(*(self._drain(lane) for lane in self._lanes))
        finally:
            for lane in self._lanes:
                if lane.conn is not None:
                    await self._db.pool.release(lane.conn)
                    lane.conn = None

    def close(self) -> None:
        """Refuse new submissions; `run` returns once the queues are drained."""
        self._closing = True
        for lane in self._lanes:
            lane.wakeup.set()

    async def _drain(self, lane: Lane) -> None:
        queue = lane.queue
        while True:
            if not queue:
                if self._closing:
                    return
                lane.wakeup.clear()
                await lane.wakeup.wait()
                continue
            batch: list[Submission] = []
            count = 0
            while queue and (not batch or count + len(queue[0].fixes) <= self._batch_max):
                sub = queue.popleft()
                batch.append(sub)
                count += len(sub.fixes)
            lane.queued -= count
            self._queued -= count
            backlog = bool(queue)
            started = time.monotonic()
            try:
                await self._process(lane, batch)
            except Exception:  # a lane must outlive any one batch
                log.exception("ingest batch failed")
                fail(batch, Busy("internal error while storing; retry"))
            lane.observe(count, time.monotonic() - started, backlog)

    async def _write(
        self, lane: Lane, fixes: list[Fix], evaluated: tuple[Detection | None, dict[str, int] | None]
    ) -> tuple[set[tuple[str, int]], list[GeofenceEvent]]:
        """Write on the lane's connection; a connection that failed goes back to the pool."""
        await self._db.ensure_partitions(days_of(fixes))
        if lane.conn is None:
            lane.conn = await self._db.pool.acquire()
        detection, epochs = evaluated
        try:
            return await write_batch(lane.conn, fixes, detection, self._engine.webhooks, epochs)
        except BaseException:
            conn, lane.conn = lane.conn, None
            await self._db.pool.release(conn)
            raise

    async def _evaluate(self, fixes: list[Fix]) -> tuple[Detection | None, dict[str, int] | None]:
        """The batch's fence detection (None when evaluation failed: the fixes are stored anyway), and with
        several processes the epochs it was evaluated under: taken before evaluating, so that a take of
        one of its devices meanwhile, here or elsewhere, fails the write's check. A failure to take
        devices from the database is a storage failure: it raises."""
        await self._engine.take_missing(fixes)
        epochs = self._engine.held({f.device for f in fixes})
        try:
            return await self._engine.evaluate(fixes), epochs
        except Exception:  # a bug in fence evaluation must not cost the fixes themselves
            log.exception("geofence evaluation failed for %d fixes; stored without events", len(fixes))
            return None, epochs

    async def _write_evaluated(
        self, lane: Lane, fixes: list[Fix]
    ) -> tuple[Detection | None, set[tuple[str, int]], list[GeofenceEvent]]:
        """Evaluate and write; with several processes, evaluate again when another process took one of
        the batch's devices meanwhile (`tracker.store.fence_owner`), at most OWNER_TRIES times."""
        for _ in range(OWNER_TRIES - 1):
            evaluated = await self._evaluate(fixes)
            try:
                return (evaluated[0], *await self._write(lane, fixes, evaluated))
            except FenceOwnerChanged as changed:
                self._engine.lost(changed.devices)
        evaluated = await self._evaluate(fixes)
        return (evaluated[0], *await self._write(lane, fixes, evaluated))

    async def _process(self, lane: Lane, batch: list[Submission]) -> None:
        fixes = [f for sub in batch for f in sub.fixes]
        assign_cells(fixes, self._resolution)
        started = time.perf_counter()
        try:
            detection, new, events = await self._write_evaluated(lane, fixes)
        except FenceOwnerChanged:
            self._metrics.submissions_busy.labels("fence_owner").inc(len(batch))
            fail(batch, Busy("another server process is evaluating this device's fences; retry", 1.0))
            return
        except Exception as exc:
            why = write_failure(exc)
            log.error("storing %d fixes failed (%s): %s", len(fixes), why, exc)
            self._metrics.submissions_busy.labels("storage").inc(len(batch))
            self.storage_error = why
            fail(batch, Busy(f"storage unavailable ({why}); nothing of this batch was stored; retry", 2.0))
            return
        self.storage_error = None
        self._metrics.commit_seconds.observe(time.perf_counter() - started)
        self._metrics.batch_size.observe(len(fixes))
        accepted_total = 0
        all_new = len(new) == len(fixes)  # the common case: no retries, no repeats in the batch
        flagged_any = any(f.flag is not None for f in fixes)
        for sub in batch:
            flagged = flagged_new(sub.fixes, new) if flagged_any else ()
            accepted = len(sub.fixes) if all_new else take_new(sub.fixes, new)
            accepted_total += accepted
            if not sub.future.done():
                sub.future.set_result(WriteResult(accepted, len(sub.fixes) - accepted, flagged))
        self._metrics.fixes_accepted.inc(accepted_total)
        self._metrics.fixes_duplicate.inc(len(fixes) - accepted_total)
        if detection is not None:
            self._engine.apply(detection)
            self._notifier.deliver(events)
            if detection.trips is not None and detection.trips.stored:
                self._notifier.deliver(detection.trips.stored)
        if flagged_any:
            self._metrics.fixes_flagged.inc(sum(1 for f in fixes if f.flag is not None))
        moved = self._index.advance([f for f in fixes if f.flag is None] if flagged_any else fixes)
        self._broadcaster.publish(moved)
        if self._sync is not None:
            self._sync.offer(moved)
