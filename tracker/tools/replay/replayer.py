"""One device replaying tracks over Socket.IO: connection, sending one batch at a time, acks, retries
with backoff, messages (policy: `tracker.tools.replay`)."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import socketio

from tracker.errors import InvalidInput, TrackerError, Unauthorized
from tracker.tools.replay.schedule import Schedule
from tracker.tools.trackfile import TrackFile
from tracker.validation import MAX_BATCH

log = logging.getLogger("tracker.tools.replay")

NAMESPACE = "/device"
BACKLOG_LEAD_MS = 1000  # with `backlog`, the last fix is this long before now
RETRY_FIRST_S = 0.25
RETRY_MAX_S = 15.0
DRAIN_S = 5.0
MAX_ERRORS_KEPT = 5


class ServerUnreachable(TrackerError, ConnectionError):
    """The server cannot be reached, or it ended the session."""


@dataclass
class ReplayStats:
    """What a replay did so far. `total` is None when looping forever."""

    total: int | None
    sent: int = 0  # fixes sent (first attempts only)
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    retried: int = 0  # batches sent again
    messages: int = 0
    errors: list[str] = field(default_factory=list)  # the first rejection reasons
    seconds: float = 0.0

    @property
    def acked(self) -> int:
        """Fixes the server answered for: accepted, duplicate or rejected."""
        return self.accepted + self.duplicates + self.rejected

    def summary(self) -> str:
        return (
            f"sent {self.sent} fixes: {self.accepted} accepted, {self.duplicates} duplicates, "
            f"{self.rejected} rejected; {self.retried} batches retried; {self.messages} messages; "
            f"{self.seconds:.1f} s"
        )


@dataclass
class _Batch:
    fixes: list[dict[str, Any]]
    attempts: int = 0


class Replayer:
    """One device replaying tracks; `run` (a coroutine) does it and returns the stats, also kept in
    `stats` (readable while it runs, and after a cancellation)."""

    def __init__(
        self,
        url: str,
        token: str,
        tracks: Sequence[TrackFile],
        *,
        speed: float = 1.0,
        backlog: bool = False,
        loop: bool = False,
        keep_times: bool = False,
        batch: int = MAX_BATCH,
        ack_timeout: float = 30.0,
        on_progress: Callable[[ReplayStats], None] | None = None,
        on_message: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        if not tracks:
            raise InvalidInput("no tracks to replay")
        if not (math.isfinite(speed) and speed > 0):
            raise InvalidInput(f"speed must be a positive number; got {speed}")
        if not 1 <= batch <= MAX_BATCH:
            raise InvalidInput(f"batch must be between 1 and {MAX_BATCH}; got {batch}")
        if keep_times and loop:
            raise InvalidInput("keep_times and loop do not go together: every round would repeat the times")
        self.url, self.token = url, token
        self.backlog, self.batch, self.ack_timeout = backlog, batch, ack_timeout
        self.schedule = Schedule(tracks, speed, loop, keep_times)
        self.stats = ReplayStats(total=self.schedule.total)
        self._on_progress, self._on_message = on_progress, on_message
        self._sio: Any = None  # the socketio.AsyncClient of the running replay
        self._online = False
        self._rejoin = False  # the server ended the session: python-socketio will not reconnect
        self._fatal: TrackerError | None = None
        self._wake = asyncio.Event()
        self._pending: _Batch | None = None
        self._ack: asyncio.Future[Any] | None = None  # of the batch in flight
        self._retry_at = 0.0
        self._backoff = RETRY_FIRST_S
        self._seen: set[Any] = set()

    async def run(self) -> ReplayStats:
        """Connect, replay every fix, disconnect; raises Unauthorized or ServerUnreachable."""
        started = time.monotonic()
        async with aiohttp.ClientSession() as http:  # ours, so that it is closed whatever happens
            self._sio = self._client(http)
            try:
                await self._connect()
                now = _now_ms()
                self.schedule.start_ms = now - self.schedule.last - BACKLOG_LEAD_MS if self.backlog else now
                await self._loop()
            except asyncio.CancelledError:
                await self._drain()
                raise
            finally:
                self.stats.seconds = time.monotonic() - started
                await self._sio.shutdown()
        return self.stats

    def _client(self, http: aiohttp.ClientSession) -> Any:
        sio = socketio.AsyncClient(
            reconnection=True,
            reconnection_attempts=0,  # forever, as a phone would
            reconnection_delay=0.5,
            reconnection_delay_max=5,
            handle_sigint=False,  # signals belong to the application, not to one of many clients
            http_session=http,
        )
        for event, handler in (
            ("connect", self._connected),
            ("disconnect", self._disconnected),
            ("connect_error", self._connect_error),
            ("message", self._message),
        ):
            sio.on(event, handler, namespace=NAMESPACE)
        return sio

    # --- connection ----------------------------------------------------------------------------------

    async def _connect(self) -> None:
        try:
            await self._sio.connect(
                self.url,
                namespaces=[NAMESPACE],
                auth={"token": self.token},
                transports=["websocket"],
                wait_timeout=10,
            )
        except socketio.exceptions.ConnectionError as exc:
            if self._fatal is not None:
                raise self._fatal from None
            raise ServerUnreachable(f"cannot connect to {self.url}: {exc}") from None

    async def _connected(self) -> None:
        self._online = True
        log.info("connected to %s", self.url)
        self._wake.set()

    async def _disconnected(self, reason: Any = None) -> None:
        self._online = False
        if self._ack is not None and not self._ack.done():
            self._ack.set_result(None)  # that ack will never come
        if reason != socketio.AsyncClient.reason.CLIENT_DISCONNECT:
            log.warning("connection to %s lost (%s); reconnecting", self.url, reason)
        self._rejoin = reason == socketio.AsyncClient.reason.SERVER_DISCONNECT
        self._wake.set()

    async def _connect_error(self, data: Any = None) -> None:
        message = data.get("message") if isinstance(data, dict) else data
        if message == "unauthorized":
            self._fatal = Unauthorized(f"the server at {self.url} refused the device token (unauthorized)")
            self._wake.set()
        else:
            log.info("connecting to %s failed: %s", self.url, message)

    async def _message(self, data: Any = None) -> dict[str, Any]:
        """A message for the device: the return value is the Socket.IO ack."""
        key = data.get("id") if isinstance(data, dict) else None
        if key is None or key not in self._seen:
            self._seen.add(key)
            self.stats.messages += 1
            message = data if isinstance(data, dict) else {"body": data}
            log.info("message from %s: %s", message.get("from"), as_text(message.get("body")))
            if self._on_message is not None:
                self._on_message(message)
        return {"ok": True}

    # --- sending -------------------------------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            if self._fatal is not None:
                raise self._fatal
            now = _now_ms()
            self._refill(now)
            if self._pending is None:
                due = self.schedule.next_due_ms()
                if due is None:
                    return
                await self._pause((due - now) / 1000)
            elif not self._online:
                await (self._reconnect() if self._rejoin else self._pause(None))
            elif time.monotonic() < self._retry_at:
                await self._pause(self._retry_at - time.monotonic())
            else:
                await self._send(self._pending)

    async def _reconnect(self) -> None:
        """Connect again after the server ended the session (Socket.IO leaves that to the client)."""
        await asyncio.sleep(self._backoff)
        self._backoff = min(self._backoff * 2, RETRY_MAX_S)
        try:
            await self._connect()
        except ServerUnreachable as exc:
            log.info("%s; retrying", exc)
            return
        self._rejoin = False

    def _refill(self, now_ms: int) -> None:
        """Take the fixes due into the pending batch: a new one, or the pending one if never sent."""
        if self._pending is None:
            fixes = self.schedule.take(now_ms, self.batch)
            self._pending = _Batch(fixes) if fixes else None
        elif self._pending.attempts == 0 and len(self._pending.fixes) < self.batch:
            self._pending.fixes += self.schedule.take(now_ms, self.batch - len(self._pending.fixes))

    async def _pause(self, seconds: float | None) -> None:
        """Sleep up to `seconds` (None: until woken); the connection's events wake it early."""
        if seconds is not None and seconds <= 0:
            return
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
        except TimeoutError:
            pass

    async def _send(self, batch: _Batch) -> None:
        if batch.attempts:
            self.stats.retried += 1
        else:
            self.stats.sent += len(batch.fixes)
        batch.attempts += 1
        ack = self._ack = asyncio.get_running_loop().create_future()

        def on_ack(*args: Any) -> None:
            if not ack.done():
                ack.set_result(args[0] if args else None)

        answer: Any = None
        try:
            await self._sio.emit("fix", batch.fixes, namespace=NAMESPACE, callback=on_ack)
            answer = await asyncio.wait_for(asyncio.shield(ack), self.ack_timeout)
        except TimeoutError:
            log.warning(
                "no ack within %.0f s for a batch of %d fixes; will resend",
                self.ack_timeout,
                len(batch.fixes),
            )
        except socketio.exceptions.SocketIOError as exc:  # disconnected just before emitting
            log.info("sending failed (%s); will resend", exc)
        self._ack = None
        self._settle(batch, answer)

    def _settle(self, batch: _Batch, ack: Any) -> None:
        """Count an ack; a batch that must go again stays pending, with the next backoff."""
        if not isinstance(ack, dict) or (ack.get("error") and ack.get("retry")):
            if isinstance(ack, dict):
                log.info("server asks to retry a batch of %d fixes: %s", len(batch.fixes), ack["error"])
            wait = self._backoff
            if isinstance(ack, dict) and isinstance(ack.get("retry_after_ms"), int | float):
                wait = max(wait, ack["retry_after_ms"] / 1000)  # the server knows how far behind it is
            self._retry_at = time.monotonic() + wait
            self._backoff = min(self._backoff * 2, RETRY_MAX_S)
            return
        self._pending, self._backoff, self._retry_at = None, RETRY_FIRST_S, 0.0
        if ack.get("error"):
            self.stats.rejected += len(batch.fixes)
            self._note(f"a batch of {len(batch.fixes)} fixes: {ack['error']}")
        else:
            self.stats.accepted += int(ack.get("accepted") or 0)
            self.stats.duplicates += int(ack.get("duplicates") or 0)
            for entry in ack.get("rejected") or []:
                self.stats.rejected += 1
                index = entry.get("index") if isinstance(entry, dict) else None
                fix = batch.fixes[index] if isinstance(index, int) and 0 <= index < len(batch.fixes) else {}
                error = entry.get("error") if isinstance(entry, dict) else entry
                self._note(f"fix ts={fix.get('ts')}: {error}")
        if self._on_progress is not None:
            self._on_progress(self.stats)

    def _note(self, error: str) -> None:
        if len(self.stats.errors) < MAX_ERRORS_KEPT:
            self.stats.errors.append(error)
        log.info("rejected %s", error)

    async def _drain(self) -> None:
        """On cancellation: give the ack in flight a moment, so that the stats count it."""
        ack, batch = self._ack, self._pending
        if ack is None or batch is None:
            return
        try:
            answer = await asyncio.wait_for(asyncio.shield(ack), DRAIN_S)
        except TimeoutError:
            return
        self._settle(batch, answer)


def _now_ms() -> int:
    return int(time.time() * 1000)


def as_text(body: Any) -> str:
    """A message body for people: itself when text, else its JSON."""
    return body if isinstance(body, str) else orjson.dumps(body).decode()
