"""Delivery of stored geofence and trip events to their targets: viewers, the device, webhooks.

Detection decides what happened; this only delivers, after COMMIT, in the order events were stored:
`viewers` get a `geofence` event in the device's fleet room, device room and the all-fleets room (one
copy per viewer even when in several), `device` gets an `alert` on its own connection(s), and webhook
URLs were already written to the outbox in the same transaction, so the webhook worker is only woken up.
A geofence event goes to the targets its rule names; a trip event (`trip`) to the viewers and the
device always, and to the webhooks of the trip's `notify`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from tracker.model import GeofenceEvent, Rule
from tracker.rooms import Transport, device_room, event_rooms
from tracker.trips.model import TripEvent

log = logging.getLogger("tracker.notify")


class Notifier:
    """A queue of stored events and the loop that delivers them in order."""

    def __init__(
        self,
        viewers: Transport,
        devices: Transport,
        rule: Callable[[str], Rule | None],
        wake_webhooks: Callable[[], None],
    ) -> None:
        self._viewers = viewers
        self._devices = devices
        self._rule = rule
        self._wake_webhooks = wake_webhooks
        self._queue: asyncio.Queue[GeofenceEvent | TripEvent] = asyncio.Queue()

    def deliver(self, events: Sequence[GeofenceEvent | TripEvent]) -> None:
        """Queue committed events for delivery (returns at once)."""
        for event in events:
            self._queue.put_nowait(event)

    async def run(self) -> None:
        """Deliver queued events until cancelled (coroutine)."""
        while True:
            event = await self._queue.get()
            try:
                await self._send(event)
            except Exception:  # one failed emit must not stop the others
                log.exception("delivering event %s failed device=%s", event.id, event.device)

    async def flush(self) -> None:
        """Deliver whatever is queued now (coroutine; at shutdown)."""
        while not self._queue.empty():
            await self._send(self._queue.get_nowait())

    async def _send(self, event: GeofenceEvent | TripEvent) -> None:
        if isinstance(event, TripEvent):
            trip = event.to_json()
            await self._viewers.emit("trip", trip, event_rooms(event.fleet, event.device))
            await self._devices.emit("alert", {**trip, "type": "trip"}, device_room(event.device))
            if event.notify:
                self._wake_webhooks()
            return
        rule = self._rule(event.rule)
        targets = rule.notify if rule is not None else ("viewers",)
        payload = event.to_json()
        rooms = event_rooms(event.fleet, event.device)
        if event.other is not None and event.other_fleet is not None:  # near/far: both devices' viewers
            rooms = list(dict.fromkeys(rooms + event_rooms(event.other_fleet, event.other)))
        for target in targets:
            if target == "viewers":
                await self._viewers.emit("geofence", payload, rooms)
            elif target == "device":
                await self._devices.emit("alert", payload, device_room(event.device))
        if rule is not None and rule.webhooks:
            self._wake_webhooks()
