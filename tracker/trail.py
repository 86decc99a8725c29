"""Trails: a device's stored fixes over a window as numpy arrays, their geodesic length, Douglas-Peucker
simplification in metres, breaks where the device was silent, and GPX / CSV writing. Pure: no database,
no HTTP.

Policy:
- A trail breaks into runs wherever the device sent nothing for longer than the gap: a line drawn across
  the silence (a phone switched off, a server restart) would show a road nobody drove. Lengths count
  within runs only, simplification keeps each run's endpoints, GeoJSON is a MultiLineString when there is
  more than one run and GPX a `<trkseg>` per run.
- Lengths are geodesic on the WGS84 ellipsoid (`tracker.geo`), summed segment by segment.
- Simplification runs on an equirectangular plane in metres centred on the trail's mean latitude (good to
  well under 1 % over a few hundred kilometres, which is all a tolerance needs); it returns the indexes of
  the kept fixes, so times and other columns stay parallel, and always keeps both endpoints.
- GPX is GPX 1.1 written by gpxpy: one track, a segment per run, a `<time>` per point.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import gpxpy.gpx
import numpy as np
import numpy.typing as npt

from tracker.geo import FloatArray, segment_lengths_m

CSV_HEADER = "ts,lat,lon,speed,heading\n"

IntArray = npt.NDArray[np.int64]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Trail:
    """Fixes of one device in time order, one array per column. `speed` and `heading` are NaN where the
    fix did not report them."""

    ts: IntArray  # ms since the epoch, ascending
    lat: FloatArray
    lon: FloatArray
    speed: FloatArray
    heading: FloatArray

    def __len__(self) -> int:
        return len(self.ts)

    @classmethod
    def from_columns(
        cls,
        ts: Sequence[int],
        lat: Sequence[float],
        lon: Sequence[float],
        speed: Sequence[float | None] | None = None,
        heading: Sequence[float | None] | None = None,
    ) -> Trail:
        """A Trail from plain sequences, sorted by time if they are not (None becomes NaN)."""
        n = len(ts)
        track = cls(
            np.asarray(ts, dtype=np.int64).reshape(n),
            np.asarray(lat, dtype=np.float64).reshape(n),
            np.asarray(lon, dtype=np.float64).reshape(n),
            np.asarray(speed if speed is not None else [math.nan] * n, dtype=np.float64).reshape(n),
            np.asarray(heading if heading is not None else [math.nan] * n, dtype=np.float64).reshape(n),
        )
        if n > 1 and bool(np.any(np.diff(track.ts) < 0)):
            return track.take(np.argsort(track.ts, kind="stable"))
        return track

    def take(self, indexes: npt.NDArray[np.intp] | IntArray | slice) -> Trail:
        """The fixes at `indexes` (an index array or a slice)."""
        return Trail(
            self.ts[indexes],
            self.lat[indexes],
            self.lon[indexes],
            self.speed[indexes],
            self.heading[indexes],
        )


def plane_m(lat: FloatArray, lon: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Points on an equirectangular plane in metres, centred on the mean latitude; longitudes are
    unwrapped first so a trail across the antimeridian stays continuous."""
    lon_u = np.unwrap(lon, period=360.0)
    phi = math.radians(float(lat.mean()))
    # metres per degree of latitude and of longitude on WGS84 at latitude phi
    m_lat = 111_132.954 - 559.822 * math.cos(2 * phi) + 1.175 * math.cos(4 * phi)
    m_lon = 111_412.84 * math.cos(phi) - 93.5 * math.cos(3 * phi)
    return (lon_u - lon_u[0]) * m_lon, (lat - lat[0]) * m_lat


def segment_distance_m(
    x: FloatArray, y: FloatArray, ax: float, ay: float, bx: float, by: float
) -> FloatArray:
    """Distance of each plane point (x, y) to the segment a-b (to a itself when a == b), in the units of
    the plane (metres for `plane_m`)."""
    dx, dy = bx - ax, by - ay
    norm = dx * dx + dy * dy
    if norm == 0.0:
        return np.asarray(np.hypot(x - ax, y - ay), dtype=np.float64)
    t = np.clip(((x - ax) * dx + (y - ay) * dy) / norm, 0.0, 1.0)
    return np.asarray(np.hypot(x - (ax + t * dx), y - (ay + t * dy)), dtype=np.float64)


