"""Trip evaluation for one batch of fixes: pure (trips and speeds in, changes and events out).

Per device with active trips, in fix order and only for fixes newer than the device's head (the same
`todo` the fence detection walks, so a late fix moves no trip): the segment from the previous fix
advances the device's moving speed (`tracker.trips.eta`); then each active trip takes, in this order,
`approaching` on the first fix within `approach_m` of the destination and `arrived` on the first fix
inside it (one fix may fire both). A fix reached at an implausible speed from the last good one (a GPS
jump) moves nothing. Distances for the whole batch are computed in a few vectorised calls.

The caller writes `writes` (compare-and-set on the status each trip had) with the fixes, and applies
the result to memory only after COMMIT.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import shapely

from tracker.geo import FloatArray, distances_from_m, pairwise_distance_m
from tracker.model import Fence, Fix, Head
from tracker.trips import eta
from tracker.trips.model import ACTIVE, Trip, TripEvent

_M_PER_DEG = 111_320.0  # metres per degree of latitude, for the local projection of polygon fences


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
    stored: list[TripEvent] = field(default_factory=list)  # the events written (set by the store)
    lost: set[str] = field(default_factory=set)  # trips ended elsewhere meanwhile (set by the store)

    @property
    def devices(self) -> set[str]:
        """The devices whose trips the batch writes."""
        return {self.trips[t].device for t in self.writes}


def evaluate(
    active: Mapping[str, Mapping[str, Trip]],
    speeds: Mapping[str, eta.Speed],
    todo: Mapping[str, Sequence[Fix]],
    heads: Mapping[str, Head],
    fence: Callable[[str], Fence | None],
    *,
    detour: float,
    progress_ms: int,
) -> TripDetection:
    """Evaluate the newest fixes of each device (`todo`, from `newest_per_device`) against its active
    trips; see the module docstring. Pure."""
    out = TripDetection()
    devices = [d for d in todo if active.get(d)]
    if not devices:
        return out
    for device in devices:
        fixes = todo[device]
        head = heads.get(device)
        steps = _steps(head, fixes)
        speed = speeds.get(device, eta.Speed())
        trips = [t for t in active[device].values() if t.status in ACTIVE]
        dists = {t.id: _distances(t, fixes, fence) for t in trips}
        current = {t.id: t for t in trips}
        for i, f in enumerate(fixes):
            dt_s, dist_m, good = steps[i]
            if not good:
                continue
            if dt_s > 0:
                speed = eta.advance(speed, dt_s, dist_m, max(f.accuracy or 0.0, 0.0))
            for trip_id, trip in current.items():
                d = dists[trip_id]
                if trip.status not in ACTIVE or d is None:
                    continue
                current[trip_id] = _step(trip, f, float(d[0][i]), float(d[1][i]), speed, detour, out)
        out.speeds[device] = speed
        for trip_id, trip in current.items():
            old = active[device][trip_id]
            if trip is old:
                continue
            out.trips[trip_id] = trip
            out.before[trip_id] = old.status
            due = old.progress_ts is None or (trip.progress_ts or 0) - old.progress_ts >= progress_ms
            if trip.status != old.status or due:
                out.writes.append(trip_id)
    return out


def _step(
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
    new = replace(
        trip,
        status=status,
        eta_ts=eta_ts,
        remaining_m=remaining,
        progress_ts=f.ts,
        speed_mps=eta.known(speed),
        approaching_ts=approaching_ts,
        arrived_ts=arrived_ts,
    )
    for s in fired:
        out.events.append(
            TripEvent(trip.id, trip.device, trip.fleet, s, f.ts, eta_ts, remaining, trip.ref, trip.notify)
        )
    return new


def _steps(head: Head | None, fixes: Sequence[Fix]) -> list[tuple[float, float, bool]]:
    """Per fix: (seconds and metres from the last good fix, whether this fix is good). A fix farther
    from the last good one than a jump allows is not good, and the next is measured from that one."""
    n = len(fixes)
    lat = np.fromiter((f.lat for f in fixes), dtype=np.float64, count=n)
    lon = np.fromiter((f.lon for f in fixes), dtype=np.float64, count=n)
    ts = np.fromiter((f.ts for f in fixes), dtype=np.int64, count=n)
    prev_lat = np.r_[head.lat if head else lat[0], lat[:-1]]
    prev_lon = np.r_[head.lon if head else lon[0], lon[:-1]]
    dist = pairwise_distance_m(prev_lat, prev_lon, lat, lon)
    out: list[tuple[float, float, bool]] = []
    last = (head.lat, head.lon, head.ts) if head is not None else None  # the last good fix
    previous_good = True  # whether `last` is the fix just before this one (then `dist` holds the segment)
    for i in range(n):
        if last is None:
            out.append((0.0, 0.0, True))
        else:
            if previous_good:
                d = float(dist[i])
            else:
                d = float(distances_from_m(last[0], last[1], lat[i : i + 1], lon[i : i + 1])[0])
            dt = (int(ts[i]) - last[2]) / 1000
            previous_good = not (0 < dt <= eta.GAP_S and d / dt > eta.JUMP_MPS)
            out.append((dt, d, previous_good))
            if not previous_good:
                continue
        last = (float(lat[i]), float(lon[i]), int(ts[i]))
    return out


def _distances(
    trip: Trip, fixes: Sequence[Fix], fence: Callable[[str], Fence | None]
) -> tuple[FloatArray, FloatArray] | None:
    """`destination_distances` for each fix."""
    lat = np.fromiter((f.lat for f in fixes), dtype=np.float64, count=len(fixes))
    lon = np.fromiter((f.lon for f in fixes), dtype=np.float64, count=len(fixes))
    return destination_distances(trip, lat, lon, fence)


def destination_distances(
    trip: Trip,
    lat: Sequence[float] | FloatArray,
    lon: Sequence[float] | FloatArray,
    fence: Callable[[str], Fence | None],
) -> tuple[FloatArray, FloatArray] | None:
    """Per point: metres to the trip's destination (a point: its centre; a fence: its nearest edge, 0
    inside) and metres still to go to be inside it (<= 0: inside). None when its fence is not loaded."""
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    dest = trip.destination
    if dest.fence is None:
        assert dest.lat is not None and dest.lon is not None
        d = distances_from_m(dest.lat, dest.lon, lat, lon)
        return d, d - dest.radius_m
    loaded = fence(dest.fence)
    if loaded is None:
        return None
    if loaded.center_lonlat is not None and loaded.radius_m is not None:
        clon, clat = loaded.center_lonlat
        d = np.maximum(distances_from_m(clat, clon, lat, lon) - loaded.radius_m, 0.0)
        return d, d
    d = _polygon_distance_m(loaded.geometry, lat, lon)
    return d, d


def _polygon_distance_m(geometry: shapely.Geometry, lat: FloatArray, lon: FloatArray) -> FloatArray:
    """Metres from each point to a polygon (0 inside or on its boundary), in a local equirectangular
    projection around the polygon: within a fraction of a percent at city distances."""
    centre = geometry.centroid
    lat0, lon0 = centre.y, centre.x
    kx = _M_PER_DEG * np.cos(np.radians(lat0))

    def local(xy: np.ndarray) -> np.ndarray:
        return np.column_stack([(xy[:, 0] - lon0) * kx, (xy[:, 1] - lat0) * _M_PER_DEG])

    shape = shapely.transform(geometry, local)
    points = shapely.points((lon - lon0) * kx, (lat - lat0) * _M_PER_DEG)
    return np.asarray(shapely.distance(shape, points), dtype=np.float64)
