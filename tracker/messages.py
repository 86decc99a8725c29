"""Messages to devices: stored first, then delivered in order until the device acks each one.

Policy:
- `send` stores the message (durable before anyone is told) and returns; delivery is separate.
- Each open connection of a device has a high-water mark: the newest message id handed to it. A pump
  per device hands every connection the pending messages above its mark, oldest first, with an ack
  callback. A new connection starts at zero, so every unacked message is delivered again, in order,
  on each reconnect and after a restart.
- Every connection open while a message was pending gets it, also when the device's connections are on
  several processes: a process whose pump runs after another connection's ack was recorded still hands
  the message to its connections that opened before that ack (not counted as a new delivery, and no
  `sent` after `acked`), as one process hands it to all its connections in one round.
- A stored message is announced with PostgreSQL NOTIFY; every process listens and pumps the devices
  it holds, so a message reaches a device connected to another process too.
- Transports whose reply is the delivery (OwnTracks HTTP) `take` pending messages, which acks them.
- Acks are recorded a batch at a time (one UPDATE for all that came in meanwhile): a device that comes
  online to a backlog acks hundreds of messages a second. An ack not yet recorded when the process
  dies only means the message is delivered again.
- Viewers of the device's fleet or of the device see each step as a `message_status` event
  (`queued`, `sent`, `acked`), from the process where it happened.
- Devices talk back (`receive`): their message is stored before their ack, once per `client_id` (a
  retry after a lost ack answers the first id). Every message, either way, is announced to those viewers
  as a `message` event with its `direction` once, when it is first stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import asyncpg

from tracker.admission import RateLimiter
from tracker.message_payloads import encode_body
from tracker.metrics import Metrics
from tracker.model import Device, Message, Viewer
from tracker.rooms import Transport, event_rooms
from tracker.store import Database, audit
from tracker.store import messages as store

log = logging.getLogger("tracker.messages")

_PUMP_LIMIT = 500  # messages fetched per round of a device's pump


class DeviceLink(Protocol):
    """How the core hands a message to one connection of a device and learns of its ack."""

    async def deliver(
        self, conn: str, payload: dict[str, Any], on_ack: Callable[..., Awaitable[None]]
    ) -> None: ...


class Messenger:
    """Stores messages and pumps them to the devices connected to this process."""

    def __init__(
        self,
        db: Database,
        link: DeviceLink,
        viewers: Transport,
        metrics: Metrics,
        body_max_bytes: int,
        limiter: RateLimiter | None = None,
    ) -> None:
        self._db = db
        self._limiter = limiter  # of devices' own messages: each stored row is work for every viewer
        self._link = link
        self._viewers = viewers
        self._metrics = metrics
        self._body_max = body_max_bytes
        self._marks: dict[str, dict[str, int]] = {}  # device -> connection -> newest id handed over
        self._opened: dict[str, int] = {}  # connection -> when it was attached, ms
        self._fleets: dict[str, str] = {}  # device -> fleet, for the devices connected here
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # (device, message id, the device's fleet for the status) acked, not yet recorded
        self._acks: list[tuple[str, int, str | None]] = []
        self._acked = asyncio.Event()

    async def send(self, viewer: Viewer, device: Device, body: Any) -> Message:
        """Store a message from `viewer` to `device`, which the caller had from
        `Authenticator.visible_device` (the viewer may see it) (coroutine).

        Returns once the message is committed; delivery follows at once if the device is connected.
        """
        text = encode_body(body, self._body_max)
        message = await store.insert(self._db, device.id, text, viewer.name, _now_ms())
        self._metrics.messages_stored.inc()
        log.info("message %s stored device=%s from=%s", message.id, device.id, viewer.name)
        await self._announce(message, device.fleet)
        await self._status(device.id, device.fleet, [message.id], "queued", message.ts)
        self._spawn(device.id)  # NOTIFY reaches other processes; this one need not wait for it
        # Last, so that nothing waits between `queued` and the pump: the trail says who wrote to whom and
        # how much, not what (the body stays in `messages`).
        await audit.record(
            self._db.pool, viewer.name, "message.send", device.id, {"message": message.id, "bytes": len(text)}
        )
        return message

    async def receive(self, device: Device, body: Any, client_id: str | None) -> Message:
        """Store a message the device sent (coroutine). Returns once it is committed; with a `client_id`
        the device used before, stores nothing and returns that first message. Busy beyond the device's
        message rate."""
        text = encode_body(body, self._body_max)
        if self._limiter is not None:
            self._limiter.take(device.id, 1)
        message, new = await store.insert_from_device(self._db, device.id, text, client_id, _now_ms())
        if not new:
            log.info("message %s sent again device=%s client_id=%s", message.id, device.id, client_id)
            return message
        self._metrics.messages_received.inc()
        log.info("message %s received device=%s", message.id, device.id)
        await self._announce(message, device.fleet)
        await audit.record(
            self._db.pool,
            f"device:{device.id}",
            "message.from_device",
            device.id,
            {"message": message.id, "bytes": len(text)},
        )
        return message

    def attach(self, device: Device, conn: str) -> None:
        """A connection of the device opened: deliver everything unacked to it, in order."""
        self._marks.setdefault(device.id, {})[conn] = 0
        self._opened[conn] = _now_ms()
        self._fleets[device.id] = device.fleet
        self._spawn(device.id)

    def detach(self, device_id: str, conn: str) -> None:
        """A connection closed: its unacked messages wait for the next one."""
        marks = self._marks.get(device_id)
        if marks is None:
            return
        marks.pop(conn, None)
        self._opened.pop(conn, None)
        if not marks:
            del self._marks[device_id]
            self._fleets.pop(device_id, None)
            lock = self._locks.get(device_id)
            if lock is not None and not lock.locked():
                del self._locks[device_id]

    async def take(self, device: Device) -> list[Message]:
        """The device's pending messages, handed over and acked now (coroutine; for HTTP replies)."""
        now = _now_ms()
        taken = await store.take(self._db, device.id, now)
        if taken:
            self._metrics.messages_delivered.inc(len(taken))
            self._metrics.messages_acked.inc(len(taken))
            await self._status(device.id, device.fleet, [m.id for m in taken], "acked", now)
        return taken

    def notified(self, device_id: str) -> None:
        """A message for `device_id` was stored, by any process (NOTIFY): pump it if it is held here."""
        self._spawn(device_id)

    def catch_up(self) -> None:
        """Pump every device held here: notifications may have been lost while nobody listened."""
        for device_id in list(self._marks):
            self._spawn(device_id)

    async def record_acks(self) -> None:
        """Record the acks that came in, a batch at a time, until cancelled (coroutine)."""
        delay = 0.5
        while True:
            await self._acked.wait()
            self._acked.clear()
            try:
                await self._record()
                delay = 0.5
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("recording %d acks failed (%s); retrying in %.1f s", len(self._acks), exc, delay)
                self._acked.set()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def close(self) -> None:
        """Wait for pumps in flight and record the last acks (coroutine; at shutdown)."""
        for task in list(self._tasks):
            with contextlib.suppress(Exception):
                await task
        try:
            await self._record()
        except Exception:  # those messages are delivered again
            log.exception("recording the last %d acks failed", len(self._acks))

    async def _record(self) -> None:
        batch, self._acks = self._acks, []
        if not batch:
            return
        now = _now_ms()
        try:
            recorded = await store.ack(self._db, [(device, number) for device, number, _ in batch], now)
        except BaseException:
            self._acks = batch + self._acks  # kept, in order, for the next try
            raise
        self._metrics.messages_acked.inc(len(recorded))
        fleets = {device: fleet for device, _, fleet in batch if fleet is not None}
        by_device: dict[str, list[int]] = {}
        for device_id, number in recorded:
            by_device.setdefault(device_id, []).append(number)
        for device_id, numbers in by_device.items():
            fleet = fleets.get(device_id)
            if fleet is None:
                continue
            # A device may ack before the round that handed the message over has announced `sent`:
            # that round holds the device's lock until it has, so viewers see sent, then acked.
            async with self._locks.get(device_id) or contextlib.nullcontext():
                await self._status(device_id, fleet, [str(n) for n in sorted(numbers)], "acked", now)

    def _spawn(self, device_id: str) -> None:
        if device_id not in self._marks:
            return
        task = asyncio.create_task(self._pump(device_id), name=f"messages:{device_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _pump(self, device_id: str) -> None:
        lock = self._locks.setdefault(device_id, asyncio.Lock())
        async with lock:
            try:
                while await self._pump_round(device_id):
                    pass
            except Exception:  # the next connect or NOTIFY pumps again
                log.exception("delivering messages failed device=%s", device_id)

    async def _pump_round(self, device_id: str) -> bool:
        """Hand each connection the pending messages above its mark; True when there may be more."""
        marks = self._marks.get(device_id)
        if not marks:
            return False
        opened = {conn: self._opened.get(conn, 0) for conn in marks}
        pending = await store.pending(
            self._db, device_id, min(marks.values()), _PUMP_LIMIT, acked_since=min(opened.values())
        )
        handed: set[int] = set()  # pending ones handed over: they count as sent
        moved = False  # some connection's mark went forward: the next page starts further on
        # The hand-over's time is taken before it: a device may ack (and, with Redis, the ack be recorded)
        # before `deliver` returns, since the emit also publishes to the other processes.
        now = _now_ms()
        for conn in list(marks):
            for message in pending:
                number = int(message.id)
                if number <= marks.get(conn, number):  # already handed over, or the connection closed
                    continue
                if message.acked_ts is not None and message.acked_ts < opened[conn]:
                    # Acked before this connection opened: settled for it, so its mark passes it (else
                    # a page full of those would hold the next page back for good).
                    marks[conn] = number
                    moved = True
                    continue
                await self._link.deliver(conn, message.to_device(), self._acker(device_id, number))
                moved = True
                if conn in marks:
                    marks[conn] = number
                if message.acked_ts is None:
                    handed.add(number)
        if handed:
            await store.mark_sent(self._db, sorted(handed), now)
            self._metrics.messages_delivered.inc(len(handed))
            log.info("delivered %d message(s) device=%s", len(handed), device_id)
            fleet = self._fleets.get(device_id)
            if fleet is not None:
                await self._status(device_id, fleet, [str(n) for n in sorted(handed)], "sent", now)
        return len(pending) == _PUMP_LIMIT and moved

    def _acker(self, device_id: str, number: int) -> Callable[..., Awaitable[None]]:
        async def acked(*_args: Any) -> None:
            self._acks.append((device_id, number, self._fleets.get(device_id)))
            self._acked.set()

        return acked

    async def _announce(self, message: Message, fleet: str) -> None:
        """Show a new message to the viewers of the fleet or the device (never raises)."""
        rooms = event_rooms(fleet, message.device)
        if not any(self._viewers.listening(r) for r in rooms):
            return
        try:
            await self._viewers.emit("message", message.to_viewer(fleet), rooms)
        except Exception:  # the message is stored: viewers find it in the list
            log.exception("announcing message %s failed device=%s", message.id, message.device)

    async def _status(self, device_id: str, fleet: str, ids: list[str], state: str, ts: int) -> None:
        """Tell the viewers of the fleet or the device how far messages got (never raises)."""
        rooms = event_rooms(fleet, device_id)
        if not any(self._viewers.listening(r) for r in rooms):
            return
        for message_id in ids:
            payload = {"id": message_id, "device": device_id, "fleet": fleet, "state": state, "ts": ts}
            try:
                await self._viewers.emit("message_status", payload, rooms)
            except Exception:  # a viewer's missed status is not worth failing a delivery for
                log.exception("message_status %s failed device=%s", message_id, device_id)


def _now_ms() -> int:
    return int(time.time() * 1000)
