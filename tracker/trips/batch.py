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

from tracker.geo import pairwise_distance_m
from tracker.model import Fix, Head
from tracker.trips import eta
from tracker.trips.changes import TripDetection, step
from tracker.trips.model import Trip


def simple(trips: Mapping[str, Trip], fixes: Sequence[Fix]) -> Trip | None:
    """The device's one active trip to a point, when it has one new fix and no other trip; else None."""
    if len(fixes) != 1 or len(trips) != 1:
        return None
    trip = next(iter(trips.values()))
    ok = trip.status in ("started", "approaching") and trip.destination.fence is None
    return trip if ok else None


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
    changes and due progress writes through `step`."""
    n = len(fixes)
    lat = np.fromiter((f.lat for f in fixes), dtype=np.float64, count=n)
    lon = np.fromiter((f.lon for f in fixes), dtype=np.float64, count=n)
    ts = np.fromiter((f.ts for f in fixes), dtype=np.int64, count=n)
    acc = np.fromiter((max(f.accuracy or 0.0, 0.0) for f in fixes), dtype=np.float64, count=n)
    hs = [heads.get(t.device) for t in trips]
    hlat = np.fromiter((h.lat if h else f.lat for h, f in zip(hs, fixes, strict=True)), np.float64, n)
    hlon = np.fromiter((h.lon if h else f.lon for h, f in zip(hs, fixes, strict=True)), np.float64, n)
    hts = np.fromiter((h.ts if h else f.ts for h, f in zip(hs, fixes, strict=True)), np.int64, n)
    sp = [speeds.get(t.device) for t in trips]
    mps = np.fromiter((s.mps if s is not None and s.mps is not None else np.nan for s in sp), np.float64, n)
    moving_s = np.fromiter((s.moving_s if s is not None else 0.0 for s in sp), np.float64, n)
    seg = pairwise_distance_m(hlat, hlon, lat, lon)
    dt = (ts - hts) / 1000
    jump = (dt > 0) & (dt <= eta.GAP_S) & (seg > eta.JUMP_MPS * dt)
    new_mps, new_moving = eta.advance_many(mps, moving_s, dt, seg, acc)
    dlat = np.fromiter((t.destination.lat or 0.0 for t in trips), np.float64, n)
    dlon = np.fromiter((t.destination.lon or 0.0 for t in trips), np.float64, n)
    radius = np.fromiter((t.destination.radius_m for t in trips), np.float64, n)
    remaining = pairwise_distance_m(dlat, dlon, lat, lon)
    to_go = remaining - radius
    changed = new_moving != moving_s
    for i, (trip, f, j, c, v, m, r, g) in enumerate(
        zip(
            trips,
            fixes,
            jump.tolist(),
            changed.tolist(),
            new_mps.tolist(),
            new_moving.tolist(),
            remaining.tolist(),
            to_go.tolist(),
            strict=True,
        )
    ):
        if j:  # a GPS jump moves nothing
            continue
        speed = sp[i] or eta.Speed()
        if c:
            speed = eta.Speed(None if v != v else v, m)
            out.speeds[trip.device] = speed
        near = g <= 0 or r <= trip.approach_m
        due = trip.progress_ts is None or f.ts - trip.progress_ts >= progress_ms
        if due or g <= 0 or (near and trip.status == "started"):
            new = step(trip, f, r, g, speed, detour, out)
            out.trips[trip.id] = new
            out.before[trip.id] = trip.status
            out.writes.append(trip.id)
            continue
        known = eta.known(speed)
        eta_ts = None if known is None else f.ts + round(g * detour / known * 1000)
        out.progress[trip.id] = (eta_ts, r, f.ts, known)
