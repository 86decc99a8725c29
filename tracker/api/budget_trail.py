"""`/trail` with `max_points` (the map's replay): a window of up to MAX_BUDGET_FIXES fixes, thinned by the
database to the first fix of each slice of time, then cut to the point budget by a time-aware
Douglas-Peucker (`tracker.trail.budget_runs`) in a worker thread, so the event loop keeps serving fixes.
The route and its documentation are `tracker.api.history.trail`'s. A read holds three pooled connections
(two halves of the window and its flagged fixes) and the replay asks for up to 20 trails at once, so at
most READS_AT_ONCE reads run per process and the others wait their turn: the pool stays for ingest.
"""

from __future__ import annotations

import asyncio
import math

from starlette.requests import Request
from starlette.responses import Response

from tracker.api import params
from tracker.api.responses import JSONResponse
from tracker.errors import InvalidInput
from tracker.model import Device
from tracker.store import history
from tracker.trail import budget_runs, run_starts, runs_length_m, to_geojson, to_gpx

MAX_BUDGET_FIXES = 2_000_000  # a week at 3 Hz; the database sends back a few 10k of them
MAX_POINTS = 20_000
MAX_POINTS_DEFAULT = 2_000
READS_AT_ONCE = 2
_reading = asyncio.Semaphore(READS_AT_ONCE)
# The database keeps the first fix of each slice of 1/(THIN_PER_POINT max_points) of the window: on a week
# at 1 Hz cut to 2,560 points the replay's error against every fix is the same from 10 slices a point as
# from 25 (mean 150 m both, p99 495 and 507 m, worst 632 and 608 m), and the database probes 2.5x fewer.
THIN_PER_POINT = 10
# Slices are at most a quarter of gap_s, so a run's first fix is its slice's first and a silence shorter
# than 3/4 of the gap is never taken for a break; the finest slicing (and so the shortest gap_s) is a
# 1/THIN_FINEST of the window or 1/(THIN_FINEST_PER_POINT max_points), whichever is finer.
GAP_SLICES = 4
THIN_FINEST = 50_000
THIN_FINEST_PER_POINT = 25


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
    window_ms = to_ms - from_ms
    finest = max(THIN_FINEST, THIN_FINEST_PER_POINT * max_points)
    # Runs are told apart on the thinned fixes, a slice apart: a gap shorter than a slice would make every
    # kept fix a run of its own (and have the database send back every fix of the window).
    slice_s = window_ms / finest / 1000
    if 0 < gap_s < slice_s:
        raise InvalidInput(
            f"gap_s must be 0 or at least {slice_s:.1f} s with max_points over this window "
            f"(its fixes are thinned to one per {slice_s:.1f} s); got {gap_s:g}"
        )
    by_gap = math.ceil(GAP_SLICES * window_ms / (gap_s * 1000)) if gap_s > 0 else 0
    buckets = min(finest, max(THIN_PER_POINT * max_points, by_gap))
    async with _reading:
        found = await history.thinned_track(
            params.core(request).db, device.id, from_ms, to_ms, buckets, MAX_BUDGET_FIXES, include_flagged
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
