"""A trip's data: where a device is going, how far it has come, and each change of its status.

Status runs `started -> approaching -> arrived -> completed`, or ends early as `cancelled` or `expired`.
Only `started` and `approaching` trips move with fixes (ACTIVE); an `arrived` trip waits for the
dispatcher to complete it. Times are ms since the epoch, distances metres, speeds m/s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

STATUSES = ("started", "approaching", "arrived", "completed", "cancelled", "expired")
ACTIVE = ("started", "approaching")  # evaluated against each fix of the device
OPEN = ("started", "approaching", "arrived")  # may still be completed or cancelled
ENDED = ("completed", "cancelled", "expired")


@dataclass(slots=True, frozen=True)
class Destination:
    """A point with a radius, or a loaded fence (`fence` set, `lat`/`lon` None)."""

    lat: float | None
    lon: float | None
    radius_m: float
    fence: str | None = None

    def to_json(self) -> dict[str, Any]:
        if self.fence is not None:
            return {"fence": self.fence}
        return {"lat": self.lat, "lon": self.lon, "radius_m": self.radius_m}


@dataclass(slots=True)
class Trip:
    """One trip as stored, with its newest progress (`eta_ts`, `remaining_m` as of the fix `progress_ts`).
    Treated as immutable (a change is a new Trip, `moved`); not frozen, since the ingest path makes one per
    fix of a device on a trip and a frozen dataclass costs twice as much to build."""

    id: str
    device: str
    fleet: str
    status: str
    destination: Destination
    approach_m: float
    ref: str | None
    notify: tuple[str, ...]
    created_ts: int
    expires_ts: int
    eta_ts: int | None = None
    remaining_m: float | None = None
    progress_ts: int | None = None
    speed_mps: float | None = None
    approaching_ts: int | None = None
    arrived_ts: int | None = None
    ended_ts: int | None = None
    share: bool = False
    share_ttl_s: int | None = None
    # The `progress_ts` last stored: a progress write is due `TRACKER_TRIP_PROGRESS_S` after it (the
    # in-memory progress moves with every fix, so it cannot tell when the store was last written).
    saved_ts: int | None = None

    def moved(
        self,
        status: str,
        eta_ts: int | None,
        remaining_m: float,
        progress_ts: int,
        speed_mps: float | None,
        approaching_ts: int | None,
        arrived_ts: int | None,
    ) -> Trip:
        """This trip after a fix: `dataclasses.replace` of those fields, without its per-call cost."""
        return Trip(
            self.id,
            self.device,
            self.fleet,
            status,
            self.destination,
            self.approach_m,
            self.ref,
            self.notify,
            self.created_ts,
            self.expires_ts,
            eta_ts,
            remaining_m,
            progress_ts,
            speed_mps,
            approaching_ts,
            arrived_ts,
            self.ended_ts,
            self.share,
            self.share_ttl_s,
            self.saved_ts,
        )

    def to_json(self) -> dict[str, Any]:
        """The trip as the HTTP API answers it (`share_url` is added by the share-link feature)."""
        return {
            "id": self.id,
            "device": self.device,
            "fleet": self.fleet,
            "status": self.status,
            "destination": self.destination.to_json(),
            "approach_m": self.approach_m,
            "ref": self.ref,
            "notify": list(self.notify),
            "eta_ts": self.eta_ts,
            "remaining_m": None if self.remaining_m is None else round(self.remaining_m, 1),
            "progress_ts": self.progress_ts,
            "created_ts": self.created_ts,
            "expires_ts": self.expires_ts,
            "approaching_ts": self.approaching_ts,
            "arrived_ts": self.arrived_ts,
            "ended_ts": self.ended_ts,
            "share": self.share,
        }


@dataclass(slots=True)
class TripEvent:
    """One status change of a trip; `id` is set once it is stored."""

    trip: str
    device: str
    fleet: str
    status: str
    ts: int
    eta_ts: int | None
    remaining_m: float | None
    ref: str | None
    notify: tuple[str, ...] = ()
    id: str = ""

    def to_json(self) -> dict[str, Any]:
        """The `trip` event payload of the contract (viewers, the device's `alert`, webhooks)."""
        return {
            "id": self.id,
            "trip": self.trip,
            "device": self.device,
            "fleet": self.fleet,
            "status": self.status,
            "ts": self.ts,
            "eta_ts": self.eta_ts,
            "remaining_m": None if self.remaining_m is None else round(self.remaining_m, 1),
            "ref": self.ref,
        }
