"""The live index: each device's newest position, by fleet and by H3 cell.

Policy: live state only moves forward in time. A late fix (older than the newest one seen for its
device) is stored by the ingest loop but leaves the index, and so the viewers' maps, unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import h3.api.basic_int as h3i

from tracker.model import Fix, Position


def assign_cells(fixes: Sequence[Fix], resolution: int) -> None:
    """Fill in each fix's H3 cell (integer form) at `resolution`."""
    latlng_to_cell = h3i.latlng_to_cell
    for f in fixes:
        f.cell = latlng_to_cell(f.lat, f.lon, resolution)


def cell_hex(cell: int) -> str:
    """The H3 hex string of an integer cell, as the contract shows cells."""
    return format(cell, "x")


class LiveIndex:
    """Newest position per device, with reverse maps fleet -> devices and cell -> devices."""

    def __init__(self) -> None:
        self._latest: dict[str, Position] = {}
        self._cell_of: dict[str, int] = {}
        self._by_fleet: dict[str, set[str]] = {}
        self._by_cell: dict[int, set[str]] = {}

    def __len__(self) -> int:
        return len(self._latest)

    def advance(self, fixes: Iterable[Fix]) -> list[Position]:
        """Apply fixes; return the new position of each device that moved forward in time."""
        moved: dict[str, Position] = {}
        for f in fixes:
            current = self._latest.get(f.device)
            if current is not None and current.ts >= f.ts:
                continue
            position = Position(f.device, f.fleet, f.ts, f.lat, f.lon, f.speed, f.heading, cell_hex(f.cell))
            self._put(position, f.cell)
            moved[f.device] = position
        return list(moved.values())

    def load(self, positions: Iterable[tuple[Position, int]]) -> None:
        """Seed the index (at start-up) with (position, integer cell) pairs."""
        for position, cell in positions:
            current = self._latest.get(position.device)
            if current is None or current.ts < position.ts:
                self._put(position, cell)

    def _put(self, position: Position, cell: int) -> None:
        device = position.device
        old_cell = self._cell_of.get(device)
        if old_cell != cell:
            if old_cell is not None:
                members = self._by_cell[old_cell]
                members.discard(device)
                if not members:
                    del self._by_cell[old_cell]
            self._by_cell.setdefault(cell, set()).add(device)
            self._cell_of[device] = cell
        if device not in self._latest:
            self._by_fleet.setdefault(position.fleet, set()).add(device)
        self._latest[device] = position

    def get(self, device: str) -> Position | None:
        """The newest position of `device`, if any."""
        return self._latest.get(device)

    def in_fleets(self, fleets: Iterable[str]) -> list[Position]:
        """Newest positions of every device of `fleets`."""
        return [self._latest[d] for fleet in fleets for d in self._by_fleet.get(fleet, ())]

    def fleets(self) -> list[str]:
        """Every fleet with at least one positioned device."""
        return list(self._by_fleet)

    def in_cells(self, cells: Iterable[int]) -> list[Position]:
        """Newest positions of the devices whose current cell is one of `cells`."""
        return [self._latest[d] for c in cells for d in self._by_cell.get(c, ())]
