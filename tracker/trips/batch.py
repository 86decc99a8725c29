"""Trip evaluation's common case, vectorised: a device with one new fix in the batch and one active trip
to a point. At live rates nearly every device on a trip is that case, so the per-fix cost of trips is a
few array operations plus a short loop that builds objects only for what changed.

The rules are those of `tracker.trips.detect` and `tracker.trips.eta` exactly (the per-fix walk there
handles every other case); between progress writes, a trip's new ETA and distance go into
`TripDetection.progress` rather than a new Trip.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from tracker.geo import distance_m, pairwise_distance_m
from tracker.model import Fix, Head
from tracker.trips import eta
from tracker.trips.changes import TripDetection, step
from tracker.trips.model import Trip

VECTOR_MIN = 24  # fixes from which the arrays pay (measured: 60 µs a batch for arrays, 4 µs a fix without)


def evaluate_simple(
    trips: Sequence[Trip],
    fixes: Sequence[Fix],
    heads: Mapping[str, Head],
    speeds: Mapping[str, eta.Speed],
    *,
    detour: float,
    progress_ms: int,
    out: TripDetection,
) -> None:
    """Evaluate `trips[i]` against its device's one fix `fixes[i]`; results go into `out`, status
    changes and due progress writes through `step`. Fewer than VECTOR_MIN fixes go one by one: numpy's
    cost per call would be most of the work."""
    if len(fixes) < VECTOR_MIN:
        _one_by_one(trips, fixes, heads, speeds, detour=detour, progress_ms=progress_ms, out=out)
        return
    nan = float("nan")
    sp = [speeds.get(t.device) for t in trips]
    rows = []  # one pass over the Python objects, then columns
    for t, f, s in zip(trips, fixes, sp, strict=True):
        h = heads.get(t.device) or f
        d = t.destination
        rows.append(
            (
                f.lat,
                f.lon,
                (f.ts - h.ts) / 1000,
                f.accuracy or 0.0,
                h.lat,
                h.lon,
                nan if s is None or s.mps is None else s.mps,
                0.0 if s is None else s.moving_s,
                d.lat,
                d.lon,
                d.radius_m,
            )
        )
    cols = np.array(rows, dtype=np.float64).T
    lat, lon, dt, acc, hlat, hlon, mps, moving_s, dlat, dlon, radius = cols
    seg = pairwise_distance_m(hlat, hlon, lat, lon)
    jump = (dt > 0) & (dt <= eta.GAP_S) & (seg > eta.JUMP_MPS * dt)
    new_mps, new_moving = eta.advance_many(mps, moving_s, dt, seg, np.maximum(acc, 0.0))
    remaining = pairwise_distance_m(dlat, dlon, lat, lon)
    to_go = remaining - radius
    changed = new_moving != moving_s
    known = np.where((new_moving >= eta.WARMUP_S) & ~np.isnan(new_mps), new_mps, np.nan)
    ts = np.fromiter((f.ts for f in fixes), dtype=np.int64, count=len(fixes))
    with np.errstate(invalid="ignore"):
        eta_ms = ts + np.round(to_go * detour / known * 1000)  # NaN while the speed is unknown
    for i, (trip, f, j, c, v, m, r, g, k, e) in enumerate(
        zip(
            trips,
            fixes,
            jump.tolist(),
            changed.tolist(),
            new_mps.tolist(),
            new_moving.tolist(),
            remaining.tolist(),
            to_go.tolist(),
            known.tolist(),
            eta_ms.tolist(),
            strict=True,
        )
    ):
        if j:  # a GPS jump moves nothing
            continue
        if c:
            out.speeds[trip.device] = eta.Speed(None if v != v else v, m)
        if (
            g <= 0
            or trip.saved_ts is None
            or f.ts - trip.saved_ts >= progress_ms
            or (trip.status == "started" and r <= trip.approach_m)
        ):
            speed = eta.Speed(None if v != v else v, m) if c else (sp[i] or eta.Speed())
            out.trips[trip.id] = step(trip, f, r, g, speed, detour, out)
            out.before[trip.id] = trip.status
            out.writes.append(trip.id)
        else:
            out.progress.append((trip, None if e != e else int(e), r, f.ts, None if k != k else k))


def _one_by_one(
    trips: Sequence[Trip],
    fixes: Sequence[Fix],
    heads: Mapping[str, Head],
    speeds: Mapping[str, eta.Speed],
    *,
    detour: float,
    progress_ms: int,
    out: TripDetection,
) -> None:
    """`evaluate_simple` for a few fixes, with scalars: the same rules, the same results."""
    for trip, f in zip(trips, fixes, strict=True):
        head = heads.get(trip.device)
        speed = speeds.get(trip.device) or eta.Speed()
        if head is not None and f.ts > head.ts:
            d = distance_m(head.lat, head.lon, f.lat, f.lon)
            dt = (f.ts - head.ts) / 1000
            if dt <= eta.GAP_S and d > eta.JUMP_MPS * dt:  # a GPS jump moves nothing
                continue
            moved = eta.advance(speed, dt, d, max(f.accuracy or 0.0, 0.0))
            if moved is not speed:
                speed = moved
                out.speeds[trip.device] = speed
        dest = trip.destination
        assert dest.lat is not None and dest.lon is not None
        r = distance_m(dest.lat, dest.lon, f.lat, f.lon)
        g = r - dest.radius_m
        if (
            g <= 0
            or trip.saved_ts is None
            or f.ts - trip.saved_ts >= progress_ms
            or (trip.status == "started" and r <= trip.approach_m)
        ):
            out.trips[trip.id] = step(trip, f, r, g, speed, detour, out)
            out.before[trip.id] = trip.status
            out.writes.append(trip.id)
        else:
            out.progress.append((trip, eta.eta_ts(f.ts, g, speed, detour), r, f.ts, eta.known(speed)))
