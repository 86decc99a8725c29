"""Stops and trips of one device's track: pure detection on numpy arrays, then the report items.

Policy (in the spirit of Traccar's defaults):
- A stop starts at the earliest fix such that the device then stays within `radius_m` (geodesic) of that
  fix for at least `min_duration_ms`; it lasts until the last fix before the first one farther than
  `radius_m` from its start fix (or the end of the window). Its position is the mean of its fixes. A
  pause shorter than `min_duration_ms` is no stop; GPS jitter within the radius does not end one. A gap
  without fixes inside the radius counts as staying there.
- Trips are the movement between stops: from the last fix of a stop to the first fix of the next. The
  movement before the first stop and after the last one (or of the whole window when there is no stop)
  is a trip too when some fix of it lies more than `radius_m` from its first fix.
- A trip's `distance_m` is the geodesic length through its fixes, `avg_speed` that over its duration,
  `max_speed` the highest speed the fixes reported (or, when none reported one, the highest speed
  between consecutive fixes).
- Every "within the radius" is decided exactly as the WGS84 Geod would decide it, but through the fast
  local form of `tracker.geo` (the Geod only near the radius); lengths and speeds sum that form's steps,
  within 2 µm of the Geod's each. A day of a thousand devices is 17 million steps: at the Geod's 0.8 µs a
  step the daily report could not be fast.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tracker.geo import FloatArray, farther_than_m, local_segment_lengths_m, pairwise_farther_than_m
from tracker.trail import Trail

Span = tuple[int, int]  # indexes of the first and last fix, inclusive
DEFAULT_RADIUS_M = 50.0  # a stop's radius and shortest duration when the caller names none
DEFAULT_MIN_DURATION_S = 300.0


def _leave_index(track: Trail, start: int, radius_m: float, end: int | None = None) -> int:
    """The index of the first fix after `start` (and before `end`, default len(track)) farther than
    `radius_m` from it, or `end`. Scans in growing chunks: most answers lie near the start."""
    n = len(track) if end is None else end
    lat0, lon0 = float(track.lat[start]), float(track.lon[start])
    j, chunk = start + 1, 32
    while j < n:
        hi = min(n, j + chunk)
        outside = np.flatnonzero(farther_than_m(lat0, lon0, track.lat[j:hi], track.lon[j:hi], radius_m))
        if outside.size:
            return j + int(outside[0])
        j, chunk = hi, chunk * 4
    return n


def find_stops(track: Trail, radius_m: float, min_duration_ms: int) -> list[Span]:
    """The stops of `track` as (first, last) index spans, in time order (see the module policy)."""
    n = len(track)
    if n < 2:
        return []
    ts = track.ts
    # A start fix needs the fix min_duration later (the first at or after it) within the radius: a
    # vectorised filter that leaves only few candidates to scan one by one.
    later = np.searchsorted(ts, ts + min_duration_ms, side="left")
    has_later = np.flatnonzero(later < n)
    b = later[has_later]
    near = ~pairwise_farther_than_m(
        track.lat[has_later], track.lon[has_later], track.lat[b], track.lon[b], radius_m
    )
    stops: list[Span] = []
    candidates = has_later[near]
    k = 0
    while k < len(candidates):
        start = int(candidates[k])
        leave = _leave_index(track, start, radius_m)
        if ts[leave - 1] - ts[start] >= min_duration_ms:
            stops.append((start, leave - 1))
            # The next stop starts after this one: skip the candidates within it (a parked night is
            # thousands of them) in one step.
            k = int(np.searchsorted(candidates, leave, side="left"))
        else:
            k += 1
    return stops


def _moves(track: Trail, span: Span, radius_m: float) -> bool:
    first, last = span
    return _leave_index(track, first, radius_m, last + 1) <= last


def find_trips(track: Trail, stops: list[Span], radius_m: float) -> list[Span]:
    """The trips of `track` around `stops` (as returned by `find_stops`), as (first, last) index spans."""
    n = len(track)
    if n < 2:
        return []
    starts = [0] + [last for _, last in stops]
    ends = [first for first, _ in stops] + [n - 1]
    trips: list[Span] = []
    for k, (first, last) in enumerate(zip(starts, ends, strict=True)):
        if last <= first:
            continue
        between_stops = 0 < k < len(stops)
        if between_stops or _moves(track, (first, last), radius_m):
            trips.append((first, last))
    return trips


def _speed(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 3)


def _mean_position(lat: FloatArray, lon: FloatArray) -> tuple[float, float]:
    """Mean of nearby points; longitudes are taken relative to the first so the antimeridian is safe."""
    lon0 = float(lon[0])
    mean_lon = lon0 + float(np.mean((lon - lon0 + 180.0) % 360.0 - 180.0))
    mean_lon = (mean_lon + 180.0) % 360.0 - 180.0
    return float(np.mean(lat)), mean_lon


def stop_item(track: Trail, span: Span) -> dict[str, Any]:
    """A stop as the contract's report item."""
    first, last = span
    lat, lon = _mean_position(track.lat[first : last + 1], track.lon[first : last + 1])
    start_ts, end_ts = int(track.ts[first]), int(track.ts[last])
    return {
        "start_ts": start_ts,
        "end_ts": end_ts,
        "duration_s": (end_ts - start_ts) / 1000,
        "lat": lat,
        "lon": lon,
        "fixes": last - first + 1,
    }


def trip_item(track: Trail, span: Span) -> dict[str, Any]:
    """A trip as the contract's report item."""
    first, last = span
    part = track.take(slice(first, last + 1))
    start_ts, end_ts = int(part.ts[0]), int(part.ts[-1])
    duration_s = (end_ts - start_ts) / 1000
    steps = local_segment_lengths_m(part.lat, part.lon)
    distance = float(steps.sum())
    reported = part.speed[~np.isnan(part.speed)]
    if reported.size:
        max_speed = float(reported.max())
    else:
        dt = np.diff(part.ts) / 1000
        moving = dt > 0
        seg = steps[moving] / dt[moving]
        max_speed = float(seg.max()) if seg.size else math.nan
    return {
        "start_ts": start_ts,
        "end_ts": end_ts,
        "duration_s": duration_s,
        "distance_m": round(distance, 3),
        "start": {"lat": float(part.lat[0]), "lon": float(part.lon[0])},
        "end": {"lat": float(part.lat[-1]), "lon": float(part.lon[-1])},
        "max_speed": _speed(max_speed),
        "avg_speed": _speed(distance / duration_s) if duration_s > 0 else None,
        "fixes": last - first + 1,
    }
