"""How close a trip's ETA comes to the actual arrival, on the simulated courier and van shifts.

Policy: every leg of every shift of `tracker simulate` (default seed) between two customer stops is a
trip: it starts on the last fix of a stop (a standstill of at least STOP_MIN_S), its destination is the
next stop (the median of that stop's fixes, radius RADIUS_M), and its fixes go one at a time through the
same evaluation the ingest path runs (`tracker.trips.detect.evaluate`), the speed learnt from the ten
minutes before, as a new trip learns it. The actual arrival is when the trip became `arrived`. Taken at
the first fix AFTER_S (5 minutes) into each leg that lasts longer than that: the error is |ETA - actual
arrival| over the time that was still to go. Also reported: the largest change of the ETA from one fix
to the next, in seconds of ETA per second of fix time, as a check that no noisy fix swings it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tracker.model import Fix, Head
from tracker.tools.bench.report import percentile
from tracker.tools.simulate import DEFAULT_COURIERS, DEFAULT_SEED, DEFAULT_VANS, simulate
from tracker.tools.simulate.recorder import SimTrack
from tracker.trips import eta
from tracker.trips.detect import evaluate
from tracker.trips.model import Destination, Trip

STOP_MIN_S = 90.0  # a standstill this long is a stop (customers take 2-8 min, red lights less)
RADIUS_M = 50.0
AFTER_S = 300.0
GOAL = 0.20


def _stops(track: SimTrack) -> list[tuple[int, int]]:
    """(first, last) fix index of each standstill of at least STOP_MIN_S."""
    still = track.speed == 0
    runs: list[tuple[int, int]] = []
    i, n = 0, len(still)
    while i < n:
        if not still[i]:
            i += 1
            continue
        j = i
        while j + 1 < n and still[j + 1]:
            j += 1
        if (track.ts[j] - track.ts[i]) / 1000 >= STOP_MIN_S:
            runs.append((i, j))
        i = j + 1
    return runs


def _fix(track: SimTrack, i: int) -> Fix:
    return Fix(
        "dev",
        "fleet",
        int(track.ts[i]),
        float(track.lat[i]),
        float(track.lon[i]),
        speed=float(track.speed[i]),
        accuracy=float(track.accuracy[i]),
    )


def _leg(track: SimTrack, start: int, stop: tuple[int, int], detour: float) -> dict[str, Any] | None:
    """Run one trip from fix `start` to the stop `stop`; its ETA figures, None when it never arrived."""
    first, last = stop
    dest = Destination(
        float(np.median(track.lat[first : last + 1])), float(np.median(track.lon[first : last + 1])), RADIUS_M
    )
    t0 = int(track.ts[start])
    history = [
        (int(track.ts[k]), float(track.lat[k]), float(track.lon[k]), float(track.accuracy[k]))
        for k in range(start + 1)
        if t0 - int(track.ts[k]) <= 600_000
    ]
    speed = eta.speed_along(history)
    trip = Trip("1", "dev", "fleet", "started", dest, 1000.0, None, (), t0, t0 + 86_400_000)
    head = Head(t0, float(track.lat[start]), float(track.lon[start]))
    etas: list[tuple[int, int | None]] = []
    for i in range(start + 1, min(last + 1, len(track.ts))):
        f = _fix(track, i)
        out = evaluate(
            {"dev": {"1": trip}},
            {"dev": speed},
            {"dev": [f]},
            {"dev": head},
            lambda _: None,
            detour=detour,
            progress_ms=0,
        )
        head = Head(f.ts, f.lat, f.lon)
        speed = out.speeds.get("dev", speed)
        trip = out.trips.get("1", trip)
        etas.append((f.ts, trip.eta_ts))
        if trip.status == "arrived":
            assert trip.arrived_ts is not None
            return {"start": t0, "arrived": trip.arrived_ts, "etas": etas}
    return None


def measure(
    detour: float = 1.3, seed: int = DEFAULT_SEED, couriers: int = DEFAULT_COURIERS, vans: int = DEFAULT_VANS
) -> dict[str, Any]:
    """Every leg of the simulated shifts: the ETA error after AFTER_S, and the largest ETA swing."""
    errors: list[float] = []
    of_trip: list[float] = []
    swings: list[float] = []
    legs = short = never = 0
    for track in simulate(seed, couriers, vans):
        stops = _stops(track)
        for before, after in zip(stops, stops[1:], strict=False):
            legs += 1
            leg = _leg(track, before[1], after, detour)
            if leg is None:
                never += 1
                continue
            due = leg["start"] + AFTER_S * 1000
            if leg["arrived"] <= due:
                short += 1
                continue
            at = next(((ts, e) for ts, e in leg["etas"] if ts >= due), None)
            if at is None or at[0] >= leg["arrived"]:
                short += 1
                continue
            if at[1] is None:
                errors.append(1.0)
                of_trip.append(1.0)
                continue
            errors.append(abs(at[1] - leg["arrived"]) / (leg["arrived"] - at[0]))
            of_trip.append(abs(at[1] - leg["arrived"]) / (leg["arrived"] - leg["start"]))
            known = [(ts, e) for ts, e in leg["etas"] if e is not None and ts >= due]
            for (t1, e1), (t2, e2) in zip(known, known[1:], strict=False):
                if t2 > t1:
                    swings.append(abs(e2 - e1) / (t2 - t1))
    swings.sort()
    return {
        "legs": legs,
        "measured": len(errors),
        "shorter_than_5_min": short,
        "never_arrived": never,
        "detour": detour,
        "of_time_to_go": _spread(errors),
        "of_trip_duration": _spread(of_trip),
        "eta_swing_p99_s_per_s": _r(percentile(swings, 99)),
        "eta_swing_max_s_per_s": _r(swings[-1] if swings else None),
        "note": "error at the first fix 5 min into each leg: |eta_ts - arrival| over the time still to go "
        "(of_time_to_go) or over the whole leg (of_trip_duration)",
    }


def _spread(errors: list[float]) -> dict[str, Any]:
    errors = sorted(errors)
    return {
        "median": _r(percentile(errors, 50)),
        "p75": _r(percentile(errors, 75)),
        "p90": _r(percentile(errors, 90)),
        "within_20_percent": _r(sum(e <= GOAL for e in errors) / len(errors)) if errors else None,
    }


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 3)
