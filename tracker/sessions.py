"""The connections each token opened on this process, so that a token that is revoked, re-keyed or
expires stops working at once, everywhere.

HTTP requests look their token up every time, so a changed token is refused from the next request on.
A socket authenticates once, at connect: `Sessions` remembers which token (by its hash) opened each
connection. When a token changes, the statement that changed it also NOTIFYs `tracker_tokens`
(whichever process or command made the change); every process then asks the database for the current
hash of that device or viewer and cuts each connection it holds that was opened with another one. A
viewer token with an expiry is cut when it expires. After the listener (re)connects, every connection
held is checked, since a notification sent meanwhile is lost; a token changed between a connection's
lookup and its registration here is caught by remembering recent changes for a few seconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

from tracker.auth import hash_token
from tracker.store import Database, accounts

log = logging.getLogger("tracker.sessions")

DEVICE = "device"
VIEWER = "viewer"
RECENT_S = 10.0  # how long a token change is remembered for connections still being registered

Disconnect = Callable[[str], Awaitable[None]]


@dataclass(slots=True)
class _Held:
    kind: str  # DEVICE or VIEWER
    key: str  # the device id or viewer name
    token_hash: bytes
    expiry: asyncio.TimerHandle | None = None


class Sessions:
    """Which token opened each connection here, and the cutting of those whose token changed."""

    def __init__(self, db: Database, cut: Mapping[str, Disconnect]) -> None:
        self._db = db
        self._cut = cut  # kind -> how to disconnect one connection of that namespace
        self._held: dict[str, _Held] = {}  # connection -> who opened it
        self._by_key: dict[tuple[str, str], set[str]] = {}  # (kind, key) -> connections
        self._recent: dict[tuple[str, str], float] = {}  # (kind, key) -> monotonic time of the change
        self._tasks: set[asyncio.Task[None]] = set()

    def opened(self, kind: str, key: str, conn: str, token: str, expires_ts: int | None = None) -> None:
        """Connection `conn` was admitted with `token` as device id or viewer name `key`."""
        held = _Held(kind, key, hash_token(token))
        if expires_ts is not None:
            delay = max(0.0, expires_ts / 1000 - time.time())
            held.expiry = asyncio.get_running_loop().call_later(delay, self._expire, conn)
        self._held[conn] = held
        self._by_key.setdefault((kind, key), set()).add(conn)
        changed = self._recent.get((kind, key))
        if changed is not None and time.monotonic() - changed < RECENT_S:
            self._spawn(kind, [key])

    def closed(self, conn: str) -> None:
        """Connection `conn` is gone."""
        held = self._held.pop(conn, None)
        if held is None:
            return
        if held.expiry is not None:
            held.expiry.cancel()
        conns = self._by_key.get((held.kind, held.key))
        if conns is not None:
            conns.discard(conn)
            if not conns:
                del self._by_key[(held.kind, held.key)]

    def notified(self, payload: str) -> None:
        """The token of `payload` ('device:<id>' or 'viewer:<name>') changed, in some process."""
        kind, _, key = payload.partition(":")
        now = time.monotonic()
        self._recent = {k: t for k, t in self._recent.items() if now - t < RECENT_S}
        self._recent[(kind, key)] = now
        if (kind, key) in self._by_key:
            self._spawn(kind, [key])

    def catch_up(self) -> None:
        """Check every connection held here (the listener was down: changes may have gone unheard)."""
        for kind in (DEVICE, VIEWER):
            keys = [key for k, key in self._by_key if k == kind]
            if keys:
                self._spawn(kind, keys)

    async def close(self) -> None:
        """Wait for the checks in flight (coroutine; at shutdown)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, kind: str, keys: list[str]) -> None:
        self._track(self._check(kind, keys), f"sessions:{kind}")

    def _track(self, work: Coroutine[Any, Any, None], name: str) -> None:
        """Run `work` as a task that `close` waits for."""
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _check(self, kind: str, keys: list[str]) -> None:
        """Cut the connections of `keys` whose token is no longer the stored one (or has expired)."""
        try:
            stored: dict[str, tuple[bytes | None, int | None]]
            if kind == DEVICE:
                hashes = await accounts.device_token_hashes(self._db, keys)
                stored = {key: (token_hash, None) for key, token_hash in hashes.items()}
            else:
                stored = await accounts.viewer_token_hashes(self._db, keys)
        except Exception:  # the next notification or reconnect checks again
            log.exception("checking the tokens of %d %ss failed", len(keys), kind)
            return
        now_ms = time.time() * 1000
        for key in keys:
            token_hash, expires_ts = stored.get(key, (None, None))
            expired = expires_ts is not None and expires_ts <= now_ms
            for conn in list(self._by_key.get((kind, key), ())):
                held = self._held.get(conn)
                if held is not None and (held.token_hash != token_hash or expired):
                    await self._disconnect(conn, "expired" if expired else "revoked or re-keyed")

    def _expire(self, conn: str) -> None:
        self._track(self._disconnect(conn, "expired"), "sessions:expire")

    async def _disconnect(self, conn: str, why: str) -> None:
        held = self._held.get(conn)
        if held is None:
            return
        log.info("%s token %s: disconnecting %s=%s", held.kind, why, held.kind, held.key)
        self.closed(conn)
        try:
            await self._cut[held.kind](conn)
        except Exception:
            log.exception("disconnecting %s %s failed", held.kind, held.key)
