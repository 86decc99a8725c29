"""Live fan-out to viewers: room names, subscriptions with their snapshot, and coalesced `positions`.

Rooms: `fleet:<fleet>`, `device:<device>`, `all` (viewers granted every fleet), and for bounding boxes
`bbox:<fleet>:<h3 cell>` (or `bbox:*:<cell>` for viewers granted every fleet) at a few coarse H3
resolutions. Keying bbox rooms by fleet means a bbox subscription can only ever receive the fleets it
was granted. Coalescing: moved positions accumulate per room and a flush every interval emits at most
one `positions` event per room, holding the newest position of each device that moved.

The transport is injected (`Transport`), so this module never touches Socket.IO. Rooms nobody listens
to are skipped when moves are queued, so a server with few viewers does little work per fix.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import h3
import h3.api.basic_int as h3i

from tracker.errors import Forbidden, InvalidInput
from tracker.index import LiveIndex
from tracker.metrics import Metrics
from tracker.model import Position, Viewer
from tracker.parse import check_id
from tracker.store import Database, accounts

log = logging.getLogger("tracker.broadcast")


class Transport(Protocol):
    """How events reach viewers' rooms."""

    def listening(self, room: str) -> bool:
        """True when the room may have listeners (always, when rooms are shared between processes)."""
        ...

    async def emit(self, event: str, data: Any, room: str | list[str]) -> None:
        """Send `event` to everyone in `room` (or in any of several rooms, once each) (coroutine)."""
        ...


BBOX_RESOLUTIONS = (5, 3, 1)  # finest first: a subscription uses the finest one within budget
BBOX_ROOM_BUDGET = 1000  # rooms one bbox subscription may join before falling back to fleet rooms
ALL_ROOM = "all"
BBOX_ANY = "bbox:any"  # joined with every bbox subscription: tells whether box rooms need computing


def fleet_room(fleet: str) -> str:
    return f"fleet:{fleet}"


def device_room(device: str) -> str:
    return f"device:{device}"


def event_rooms(fleet: str, device: str) -> list[str]:
    """Where news about one device goes (geofence events, message statuses): the viewers of its fleet, of
    the device itself, and of every fleet (a viewer granted all fleets that watches the whole map)."""
    return [fleet_room(fleet), device_room(device), ALL_ROOM]


def bbox_room(fleet: str, cell: int) -> str:
    return f"bbox:{fleet}:{cell:x}"


def rooms_for(position: Position, bbox: bool = True) -> list[str]:
    """Every room that a move of this position concerns (without the box rooms if `bbox` is false)."""
    rooms = [fleet_room(position.fleet), device_room(position.device), ALL_ROOM]
    if bbox:
        finest = h3i.latlng_to_cell(position.lat, position.lon, BBOX_RESOLUTIONS[0])
        for res in BBOX_RESOLUTIONS:
            cell = h3i.cell_to_parent(finest, res)
            rooms.append(bbox_room(position.fleet, cell))
            rooms.append(bbox_room("*", cell))
    return rooms


@dataclass(slots=True, frozen=True)
class Subscription:
    """What a viewer joins for one subscribe payload, and the snapshot it gets at once."""

    rooms: list[str]
    snapshot: list[Position]


def parse_bbox(value: Any, name: str = "bbox") -> tuple[float, float, float, float]:
    """[west, south, east, north] in degrees; west > east crosses the antimeridian."""
    if not isinstance(value, list | tuple) or len(value) != 4:
        raise InvalidInput(f"{name} must be [west, south, east, north]")
    nums: list[float] = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise InvalidInput(f"{name} must hold four finite numbers: [west, south, east, north]")
        nums.append(float(v))
    west, south, east, north = nums
    if not (-180 <= west <= 180 and -180 <= east <= 180):
        raise InvalidInput(f"{name} west and east must be between -180 and 180")
    if not (-90 <= south < north <= 90):
        raise InvalidInput(f"{name} needs -90 <= south < north <= 90")
    if west == east:
        raise InvalidInput(f"{name} west and east must differ")
    return west, south, east, north


def _boxes(bbox: tuple[float, float, float, float]) -> list[tuple[float, float, float, float]]:
    """The box as pieces at most 90 degrees wide that do not cross the antimeridian.

    H3 reads a polygon edge as the shorter way around the globe, so a piece wider than 180 degrees
    would cover the rest of the world instead.
    """
    west, south, east, north = bbox
    spans = [(west, east)] if west < east else [(west, 180.0), (-180.0, east)]
    pieces = []
    for w, e in spans:
        while e - w > 90.0:
            pieces.append((w, south, w + 90.0, north))
            w += 90.0
        pieces.append((w, south, e, north))
    return pieces


