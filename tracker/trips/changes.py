"""What a batch of fixes does to trips: the per-fix state machine, and the changes it returns.

`step` moves one trip by one fix: `approaching` on the first fix within `approach_m` of the
destination, `arrived` on the first inside it (one fix may fire both), the ETA and distance to go
recomputed. `TripDetection` collects a batch's results for the store (what to write, compare-and-set on
the status each trip had) and for memory (applied only after COMMIT).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tracker.model import Fix
from tracker.trips import eta
from tracker.trips.model import Trip, TripEvent


@dataclass
class TripDetection:
    """What one batch changed: trips after it (changed ones), their status before, the trips whose row
    must be written (a status change, or stored progress older than the progress interval), the events
    in order, and the devices' speeds after it."""

    trips: dict[str, Trip] = field(default_factory=dict)
    before: dict[str, str] = field(default_factory=dict)
    writes: list[str] = field(default_factory=list)
    events: list[TripEvent] = field(default_factory=list)
    speeds: dict[str, eta.Speed] = field(default_factory=dict)
    # (trip, eta_ts, remaining_m, progress_ts, speed_mps) of trips whose progress is neither written nor a
    # new Trip: applied to that Trip object in place.
    progress: list[tuple[Trip, int | None, float, int, float | None]] = field(default_factory=list)
    stored: list[TripEvent] = field(default_factory=list)  # the events written (set by the store)
    lost: set[str] = field(default_factory=set)  # trips ended elsewhere meanwhile (set by the store)

    def extend(self, other: TripDetection) -> None:
        """Add the results of another part of the same batch (other devices)."""
        self.trips.update(other.trips)
        self.before.update(other.before)
        self.writes += other.writes
        self.events += other.events
        self.speeds.update(other.speeds)
        self.progress += other.progress

    @property
    def devices(self) -> set[str]:
        """The devices whose trips the batch writes."""
        return {self.trips[t].device for t in self.writes}


def step(
    trip: Trip, f: Fix, remaining: float, to_go: float, speed: eta.Speed, detour: float, out: TripDetection
) -> Trip:
    """The trip after one fix at `remaining` metres from its destination (`to_go` to its edge)."""
    status = trip.status
    approaching_ts, arrived_ts = trip.approaching_ts, trip.arrived_ts
    eta_ts: int | None
    if to_go <= 0:
        remaining, eta_ts = 0.0, f.ts
    else:
        eta_ts = eta.eta_ts(f.ts, to_go, speed, detour)
    fired = []
    if status == "started" and (remaining <= trip.approach_m or to_go <= 0):
        status, approaching_ts = "approaching", f.ts
        fired.append(status)
    if to_go <= 0:
        status, arrived_ts = "arrived", f.ts
        fired.append(status)
    new = trip.moved(status, eta_ts, remaining, f.ts, eta.known(speed), approaching_ts, arrived_ts)
    for s in fired:
        out.events.append(
            TripEvent(trip.id, trip.device, trip.fleet, s, f.ts, eta_ts, remaining, trip.ref, trip.notify)
        )
    return new
