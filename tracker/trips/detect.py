"""Trip evaluation for one batch of fixes: pure (trips and speeds in, changes and events out).

Per device with active trips, in fix order and only for fixes newer than the device's head (the same
`todo` the fence detection walks, so a late fix moves no trip): the segment from the previous fix
advances the device's moving speed (`tracker.trips.eta`); then each active trip takes, in this order,
`approaching` on the first fix within `approach_m` of the destination and `arrived` on the first fix
inside it (one fix may fire both). A fix reached at an implausible speed from the fix before it (a GPS
jump, and so the fix after it) moves nothing, however the fixes were batched. Distances for the whole
batch are computed in a few vectorised calls; the common case (one fix, one trip to a point) is
evaluated whole-batch in `tracker.trips.batch`.

The caller writes `writes` (compare-and-set on the status each trip had) with the fixes, and applies
the result to memory only after COMMIT.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import shapely

from tracker.geo import FloatArray, distances_from_m, pairwise_distance_m
from tracker.model import Fence, Fix, Head
from tracker.trips import eta
from tracker.trips.batch import evaluate_simple
from tracker.trips.changes import TripDetection, step
from tracker.trips.model import ACTIVE, Trip

_M_PER_DEG = 111_320.0  # metres per degree of latitude, for the local projection of polygon fences


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
    devices = []
    quick: list[Trip] = []
    for device, held in active.items():
        fixes = todo.get(device)
        if not fixes or not held:
            continue
        if len(held) == 1 and len(fixes) == 1:  # the common case, in `batch`, if to a point
            trip = next(iter(held.values()))
            if trip.status in ACTIVE and trip.destination.fence is None:
                quick.append(trip)
                continue
        devices.append(device)
    if quick:
        fixes = [todo[t.device][0] for t in quick]
        evaluate_simple(quick, fixes, heads, speeds, detour=detour, progress_ms=progress_ms, out=out)
    if not devices:
        return out
    fixes = [f for d in devices for f in todo[d]]
    n = len(fixes)
    lat = np.fromiter((f.lat for f in fixes), dtype=np.float64, count=n)
    lon = np.fromiter((f.lon for f in fixes), dtype=np.float64, count=n)
    ts = np.fromiter((f.ts for f in fixes), dtype=np.int64, count=n)
    # Each fix's previous position: the device's previous fix in the batch, or its head.
    prev_lat, prev_lon, prev_ts = np.r_[lat[:1], lat[:-1]], np.r_[lon[:1], lon[:-1]], np.r_[ts[:1], ts[:-1]]
    offsets: list[int] = []
    trips: list[Trip] = []  # the active trips, device after device
    rows: list[int] = []  # per (trip, fix) pair: the fix's position in the batch
    offset = 0
    for device in devices:
        offsets.append(offset)
        count = len(todo[device])
        head = heads.get(device)
        if head is not None:
            prev_lat[offset], prev_lon[offset], prev_ts[offset] = head.lat, head.lon, head.ts
        else:
            prev_lat[offset], prev_lon[offset], prev_ts[offset] = lat[offset], lon[offset], ts[offset]
        for trip in active[device].values():
            if trip.status in ACTIVE:
                trips.append(trip)
                rows.extend(range(offset, offset + count))
        offset += count
    seg = pairwise_distance_m(prev_lat, prev_lon, lat, lon).tolist()
    dt = ((ts - prev_ts) / 1000).tolist()
    remaining, to_go = _pair_distances(trips, [len(todo[t.device]) for t in trips], rows, lat, lon, fence)
    pair = 0
    trip_at = 0
    for device, offset in zip(devices, offsets, strict=True):
        count = len(todo[device])
        mine = []
        while trip_at < len(trips) and trips[trip_at].device == device:
            mine.append((trips[trip_at], pair))
            pair += count
            trip_at += 1
        _walk(
            device,
            todo[device],
            offset,
            seg,
            dt,
            remaining,
            to_go,
            mine,
            active,
            speeds,
            detour,
            progress_ms,
            out,
        )
    return out


def _walk(
    device: str,
    fixes: Sequence[Fix],
    offset: int,
    seg: list[float],
    dt: list[float],
    remaining: list[float],
    to_go: list[float],
    mine: list[tuple[Trip, int]],
    active: Mapping[str, Mapping[str, Trip]],
    speeds: Mapping[str, eta.Speed],
    detour: float,
    progress_ms: int,
    out: TripDetection,
) -> None:
    """One device's fixes in order: its speed, then each of its trips (`mine`: trip and its first pair)."""
    speed = speeds.get(device, eta.Speed())
    current = [trip for trip, _ in mine]
    for i, f in enumerate(fixes):
        d, t = seg[offset + i], dt[offset + i]
        if 0 < t <= eta.GAP_S and d / t > eta.JUMP_MPS:  # a jump (or the fix after one) moves nothing
            continue
        if t > 0:
            speed = eta.advance(speed, t, d, max(f.accuracy or 0.0, 0.0))
        for j, (_, first_pair) in enumerate(mine):
            trip = current[j]
            if trip.status not in ACTIVE or math.isnan(remaining[first_pair + i]):
                continue
            current[j] = step(trip, f, remaining[first_pair + i], to_go[first_pair + i], speed, detour, out)
    out.speeds[device] = speed
    for trip in current:
        old = active[device][trip.id]
        if trip is old:
            continue
        out.trips[trip.id] = trip
        out.before[trip.id] = old.status
        due = old.saved_ts is None or (trip.progress_ts or 0) - old.saved_ts >= progress_ms
        if trip.status != old.status or due:
            out.writes.append(trip.id)


def _pair_distances(
    trips: Sequence[Trip],
    counts: Sequence[int],
    rows: Sequence[int],
    lat: FloatArray,
    lon: FloatArray,
    fence: Callable[[str], Fence | None],
) -> tuple[list[float], list[float]]:
    """`destination_distances` for every (trip, fix of its device) pair, in `rows` order: point
    destinations in one vectorised call, fences trip by trip (NaN where a fence is no longer loaded)."""
    index = np.asarray(rows, dtype=np.int64)
    dlat = np.repeat([t.destination.lat if t.destination.fence is None else np.nan for t in trips], counts)
    dlon = np.repeat([t.destination.lon if t.destination.fence is None else np.nan for t in trips], counts)
    radius = np.repeat([t.destination.radius_m for t in trips], counts)
    points = ~np.isnan(dlat)
    remaining = np.full(len(index), np.nan)
    to_go = np.full(len(index), np.nan)
    if points.any():
        d = pairwise_distance_m(dlat[points], dlon[points], lat[index[points]], lon[index[points]])
        remaining[points] = d
        to_go[points] = d - radius[points]
    pair = 0
    for trip, count in zip(trips, counts, strict=True):
        if trip.destination.fence is not None:
            at = index[pair : pair + count]
            got = destination_distances(trip, lat[at], lon[at], fence)
            if got is not None:
                remaining[pair : pair + count], to_go[pair : pair + count] = got
        pair += count
    return remaining.tolist(), to_go.tolist()


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
