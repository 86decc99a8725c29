"""`/trail` with `max_points` (the map's replay): a window of up to MAX_BUDGET_FIXES fixes, thinned by the
database to the first fix of each slice of time, then cut to the point budget by a time-aware
Douglas-Peucker (`tracker.trail.budget_runs`) in a worker thread, so the event loop keeps serving fixes.
The route and its documentation are `tracker.api.history.trail`'s.
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response

from tracker.api import params
from tracker.api.responses import JSONResponse
from tracker.errors import InvalidInput
from tracker.model import Device
from tracker.store import history
from tracker.trail import budget_runs, run_starts, runs_length_m, to_geojson, to_gpx

MAX_BUDGET_FIXES = 2_000_000  # a week at 3 Hz; the database sends back some 50k of them
MAX_POINTS = 20_000
MAX_POINTS_DEFAULT = 2_000
THIN_BUCKETS = 50_000  # the database first keeps a fix per 1/50000 of the window...
THIN_PER_POINT = 25  # ...or per 1/(25 max_points), whichever is finer


async def budget_trail(
    request: Request,
    device: Device,
    from_ms: int,
    to_ms: int,
    fmt: str,
    tolerance: float,
    gap_s: float,
    gpx_headers: dict[str, str],
) -> Response:
    """`/trail` with `max_points`: the replay's read of a long window, thinned by the database to a fix per
    slice of time (positions and times only), then cut to the point budget in a worker thread (coroutine)."""
    max_points = params.integer(request, "max_points", MAX_POINTS_DEFAULT, 10, MAX_POINTS)
    if fmt == "csv":
        raise InvalidInput("max_points does not apply to format=csv, which streams every fix; drop it")
    if tolerance > 0:
        raise InvalidInput("simplify and max_points both thin the trail: pass one of them")
    include_flagged = params.flag(request, "include_flagged")
    buckets = max(THIN_BUCKETS, THIN_PER_POINT * max_points)
    # Runs are told apart on the thinned fixes, a slice apart: a gap shorter than a slice would make every
    # kept fix a run of its own (and have the database send back every fix of the window).
    slice_s = (to_ms - from_ms) / buckets / 1000
    if 0 < gap_s < slice_s:
        raise InvalidInput(
            f"gap_s must be 0 or at least {slice_s:.1f} s with max_points over this window "
            f"(its fixes are thinned to one per {slice_s:.1f} s); got {gap_s:g}"
        )
    found = await history.thinned_track(
        params.core(request).db, device.id, from_ms, to_ms, buckets, gap_s, MAX_BUDGET_FIXES, include_flagged
    )
    if found is None:
        raise InvalidInput(
            f"the window from/to holds more than {MAX_BUDGET_FIXES} fixes of device {device.id!r}: "
            "narrow from/to, or use format=csv"
        )
    full, fixes = found

    def run() -> Response:
        starts = run_starts(full.ts, gap_s * 1000)
        drawn, drawn_starts = budget_runs(full, starts, max_points)
        if fmt == "gpx":
            xml = to_gpx(device.id, drawn, drawn_starts)
            return Response(xml, media_type="application/gpx+xml", headers=gpx_headers)
        feature = to_geojson(device.id, from_ms, to_ms, drawn, runs_length_m(full, starts), drawn_starts)
        feature["properties"].update(fixes=fixes, gap_s=gap_s, max_points=max_points)
        return JSONResponse(feature, media_type="application/geo+json")

    return await asyncio.to_thread(run)
