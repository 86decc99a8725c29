"""Subscriptions: what a viewer's `subscribe` joins, checked against what its token grants, and the
snapshot it gets at once.

A fleet must be granted; a device must exist in a granted fleet (read from PostGIS, so a device of
another fleet and an unknown id get the same refusal); a box joins the cell rooms of the granted fleets
only, or their fleet rooms when it is too large for cells.

In a cluster (`shared`) the snapshot is the cluster's: this process's index hears of another process's
moves a broadcast interval late, so the newest stored positions of the subscription's scope are loaded
into it first (forward only). A viewer subscribing right after a device's fix was acked elsewhere gets
that fix, as it would from the process that took it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tracker.errors import Forbidden, InvalidInput
from tracker.index import LiveIndex
from tracker.model import Position, Viewer
from tracker.parse import check_id, parse_bbox
from tracker.rooms import (
    ALL_ROOM,
    BBOX_ANY,
    BBOX_ROOM_BUDGET,
    bbox_cells,
    bbox_room,
    device_room,
    fleet_room,
    in_bbox,
)
from tracker.store import Database, accounts
from tracker.store.latest import newest_positions


@dataclass(slots=True, frozen=True)
class Subscription:
    """What a viewer joins for one subscribe payload, and the snapshot it gets at once."""

    rooms: list[str]
    snapshot: list[Position]


async def plan_subscription(
    viewer: Viewer,
    payload: Any,
    index: LiveIndex,
    db: Database,
    *,
    leaving: bool = False,
    shared: bool = False,
) -> Subscription:
    """The rooms and snapshot for a `subscribe` payload, or the rooms to leave for `unsubscribe`
    (`leaving`: no snapshot, and BBOX_ANY stays joined since other boxes of the viewer may need it).
    `shared`: other processes ingest fixes too; the snapshot reads their newest stored ones.

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
        if shared and not leaving:
            index.load(await newest_positions(db, fleets=[fleet]))
        return Subscription([fleet_room(fleet)], [] if leaving else index.in_fleets([fleet]))
    if "device" in payload:
        device_id = check_id(payload["device"], "device")
        device = await accounts.get_device(db, device_id)
        if device is None or not viewer.grants(device.fleet):
            raise Forbidden(f"device {device_id!r} is unknown or not in a fleet this token grants")
        if shared and not leaving:
            index.load(await newest_positions(db, device=device_id))
        current = None if leaving else index.get(device_id)
        return Subscription([device_room(device_id)], [current] if current else [])
    bbox = parse_bbox(payload["bbox"])
    fleets = ["*"] if viewer.fleets is None else sorted(viewer.fleets)
    if shared and not leaving:
        index.load(await newest_positions(db, fleets=None if viewer.fleets is None else fleets))
    visible = index.fleets() if viewer.fleets is None else fleets
    inside = [] if leaving else [p for p in index.in_fleets(visible) if in_bbox(p, bbox)]
    cells = bbox_cells(bbox, max(1, BBOX_ROOM_BUDGET // len(fleets)))
    if cells is None:  # a box too large for cell rooms: every position of the granted fleets
        rooms = [ALL_ROOM] if viewer.fleets is None else [fleet_room(f) for f in fleets]
    else:
        rooms = ([] if leaving else [BBOX_ANY]) + [bbox_room(f, c) for f in fleets for c in cells]
    return Subscription(rooms, inside)
