"""Rooms: where live news about devices goes, and which rooms a position or a box concerns.

Rooms: `fleet:<fleet>`, `device:<device>`, `all` (viewers granted every fleet), and for bounding boxes
`bbox:<fleet>:<h3 cell>` (or `bbox:*:<cell>` for viewers granted every fleet) at a few coarse H3
resolutions. Keying bbox rooms by fleet means a bbox subscription can only ever receive the fleets it
was granted. The transport to rooms is injected (`Transport`), so the core never touches Socket.IO.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import h3
import h3.api.basic_int as h3i

from tracker.model import Position
from tracker.parse import Box


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


def _boxes(bbox: Box) -> list[Box]:
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


def in_bbox(p: Position, bbox: Box) -> bool:
    """True when `p` lies in the box (edges included)."""
    return any(w <= p.lon <= e and s <= p.lat <= n for w, s, e, n in _boxes(bbox))


def bbox_cells(bbox: Box, budget: int) -> list[int] | None:
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