def simplify_indexes(lat: FloatArray, lon: FloatArray, tolerance_m: float) -> npt.NDArray[np.intp]:
    """Indexes (ascending) of the points Douglas-Peucker keeps at `tolerance_m` metres: a point is kept
    when it lies farther than the tolerance from the segment between the kept points around it. Both
    endpoints are always kept; a tolerance of 0 keeps every point."""
    n = len(lat)
    if n <= 2 or tolerance_m <= 0:
        return np.arange(n)
    x, y = plane_m(lat, lon)
    keep = np.zeros(n, dtype=bool)
    keep[0] = keep[-1] = True
    stack = [(0, n - 1)]
    while stack:
        first, last = stack.pop()
        if last - first < 2:
            continue
        d = segment_distance_m(x[first + 1 : last], y[first + 1 : last], x[first], y[first], x[last], y[last])
        k = int(np.argmax(d))
        if d[k] > tolerance_m:
            k += first + 1
            keep[k] = True
            stack.append((first, k))
            stack.append((k, last))
    return np.flatnonzero(keep)


def run_starts(ts: IntArray, gap_ms: float) -> IntArray:
    """Index of the first fix of each run: 0, and every fix that came more than `gap_ms` after the one
    before it. Empty for no fixes; a gap of 0 (or less) never breaks."""
    if len(ts) == 0:
        return np.zeros(0, dtype=np.int64)
    if gap_ms <= 0:
        return np.zeros(1, dtype=np.int64)
    return np.concatenate(([0], np.flatnonzero(np.diff(ts) > gap_ms) + 1)).astype(np.int64)


def _one_run(starts: IntArray | None) -> IntArray:
    return starts if starts is not None and len(starts) else np.zeros(1, dtype=np.int64)


def runs_length_m(track: Trail, starts: IntArray) -> float:
    """Geodesic length in metres along the fixes of each run, summed: nothing across a gap."""
    steps = segment_lengths_m(track.lat, track.lon)
    if len(steps) and len(starts) > 1:
        steps[starts[1:] - 1] = 0.0  # the step into each later run's first fix
    return float(steps.sum())


def simplify_runs(track: Trail, starts: IntArray, tolerance_m: float) -> tuple[Trail, IntArray]:
    """`track` simplified run by run (each run keeps both its endpoints), and where each run starts in
    the result."""
    if tolerance_m <= 0 or len(track) == 0:
        return track, starts
    ends = [*starts[1:].tolist(), len(track)]
    kept: list[npt.NDArray[np.intp]] = []
    new_starts = np.zeros(len(starts), dtype=np.int64)
    count = 0
    for i, (a, b) in enumerate(zip(starts.tolist(), ends, strict=True)):
        new_starts[i] = count
        idx = (
            np.arange(a, b)
            if b - a <= 2
            else simplify_indexes(track.lat[a:b], track.lon[a:b], tolerance_m) + a
        )
        kept.append(idx)
        count += len(idx)
    return track.take(np.concatenate(kept)), new_starts


def ms_to_utc(ms: int) -> datetime:
    """A timezone-aware UTC datetime from milliseconds since the epoch."""
    return _EPOCH + timedelta(milliseconds=int(ms))


def to_geojson(
    device: str, from_ms: int, to_ms: int, track: Trail, distance_m: float, starts: IntArray | None = None
) -> dict[str, Any]:
    """The contract's trail Feature. `track` holds the points to draw (simplified or not), `starts` where
    its runs begin (None: one run); `distance_m` is given by the caller (the length of the full,
    unsimplified trail).

    Zero points: `geometry` is null. One run: a LineString; several: a MultiLineString, a LineString per
    run. A run of one fix is a LineString repeating it, with its time twice, so that `times` (flat, run
    after run) stays parallel to the coordinates; `points` counts fixes, so such a run adds 1."""
    n = len(track)
    geometry: dict[str, Any] | None = None
    times = track.ts
    if n:
        starts = _one_run(starts)
        lengths = np.diff(np.append(starts, n))
        # A run of one fix is drawn as a line repeating it: its index twice.
        reps = np.ones(n, dtype=np.int64)
        reps[starts[lengths == 1]] = 2
        idx = np.repeat(np.arange(n), reps)
        coords = np.column_stack((track.lon[idx], track.lat[idx]))
        times = track.ts[idx]
        if len(starts) == 1:
            geometry = {"type": "LineString", "coordinates": coords}
        else:
            cuts = np.cumsum(np.maximum(lengths, 2))[:-1]
            geometry = {"type": "MultiLineString", "coordinates": np.split(coords, cuts)}
    return {
        "type": "Feature",
        "geometry": geometry,
        "properties": {
            "device": device,
            "from": from_ms,
            "to": to_ms,
            "points": n,
            "distance_m": round(distance_m, 3),
            "times": times,
        },
    }


