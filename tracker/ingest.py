"""The ingest loop: the one path every fix takes from a device to PostGIS and the viewers.

Handlers validate a `fix` event, then `submit` the good fixes and wait. One loop drains the bounded
queue a batch at a time: it computes H3 cells, writes the whole batch in one transaction, and only
after COMMIT resolves the waiting submissions (so an ack means stored), advances the live index and
hands the moved positions to the broadcaster. A full queue answers `Busy` at once instead of growing
memory; a failed write answers `Busy` for every submission of that batch, and nothing of it is stored.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from tracker.broadcast import Broadcaster
from tracker.errors import Busy
from tracker.index import LiveIndex, assign_cells
from tracker.metrics import Metrics
from tracker.model import Fix, WriteResult
from tracker.store import Database
from tracker.store.fixes import write_fixes

log = logging.getLogger("tracker.ingest")


@dataclass(slots=True)
class _Submission:
    fixes: Sequence[Fix]
    future: asyncio.Future[WriteResult]


class Ingestor:
    """Owns the ingest queue and the loop that drains it."""

    def __init__(
        self,
        db: Database,
        index: LiveIndex,
        broadcaster: Broadcaster,
        metrics: Metrics,
        *,
        resolution: int,
        queue_max: int,
        batch_max: int,
    ) -> None:
        self._db = db
        self._index = index
        self._broadcaster = broadcaster
        self._metrics = metrics
        self._resolution = resolution
        self._queue_max = queue_max
        self._batch_max = batch_max
        self._queue: deque[_Submission] = deque()
        self._queued = 0  # fixes in the queue
        self._wakeup = asyncio.Event()
        self._closing = False

    async def submit(self, fixes: Sequence[Fix]) -> WriteResult:
        """Queue validated fixes of one device and wait until they are committed (coroutine).

        Raises Busy when the queue is full, the server is shutting down, or the write failed; in each
        case nothing of `fixes` was stored and the same batch may be sent again.
        """
        if not fixes:
            return WriteResult(0, 0)
        if self._closing:
            raise Busy("server shutting down; retry")
        if self._queued + len(fixes) > self._queue_max:
            self._metrics.submissions_busy.labels("queue_full").inc()
            raise Busy(f"server busy: {self._queued} fixes are waiting to be stored; retry")
        future: asyncio.Future[WriteResult] = asyncio.get_running_loop().create_future()
        self._queue.append(_Submission(fixes, future))
        self._queued += len(fixes)
        self._metrics.queue_depth.set(self._queued)
        self._wakeup.set()
        return await future

    async def run(self) -> None:
        """Drain the queue until `close` is called and the queue is empty (coroutine)."""
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch: list[_Submission] = []
            count = 0
            while self._queue and (not batch or count + len(self._queue[0].fixes) <= self._batch_max):
                sub = self._queue.popleft()
                batch.append(sub)
                count += len(sub.fixes)
            self._queued -= count
            self._metrics.queue_depth.set(self._queued)
            try:
                await self._process(batch)
            except Exception:  # the loop must outlive any one batch
                log.exception("ingest batch failed")
                _fail(batch, Busy("internal error while storing; retry"))

    def close(self) -> None:
        """Refuse new submissions; `run` returns once the queue is drained."""
        self._closing = True
        self._wakeup.set()

    async def _process(self, batch: list[_Submission]) -> None:
        fixes = [f for sub in batch for f in sub.fixes]
        assign_cells(fixes, self._resolution)
        started = time.perf_counter()
        try:
            new = await write_fixes(self._db, fixes)
        except Exception as exc:
            log.error("storing %d fixes failed: %s", len(fixes), exc)
            self._metrics.submissions_busy.labels("storage").inc(len(batch))
            _fail(batch, Busy("storage unavailable; retry"))
            return
        self._metrics.commit_seconds.observe(time.perf_counter() - started)
        self._metrics.batch_size.observe(len(fixes))
        accepted_total = 0
        for sub in batch:
            accepted = 0
            for f in sub.fixes:
                key = (f.device, f.ts)
                if key in new:
                    new.discard(key)  # a repeat of the key later in the batch is a duplicate
                    accepted += 1
            accepted_total += accepted
            if not sub.future.done():
                sub.future.set_result(WriteResult(accepted, len(sub.fixes) - accepted))
        self._metrics.fixes_accepted.inc(accepted_total)
        self._metrics.fixes_duplicate.inc(len(fixes) - accepted_total)
        self._broadcaster.publish(self._index.advance(fixes))


def _fail(batch: list[_Submission], error: Busy) -> None:
    for sub in batch:
        if not sub.future.done():
            sub.future.set_exception(error)
