"""Share links of trips: a public, revocable view of one device for one trip (contract part 2, "Trips").

A link's token is 256 random bits (`tracker.auth.new_token`), answered once when the trip is created and
stored only as its hash. It grants one thing: the live position, status and ETA of its trip's device while
the trip is open, the link not revoked and not past `share_ttl_s`. It is no viewer token: every HTTP API
route refuses it, and its `/viewer` socket joins no room at all. Rooms carry fleet names, messages,
geofence events and other trips; so this module relays what a link may show to each of its sockets
itself: the device's newest position from the live index (every POSITIONS_EVERY_S, only fixes taken
since the trip started: no earlier history) and the trip's status and ETA (every CHECK_EVERY_S), with
no fleet, ref or rule names.

A link ends when its trip is completed, cancelled or expired, at its expiry, or when it is revoked. Each
process checks the links of the sockets it holds every CHECK_EVERY_S, and at once when a revocation is
announced (NOTIFY `tracker_shares`, from any process): it sends `ended` and cuts them, within 2 s.
An unknown token counts as a failed authentication (`tracker.refusals`), so guessing is slowed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import re
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from tracker.auth import Origin, hash_token, new_token
from tracker.errors import InvalidInput, NotFound, TrackerError, Unauthorized
from tracker.index import LiveIndex
from tracker.model import Position, Viewer
from tracker.parse import check_id
from tracker.refusals import Refusals
from tracker.rooms import Transport
from tracker.sessions import Disconnect
from tracker.store import Database
from tracker.store import shares as store
from tracker.store.shares import Link
from tracker.trips.model import ENDED, Trip
from tracker.trips.service import Trips

log = logging.getLogger("tracker.shares")

POSITIONS_EVERY_S = 0.5
CHECK_EVERY_S = 1.0
LIVE, COMPLETED, ENDED_STATE = "live", "completed", "ended"
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,128}$")


def link_state(link: Link, now_ms: float) -> str:
    """`live`, `completed` (the delivery is done) or `ended` (revoked, expired, cancelled)."""
    if link.revoked_ts is not None:
        return ENDED_STATE
    if link.trip.status == "completed":
        return COMPLETED
    if link.trip.status in ENDED or now_ms >= link.expires_ts:
        return ENDED_STATE
    return LIVE


def trip_view(trip: Trip, expires_ts: int) -> dict[str, Any]:
    """What a link shows of its trip: no fleet, ref or webhooks, no time of a fix (the ETA may come from one
    before the trip), and a fence destination not at all."""
    d = trip.destination
    return {
        "trip": trip.id,
        "device": trip.device,
        "status": trip.status,
        "eta_ts": trip.eta_ts,
        "remaining_m": None if trip.remaining_m is None else round(trip.remaining_m),
        "destination": None if d.lat is None else {"lat": d.lat, "lon": d.lon, "radius_m": d.radius_m},
        "expires_ts": expires_ts,
    }


def position_view(p: Position) -> dict[str, Any]:
    """A `positions` entry without the fleet and the cell."""
    return {
        "device": p.device,
        "lat": p.lat,
        "lon": p.lon,
        "ts": p.ts,
        "speed": p.speed,
        "heading": p.heading,
    }


@dataclass(slots=True)
class _Watch:
    """One socket of a link."""

    trip: str
    device: str
    since_ts: int  # the trip's start: nothing older is shown
    position_ts: int = -1  # the newest position sent
    shown: dict[str, Any] = field(default_factory=dict)  # the trip view sent last


class Shares:
    """Share links: issue, look up, revoke, and relay to their sockets (see the module docstring)."""

    def __init__(
        self,
        db: Database,
        index: LiveIndex,
        trips: Trips,
        refusals: Refusals | None,
        transport: Transport,
        cut: Disconnect,
    ) -> None:
        self._db, self._index, self._trips, self._refusals = db, index, trips, refusals
        self._transport, self._cut = transport, cut
        self._watches: dict[str, _Watch] = {}  # socket -> its link's trip
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    async def issue(self, trip: Trip) -> str:
        """A new link for `trip` (created with `share`), valid `share_ttl_s` from the trip's start; its
        token, shown this once only (coroutine)."""
        token = new_token()
        expires_ts = trip.created_ts + (trip.share_ttl_s or 0) * 1000
        if not await store.issue(self._db, trip.id, hash_token(token), expires_ts):
            raise InvalidInput(f"trip {trip.id!r} was not created with share, or has a link already")
        log.info("device=%s trip %s shared until %d", trip.device, trip.id, expires_ts)
        return token

    async def link(self, token: Any, origin: Origin) -> Link:
        """The link of `token` in whatever state (coroutine). Unauthorized (counted and paced as a failed
        authentication from `origin`) when no link has this token."""
        found = None
        if isinstance(token, str) and _TOKEN.match(token):
            digest = hash_token(token)
            found = await store.by_hash(self._db, digest)
            if found is not None and not hmac.compare_digest(found.token_hash, digest):
                found = None
        if found is None:
            exc: TrackerError = Unauthorized("unknown share link", "unknown_share")
            if self._refusals is not None:
                exc = await self._refusals.refuse(
                    exc, "unknown_share", origin.edge, origin.address, origin.asked
                )
            raise exc
        return found

    async def view(self, link: Link) -> dict[str, Any]:
        """The link's trip as it shows, with the progress this process holds (coroutine)."""
        return trip_view(self._trips.live(link.trip), link.expires_ts)

    async def admit(self, conn: str, token: Any, origin: Origin) -> Link:
        """Admit socket `conn` to the link of `token`; Unauthorized unless that link is live. The socket
        gets the trip (`share`) and the device's position at once, then whatever changes (coroutine)."""
        link = await self.link(token, origin)
        if link_state(link, time.time() * 1000) != LIVE:
            raise Unauthorized("this share link has ended", "share_ended")
        trip = link.trip
        self._watches[conn] = _Watch(trip.id, trip.device, trip.created_ts)
        log.info("device=%s share socket of trip %s connected", trip.device, trip.id)
        self._spawn(self._welcome(conn, link))
        return link

    def closed(self, conn: str) -> None:
        """Socket `conn` is gone."""
        self._watches.pop(conn, None)

    def holds(self, conn: str) -> bool:
        """True when `conn` is a share link's socket."""
        return conn in self._watches

    async def subscribe(self, conn: str, payload: Any) -> dict[str, Any]:
        """A share socket's `subscribe`: its own device only (it is subscribed to it already); the ack
        (coroutine)."""
        watch = self._watches.get(conn)
        if watch is None:
            return {"ok": False, "error": "not connected with a share link"}
        try:
            asked = check_id(payload.get("device") if isinstance(payload, dict) else None, "device")
        except InvalidInput:
            asked = None
        if asked != watch.device or len(payload) != 1:
            return {"ok": False, "error": "a share link shows its own device only"}
        watch.position_ts = -1
        await self._send_position(conn, watch)
        return {"ok": True}

    async def revoke(self, who: Viewer, trip_id: str) -> None:
        """End the link of a trip `who` may see, everywhere (coroutine); NotFound without a link."""
        trip = await self._trips.get(who, trip_id)
        if not await store.revoke(self._db, trip.id, int(time.time() * 1000), actor=who.name):
            raise NotFound(f"trip {trip_id!r} has no share link")
        log.info("device=%s share link of trip %s revoked (%s)", trip.device, trip.id, who.name)

    def notified(self, trip_id: str) -> None:
        """A link was revoked (NOTIFY, from any process): check its sockets here at once."""
        if any(w.trip == trip_id for w in self._watches.values()):
            self._wake.set()

    def catch_up(self) -> None:
        """Notifications may have been missed: check every link at once."""
        self._wake.set()

    async def run(self) -> None:
        """Relay positions and trip changes to share sockets, and end the links that ended, until
        cancelled (coroutine)."""
        checked = 0.0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POSITIONS_EVERY_S)
            if not self._watches:
                self._wake.clear()
                continue
            try:
                now = time.monotonic()
                if self._wake.is_set() or now - checked >= CHECK_EVERY_S:
                    self._wake.clear()
                    checked = now
                    await self._check()
                for conn, watch in list(self._watches.items()):
                    await self._send_position(conn, watch)
            except Exception:  # storage down: the next turn tries again
                log.exception("relaying share links failed")

    async def _welcome(self, conn: str, link: Link) -> None:
        # A round trip first: the socket's CONNECT packet goes out once `admit`'s caller returns, and the
        # client drops events that come before it.
        link = (await store.of_trips(self._db, [link.trip.id])).get(link.trip.id, link)
        watch = self._watches.get(conn)
        if watch is None:
            return
        watch.shown = await self.view(link)
        await self._transport.emit("share", watch.shown, conn)
        await self._send_position(conn, watch)

    async def _send_position(self, conn: str, watch: _Watch) -> None:
        p = self._index.get(watch.device)
        if p is None or p.ts < watch.since_ts or p.ts <= watch.position_ts:
            return
        watch.position_ts = p.ts
        await self._transport.emit("positions", [position_view(p)], conn)

    async def _check(self) -> None:
        """End the sockets of links that ended; send the trip to the others when it changed."""
        links = await store.of_trips(self._db, {w.trip for w in self._watches.values()})
        now_ms = time.time() * 1000
        for conn, watch in list(self._watches.items()):
            link = links.get(watch.trip)
            state = ENDED_STATE if link is None else link_state(link, now_ms)
            if state != LIVE:
                await self._end(conn, watch, state)
                continue
            assert link is not None
            view = await self.view(link)
            if view != watch.shown and conn in self._watches:
                watch.shown = view
                await self._transport.emit("trip", view, conn)

    async def _end(self, conn: str, watch: _Watch, state: str) -> None:
        self._watches.pop(conn, None)
        log.info("device=%s share link of trip %s %s: disconnecting", watch.device, watch.trip, state)
        try:
            await self._transport.emit("ended", {"trip": watch.trip, "state": state}, conn)
            await self._cut(conn)
        except Exception:
            log.exception("disconnecting a share socket of trip %s failed", watch.trip)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        async def guarded() -> None:
            try:
                await work
            except Exception:
                log.exception("welcoming a share socket failed")

        task = asyncio.create_task(guarded(), name="share-welcome")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Wait for welcomes in flight (coroutine)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