def to_gpx(device: str, track: Trail, starts: IntArray | None = None) -> str:
    """A GPX 1.1 document of one track named after the device, a segment per run (`starts`; None: one),
    a time per point."""
    gpx = gpxpy.gpx.GPX()
    gpx.creator = "tracker"
    trk = gpxpy.gpx.GPXTrack(name=device)
    points = [
        gpxpy.gpx.GPXTrackPoint(latitude=lat, longitude=lon, time=ms_to_utc(ts))
        for ts, lat, lon in zip(track.ts.tolist(), track.lat.tolist(), track.lon.tolist(), strict=True)
    ]
    starts = _one_run(starts)
    for a, b in zip(starts.tolist(), [*starts[1:].tolist(), len(track)], strict=True):
        segment = gpxpy.gpx.GPXTrackSegment()
        segment.points = points[a:b]
        trk.segments.append(segment)
    gpx.tracks.append(trk)
    xml: str = gpx.to_xml(version="1.1")
    return xml


def csv_lines(rows: Iterable[Sequence[Any]]) -> str:
    """CSV lines (no header) from rows of (ts ms, lat, lon, speed, heading); None becomes an empty field.
    Floats are written in their shortest exact form."""
    return "".join(
        f"{ts},{lat!r},{lon!r},{'' if speed is None else speed},{'' if heading is None else heading}\n"
        for ts, lat, lon, speed, heading in rows
    )


def synchronized_distance_m(
    x: FloatArray, y: FloatArray, t: FloatArray, a: tuple[float, float, float], b: tuple[float, float, float]
) -> FloatArray:
    """Distance of each plane point (x, y) at time t to where the segment a-b (each (x, y, t)) puts the
    device at that time, moving at constant speed from a to b: the error a replay makes when it
    interpolates between a and b instead of passing through the point."""
    (ax, ay, at), (bx, by, bt) = a, b
    span = bt - at
    f = (t - at) / span if span > 0 else np.zeros_like(t)
    return np.asarray(np.hypot(x - (ax + f * (bx - ax)), y - (ay + f * (by - ay))), dtype=np.float64)


def budget_indexes(track: Trail, starts: IntArray, max_points: int) -> npt.NDArray[np.intp]:
    """Indexes (ascending) of at most `max_points` fixes (at least each run's first and last) that keep a
    replay closest to the full trail: top-down Douglas-Peucker on the synchronized distance (time-aware, so
    a stop or a change of speed on a straight road is kept, not only a turn), always splitting, over the
    whole trail, the span whose worst fix is farthest off, until the budget is spent or every fix is exact.

    The work is numpy over spans (about n * log2(max_points) point operations); Python runs once per kept
    fix, never per input fix."""
    n = len(track)
    if n <= max_points:
        return np.arange(n)
    x, y = plane_m(track.lat, track.lon)
    t = track.ts.astype(np.float64)
    keep = np.zeros(n, dtype=bool)
    starts = _one_run(starts)
    ends = np.append(starts[1:], n) - 1
    keep[starts] = True
    keep[ends] = True
    kept = int(keep.sum())
    heap: list[tuple[float, int, int, int]] = []

    def push(a: int, b: int) -> None:
        if b - a < 2:
            return
        d = synchronized_distance_m(
            x[a + 1 : b], y[a + 1 : b], t[a + 1 : b], (x[a], y[a], t[a]), (x[b], y[b], t[b])
        )
        k = int(np.argmax(d))
        if d[k] > 0:
            heapq.heappush(heap, (-float(d[k]), a, b, a + 1 + k))

    for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
        push(a, b)
    while heap and kept < max_points:
        _, a, b, k = heapq.heappop(heap)
        keep[k] = True
        kept += 1
        push(a, k)
        push(k, b)
    return np.flatnonzero(keep)


def budget_runs(track: Trail, starts: IntArray, max_points: int) -> tuple[Trail, IntArray]:
    """`track` cut to about `max_points` fixes by `budget_indexes`, and where each run starts in it."""
    idx = budget_indexes(track, starts, max_points)
    if len(idx) == len(track):
        return track, starts
    return track.take(idx), np.searchsorted(idx, _one_run(starts)).astype(np.int64)