def in_bbox(p: Position, bbox: tuple[float, float, float, float]) -> bool:
    """True when `p` lies in the box (edges included)."""
    return any(w <= p.lon <= e and s <= p.lat <= n for w, s, e, n in _boxes(bbox))


def bbox_cells(bbox: tuple[float, float, float, float], budget: int) -> list[int] | None:
    """H3 cells (at the finest of BBOX_RESOLUTIONS within `budget`) covering the box, or None."""
    for res in BBOX_RESOLUTIONS:
        area = 0.0
        for w, s, e, n in _boxes(bbox):
            height = (n - s) * 111.2
            width = (e - w) * 111.2 * max(math.cos(math.radians((s + n) / 2)), 0.01)
            area += height * width
        if area / h3.average_hexagon_area(res, "km^2") > budget / 2:
            continue
        cells: set[int] = set()
        for w, s, e, n in _boxes(bbox):
            shape = h3.LatLngPoly([(s, w), (s, e), (n, e), (n, w)])
            for c in h3.h3shape_to_cells_experimental(shape, res, contain="overlap"):
                cells.add(h3.str_to_int(c))
        if len(cells) <= budget:
            return sorted(cells)
    return None


async def plan_subscription(
    viewer: Viewer, payload: Any, index: LiveIndex, db: Database, *, leaving: bool = False
) -> Subscription:
    """The rooms and snapshot for a `subscribe` payload, or the rooms to leave for `unsubscribe`
    (`leaving`: no snapshot, and BBOX_ANY stays joined since other boxes of the viewer may need it).

    Raises InvalidInput for a malformed payload and Forbidden for fleets or devices not granted.
    """
    if not isinstance(payload, dict):
        raise InvalidInput('subscribe takes {"fleet": id}, {"device": id} or {"bbox": [w, s, e, n]}')
    keys = [k for k in ("fleet", "device", "bbox") if k in payload]
    if len(keys) != 1:
        raise InvalidInput('subscribe takes exactly one of "fleet", "device" or "bbox"')
    if "fleet" in payload:
        fleet = check_id(payload["fleet"], "fleet")
        if not viewer.grants(fleet):
            raise Forbidden(f"this token does not grant fleet {fleet!r}")
        return Subscription([fleet_room(fleet)], [] if leaving else index.in_fleets([fleet]))
    if "device" in payload:
        device_id = check_id(payload["device"], "device")
        device = await accounts.get_device(db, device_id)
        if device is None or not viewer.grants(device.fleet):
            raise Forbidden(f"device {device_id!r} is unknown or not in a fleet this token grants")
        current = None if leaving else index.get(device_id)
        return Subscription([device_room(device_id)], [current] if current else [])
    bbox = parse_bbox(payload["bbox"])
    fleets = ["*"] if viewer.fleets is None else sorted(viewer.fleets)
    visible = index.fleets() if viewer.fleets is None else fleets
    inside = [] if leaving else [p for p in index.in_fleets(visible) if in_bbox(p, bbox)]
    cells = bbox_cells(bbox, max(1, BBOX_ROOM_BUDGET // len(fleets)))
    if cells is None:  # a box too large for cell rooms: every position of the granted fleets
        rooms = [ALL_ROOM] if viewer.fleets is None else [fleet_room(f) for f in fleets]
    else:
        rooms = ([] if leaving else [BBOX_ANY]) + [bbox_room(f, c) for f in fleets for c in cells]
    return Subscription(rooms, inside)


class Broadcaster:
    """Coalesces moved positions per room and emits them once per interval."""

    def __init__(self, transport: Transport, interval_ms: int, metrics: Metrics) -> None:
        self._transport = transport
        self._interval = interval_ms / 1000
        self._metrics = metrics
        self._pending: dict[str, dict[str, Position]] = {}

    def publish(self, positions: Iterable[Position]) -> None:
        """Queue moved positions for the next flush (newest per device per room wins)."""
        pending = self._pending
        listening = self._transport.listening
        with_boxes = listening(BBOX_ANY)
        for p in positions:
            for room in rooms_for(p, with_boxes):
                if listening(room):
                    pending.setdefault(room, {})[p.device] = p

    async def flush(self) -> None:
        """Emit one `positions` event per room with pending moves (coroutine)."""
        pending, self._pending = self._pending, {}
        for room, by_device in pending.items():
            await self._transport.emit("positions", [p.to_json() for p in by_device.values()], room)
            self._metrics.positions_events.inc()

    async def run(self) -> None:
        """Flush every interval until cancelled (coroutine); a failed flush is logged, not fatal."""
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                await self.flush()
            except Exception:
                log.exception("positions flush failed")
            await asyncio.sleep(max(0.0, self._interval - (loop.time() - started)))
