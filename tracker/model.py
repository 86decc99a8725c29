"""The tracker's data types: what a device sends, what the live index keeps, who may see what.

Plain slotted dataclasses: they cross every layer, so they carry no behaviour beyond their own shape.
Times are integer milliseconds since the Unix epoch (UTC) everywhere inside the tracker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Fix:
    """One validated GPS fix of one device; `cell` is filled in by the ingest loop."""

    device: str
    fleet: str
    ts: int
    lat: float
    lon: float
    speed: float | None = None
    heading: float | None = None
    accuracy: float | None = None
    altitude: float | None = None
    battery: float | None = None
    attrs: dict[str, Any] | None = None
    cell: int = 0


@dataclass(slots=True, frozen=True)
class Position:
    """The newest known position of a device, as the live index keeps and viewers receive it."""

    device: str
    fleet: str
    ts: int
    lat: float
    lon: float
    speed: float | None
    heading: float | None
    cell: str  # H3 cell at the configured resolution, hex string

    def to_json(self) -> dict[str, Any]:
        """The `positions` event entry of the contract."""
        return {
            "device": self.device,
            "fleet": self.fleet,
            "lat": self.lat,
            "lon": self.lon,
            "ts": self.ts,
            "speed": self.speed,
            "heading": self.heading,
            "cell": self.cell,
        }


@dataclass(slots=True, frozen=True)
class Device:
    """A registered device: it writes fixes as itself, into its one fleet."""

    id: str
    fleet: str
    name: str | None = None


@dataclass(slots=True, frozen=True)
class Viewer:
    """Who reads: a named viewer token granting some fleets, or all of them (`fleets` is None)."""

    name: str
    fleets: frozenset[str] | None = field(default=None)

    def grants(self, fleet: str) -> bool:
        """True when this viewer may see `fleet`."""
        return self.fleets is None or fleet in self.fleets


@dataclass(slots=True, frozen=True)
class WriteResult:
    """What one submission (one `fix` event) got: accepted and duplicate counts after COMMIT."""

    accepted: int
    duplicates: int
