"""The live index: each device's newest position, by fleet and by H3 cell.

Policy: live state only moves forward in time. A late fix (older than the newest one seen for its
device) is stored by the ingest loop but leaves the index, and so the viewers' maps, unchanged.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Collection, Iterable, Sequence
from dataclasses import replace
from typing import Any

import h3
import h3.api.basic_int as h3i
import numpy as np

from tracker.geo import cell_hex, distances_from_m
from tracker.model import Fix, Position

NEARBY_MAX_CELLS = 20_000  # a grid disk larger than this is not built: the devices are scanned instead
# Rings per radius: measured over the globe (pentagons included), the grid distance between the cells of
# two points d metres apart is at most d / average edge length + 1.01; 0.75 and 2 extra rings add margin.
_RING_STEP = 0.75
_RING_EXTRA = 2


def assign_cells(fixes: Sequence[Fix], resolution: int) -> None:
    """Fill in each fix's H3 cell (integer form) at `resolution`."""
    latlng_to_cell = h3i.latlng_to_cell
    for f in fixes:
        f.cell = latlng_to_cell(f.lat, f.lon, resolution)


class LiveIndex:
    """Newest position per device, with reverse maps fleet -> devices and cell -> devices."""

    def __init__(self, resolution: int = 9) -> None:
        self.resolution = resolution  # of every cell in the index (`load` re-cells other resolutions)
        self._latest: dict[str, Position] = {}
        self._cell_of: dict[str, int] = {}
        self._by_fleet: dict[str, set[str]] = {}
        self._by_cell: dict[int, set[str]] = {}
        # fleet -> cell -> devices: a lookup for some fleets visits only their devices
        self._fleet_cells: dict[str, dict[int, set[str]]] = {}

    def __len__(self) -> int:
        return len(self._latest)

    def advance(self, fixes: Iterable[Fix]) -> list[Position]:
        """Apply fixes; return the new position of each device that moved forward in time."""
        newest: dict[str, Fix] = {}  # first the newest fix per device, so one Position each is made
        for f in fixes:
            best = newest.get(f.device)
            if best is None or f.ts > best.ts:
                newest[f.device] = f
        moved = []
        for device, f in newest.items():
            current = self._latest.get(device)
            if current is not None and current.ts >= f.ts:
                continue
            cell = f.cell or h3i.latlng_to_cell(f.lat, f.lon, self.resolution)  # 0: not assigned yet
            position = Position(device, f.fleet, f.ts, f.lat, f.lon, f.speed, f.heading, cell_hex(cell))
            self._put(position, cell)
            moved.append(position)
        return moved

    def load(self, positions: Iterable[tuple[Position, int]]) -> None:
        """Seed the index (at start-up) with (position, integer cell) pairs.

        A cell stored under another TRACKER_H3_RESOLUTION is computed again at this index's resolution,
        so that the index, its rooms and `nearby` only ever deal with one resolution.
        """
        for position, cell in positions:
            current = self._latest.get(position.device)
            if current is None or current.ts < position.ts:
                if not h3i.is_valid_cell(cell) or h3i.get_resolution(cell) != self.resolution:
                    cell = h3i.latlng_to_cell(position.lat, position.lon, self.resolution)
                    position = replace(position, cell=cell_hex(cell))
                self._put(position, cell)

    def _put(self, position: Position, cell: int) -> None:
        device, fleet = position.device, position.fleet
        old = self._latest.get(device)
        old_cell = self._cell_of.get(device)
        if old is not None and (old.fleet != fleet or old_cell != cell):
            self._unplace(device, old.fleet, old_cell)
        if old is None or old.fleet != fleet or old_cell != cell:
            self._by_cell.setdefault(cell, set()).add(device)
            self._fleet_cells.setdefault(fleet, {}).setdefault(cell, set()).add(device)
            self._by_fleet.setdefault(fleet, set()).add(device)
            self._cell_of[device] = cell
        self._latest[device] = position

    def _unplace(self, device: str, fleet: str, cell: int | None) -> None:
        """Take `device` out of the reverse maps of `fleet` and `cell` (the position stays)."""
        _discard(self._by_fleet, fleet, device)
        if cell is not None:
            _discard(self._by_cell, cell, device)
            cells = self._fleet_cells.get(fleet)
            if cells is not None:
                _discard(cells, cell, device)
                if not cells:
                    del self._fleet_cells[fleet]

    def forget(self, device: str) -> None:
        """Drop `device` (it was erased)."""
        position = self._latest.pop(device, None)
        if position is None:
            return
        self._unplace(device, position.fleet, self._cell_of.pop(device, None))

    def get(self, device: str) -> Position | None:
        """The newest position of `device`, if any."""
        return self._latest.get(device)

    def in_fleets(self, fleets: Iterable[str]) -> list[Position]:
        """Newest positions of every device of `fleets`."""
        return _positions(self._latest, [d for fleet in fleets for d in tuple(self._by_fleet.get(fleet, ()))])

    def fleets(self) -> list[str]:
        """Every fleet with at least one positioned device."""
        return list(self._by_fleet)

    def in_cells(self, cells: Iterable[int]) -> list[Position]:
        """Newest positions of the devices whose current cell is one of `cells`."""
        return [self._latest[d] for c in cells for d in self._by_cell.get(c, ())]

    def nearby(
        self,
        lat: float,
        lon: float,
        radius_m: float,
        fleets: Collection[str] | None = None,
        limit: int = 100,
    ) -> list[tuple[Position, float]]:
        """The newest positions of `fleets` (None: every fleet) within `radius_m` metres (geodesic, WGS84)
        of (lat, lon), with their distances, nearest first (ties by device id), at most `limit`.

        Candidates come from the H3 grid disk around the point's cell at the index's resolution, with
        enough rings for the radius. When that disk would hold
        more than NEARBY_MAX_CELLS cells, or more cells than the fleets have devices, the fleets' devices
        are scanned instead (one pass, vectorised), since a coarser disk could not be looked up in the
        index without visiting as many fine cells. Exact distances are then computed for the candidates
        and filtered, so the result is exact either way.
        """
        if limit <= 0 or radius_m < 0:
            return []
        candidates = self._nearby_candidates(lat, lon, radius_m, fleets)
        if not candidates:
            return []
        lons = np.fromiter((p.lon for p in candidates), np.float64, len(candidates))
        lats = np.fromiter((p.lat for p in candidates), np.float64, len(candidates))
        dist = distances_from_m(lat, lon, lats, lons)
        inside = np.flatnonzero(dist <= radius_m).tolist()
        best = heapq.nsmallest(limit, inside, key=lambda i: (dist[i], candidates[i].device))
        return [(candidates[i], float(dist[i])) for i in best]

    def _nearby_candidates(
        self, lat: float, lon: float, radius_m: float, fleets: Collection[str] | None
    ) -> list[Position]:
        """Positions of `fleets` that may lie within `radius_m` of the point (a superset)."""
        allowed = None if fleets is None else set(fleets)
        if allowed is None:
            pool = len(self._latest)
        else:
            pool = sum(len(self._by_fleet.get(f, ())) for f in allowed)
        if pool == 0:
            return []
        res = self.resolution
        k = math.ceil(radius_m / (_RING_STEP * h3.average_hexagon_edge_length(res, "m"))) + _RING_EXTRA
        disk_cells = 3 * k * (k + 1) + 1
        if disk_cells > NEARBY_MAX_CELLS or disk_cells > pool:
            if allowed is None:
                return list(self._latest.values())
            return self.in_fleets(allowed)
        disk = h3i.grid_disk(h3i.latlng_to_cell(lat, lon, res), k)
        maps = [self._by_cell] if allowed is None else [self._fleet_cells.get(f, {}) for f in allowed]
        # Each set is copied by one C call (tuple) before it is walked: a near rule reads the index from a
        # worker thread while the event loop moves devices in it.
        ids = [d for by_cell in maps if by_cell for cell in disk for d in tuple(by_cell.get(cell, ()))]
        return _positions(self._latest, ids)

    def candidates(
        self, lat: float, lon: float, radius_m: float, fleets: Collection[str] | None = None
    ) -> list[Position]:
        """Newest positions of `fleets` (None: every fleet) that may lie within `radius_m` of the point: a
        superset from the H3 grid disk (as `nearby`), to be measured by the caller, who may have several
        points to measure at once."""
        if radius_m < 0:
            return []
        return self._nearby_candidates(lat, lon, radius_m, fleets)


def _positions(latest: dict[str, Position], ids: Iterable[str]) -> list[Position]:
    """The positions of `ids` still in `latest` (a device may be forgotten while a thread reads)."""
    found = (latest.get(d) for d in ids)
    return [p for p in found if p is not None]


def _discard(groups: dict[Any, set[str]], key: Any, device: str) -> None:
    """Remove `device` from `groups[key]`, and the group once empty."""
    members = groups.get(key)
    if members is not None:
        members.discard(device)
        if not members:
            del groups[key]
