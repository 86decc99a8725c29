"""A vehicle's shift: load at a depot or the hub, visit customers of a district in nearest-first order,
return; driven and recorded by `ShiftRecorder`. One generator per vehicle, seeded by the run's seed, the
fleet and the vehicle's number: adding a vehicle leaves the others unchanged.
"""

from __future__ import annotations

import math
from datetime import timedelta

import numpy as np

from tracker.tools.simulate.city import City, Place, Route, route
from tracker.tools.simulate.recorder import Floats, ShiftRecorder, SimTrack
from tracker.tools.simulate.vehicles import DAY_START, DUTIES, LONG_LOAD_MIN, RETURN_STOP_MIN, Vehicle


def _addresses(
    city: City, centre: Floats, radius: float, rng: np.random.Generator, count: int
) -> list[Place]:
    """`count` random street addresses within `radius` of `centre` (never in a depot's driveway)."""
    ends = np.array(city.edges, dtype=np.int64)
    mid = (city.xy[ends[:, 0]] + city.xy[ends[:, 1]]) / 2
    ok = np.hypot(*(mid - centre).T) <= radius
    ok[list(city.driveways)] = False
    pool = np.flatnonzero(ok)
    out = []
    for e in rng.choice(pool, size=count, replace=len(pool) < count).tolist():
        frac = float(rng.uniform(0.2, 0.8))
        u, v = city.edges[e]
        at = city.xy[u] + frac * (city.xy[v] - city.xy[u])
        out.append(Place((float(at[0]), float(at[1])), edge=e, frac=frac))
    return out


def _node_place(city: City, name: str) -> Place:
    n = city.places[name]
    return Place((float(city.xy[n][0]), float(city.xy[n][1])), node=n)


def _dist(a: Place, b: Place) -> float:
    return math.hypot(a.xy[0] - b.xy[0], a.xy[1] - b.xy[1])


def simulate_vehicle(city: City, v: Vehicle, seed: int) -> SimTrack:
    """One vehicle's shift: load at its base, deliver to customers of a district, come back."""
    rng = np.random.default_rng([seed, 1 if v.fleet == "couriers" else 2, v.number])
    duty = DUTIES[v.fleet]
    base = _node_place(city, v.base)
    start_s = int(rng.integers(0, duty.start_within_min * 60))
    load_s = float(rng.uniform(*(LONG_LOAD_MIN if v.long_load else duty.load_min))) * 60
    if v.fleet == "vans":  # anywhere in the middle of town: their routes cross the Mitte zone
        centre = rng.uniform(-1500, 1500, 2)
    else:  # around the base
        angle, reach = rng.uniform(0, 2 * math.pi), rng.uniform(400, 1300)
        offset = reach * np.array([math.sin(angle), math.cos(angle)])
        centre = np.clip(np.array(base.xy) + offset, -2400, 2400)
    target = float(rng.uniform(*duty.shift_min)) * 60
    pool = _addresses(city, centre, duty.district_m, rng, duty.addresses)
    speed = (v.kind.side_speed[0] + v.kind.main_speed[0]) / 2
    stops: list[tuple[Place, float]] = []
    elapsed, here = load_s, base
    while pool and len(stops) < duty.customers[1]:  # nearest first, while the shift fits its length
        nxt = min(pool, key=lambda p: _dist(here, p))
        seconds = float(rng.uniform(*duty.stop_min)) * 60
        cost = _dist(here, nxt) * 1.4 / speed + seconds
        back = _dist(nxt, base) * 1.4 / speed
        if len(stops) >= duty.customers[0] and elapsed + cost + back > target:
            break
        pool.remove(nxt)
        stops.append((nxt, seconds))
        elapsed += cost
        here = nxt
    legs: list[tuple[Place, float]] = [(base, load_s), *stops, (base, rng.uniform(*RETURN_STOP_MIN) * 60)]
    if v.special:  # through the government quarter, west to east or back, where it costs the least detour
        west, east = _node_place(city, "quarter-west"), _node_place(city, "quarter-east")
        best = min(
            (_dist(legs[i][0], a) + _dist(b, legs[i + 1][0]) - _dist(legs[i][0], legs[i + 1][0]), i, a, b)
            for i in range(len(legs) - 1)
            for a, b in ((west, east), (east, west))
        )
        _, i, a, b = best
        legs[i + 1 : i + 1] = [(a, 0.0), (b, 0.0)]
    shift = ShiftRecorder(city, v, rng)
    shift.stop(legs[0][0].xy, legs[0][1])
    path: Route | None = None
    prev = legs[0][0]
    for place, seconds in legs[1:]:
        leg = route(city, prev, place, shift.cost)
        if path is None:
            path = leg
        else:
            path.extend(leg)
        prev = place
        if seconds > 0:
            shift.drive(path)
            shift.stop(place.xy, seconds)
            path = None
    start_ms = int((DAY_START + timedelta(seconds=start_s)).timestamp()) * 1000
    return shift.finish(start_ms, len(stops), load_s)
