"""One connection that LISTENs for PostgreSQL notifications on behalf of the whole process.

Stored messages (`tracker_messages`) and token changes (`tracker_tokens`) are announced with NOTIFY in
the transaction that makes them, so every process hears of them, whichever process or command made
them. A notification sent while the connection is down is lost: after each (re)connect the listener
calls `on_listening`, and its users catch up by asking the database again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping

import asyncpg

from tracker.store.database import Database

log = logging.getLogger("tracker.store")

_DB_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


class Listener:
    """Calls `channels[name](payload)` for each notification on `name`, until cancelled."""

    def __init__(
        self,
        db: Database,
        channels: Mapping[str, Callable[[str], None]],
        on_listening: Callable[[], None],
    ) -> None:
        self._db = db
        self._channels = dict(channels)
        self._on_listening = on_listening

    def _notified(self, _conn: object, _pid: int, channel: str, payload: str) -> None:
        try:
            self._channels[channel](payload)
        except Exception:  # one bad handler must not stop the others' notifications
            log.exception("handling a notification on %s failed", channel)

    async def run(self) -> None:
        """Listen, reconnecting with backoff (1 s doubling to 30 s) (coroutine)."""
        delay = 1.0
        while True:
            try:
                async with self._db.pool.acquire() as conn:
                    lost = asyncio.Event()
                    conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                    try:
                        for channel in self._channels:
                            await conn.add_listener(channel, self._notified)
                        delay = 1.0
                        self._on_listening()
                        await lost.wait()
                        log.warning("notification listener connection lost; reconnecting")
                    finally:
                        if not conn.is_closed():  # the pool refuses a connection that still listens
                            with contextlib.suppress(*_DB_ERRORS):
                                for channel in self._channels:
                                    await conn.remove_listener(channel, self._notified)
            except _DB_ERRORS as exc:
                log.warning("notification listener failed (%s); retrying in %.0f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
