"""Erasing a device (a driver leaves; data-protection law): its token, fixes, events, fence state and
messages, everywhere, in the background.

`erase` revokes the token and records the request at once (so the answer can say it is under way);
the deletes run as a task of this process, a chunk at a time. Fixes a device sent just before its
token was revoked may still be committing: after the first pass the task waits out the ingest queue's
longest wait and deletes again, then deletes the device and tells every process (NOTIFY) to forget
its live position and fence state. A process that starts completes the erasures a stopped one left.
"""

from __future__ import annotations

import asyncio
import logging

from tracker.errors import NotFound
from tracker.geofence.engine import GeofenceEngine
from tracker.index import LiveIndex
from tracker.model import Erasure
from tracker.parse import check_id
from tracker.store import Database
from tracker.store import erasure as store

log = logging.getLogger("tracker.erasure")


class Eraser:
    """Runs erasures, and forgets erased devices in this process's memory."""

    def __init__(
        self, db: Database, index: LiveIndex, engine: GeofenceEngine, straggler_wait_s: float
    ) -> None:
        self._db = db
        self._index = index
        self._engine = engine
        self._straggler_wait_s = straggler_wait_s
        self._tasks: dict[str, asyncio.Task[None]] = {}

    async def erase(self, device_id: str, actor: str) -> Erasure:
        """Start erasing the device as `actor` (coroutine): its token is refused from now on; returns the
        erasure, under way. NotFound when there is no such device."""
        device_id = check_id(device_id, "id")
        if not await store.begin(self._db, device_id, actor):
            raise NotFound(f"device {device_id!r} not found")
        log.info("erasing device=%s for %s", device_id, actor)
        self._spawn(device_id)
        found = await store.get(self._db, device_id)
        assert found is not None
        return found

    async def status(self, device_id: str) -> Erasure:
        """The device's latest erasure (coroutine); NotFound when it was never erased."""
        found = await store.get(self._db, check_id(device_id, "id"))
        if found is None:
            raise NotFound(f"device {device_id!r} has no erasure")
        return found

    async def resume(self) -> None:
        """Complete the erasures a stopped process left unfinished (coroutine; at start-up)."""
        for device_id in await store.unfinished(self._db):
            log.info("resuming the erasure of device=%s", device_id)
            self._spawn(device_id)

    def forget(self, device_id: str) -> None:
        """A device was erased (NOTIFY, from any process): drop what this process holds of it."""
        self._index.forget(device_id)
        self._engine.forget(device_id)

    async def close(self) -> None:
        """Stop the erasures in flight (coroutine; at shutdown): the next start resumes them."""
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    def _spawn(self, device_id: str) -> None:
        if device_id in self._tasks:
            return
        task = asyncio.create_task(self._run(device_id), name=f"erase:{device_id}")
        self._tasks[device_id] = task
        task.add_done_callback(lambda _t: self._tasks.pop(device_id, None))

    async def _run(self, device_id: str) -> None:
        counts: dict[str, int] = {}
        try:
            await store.delete_data(self._db, device_id, counts)
            await asyncio.sleep(self._straggler_wait_s)
            await store.delete_data(self._db, device_id, counts)
            await store.finish(self._db, device_id, counts)
        except asyncio.CancelledError:
            raise
        except Exception:  # the row stays unfinished: the next start-up resumes it
            log.exception("erasing device=%s failed; it resumes at the next start", device_id)
            return
        log.info("erased device=%s deleted=%s", device_id, counts)
