"""A device's history as a trail (GeoJSON, GPX or streamed CSV), its stops and its trips.

Windows are from <= ts < to on fix time. GeoJSON, GPX, stops and trips load the window into memory, so they
are capped (`MAX_TRAIL_FIXES`, `MAX_REPORT_FIXES`) with a 400 that says how to narrow it; CSV streams any
window. CPU work (simplification, GPX writing, stop detection) runs in a worker thread so the event loop
keeps serving fixes.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tracker.api import params
from tracker.api.budget_trail import budget_trail
from tracker.api.responses import JSONResponse
from tracker.errors import InvalidInput
from tracker.model import Device
from tracker.stops import find_stops, find_trips, stop_item, trip_item
from tracker.store import history
from tracker.trail import (
    CSV_HEADER,
    IntArray,
    Trail,
    csv_lines,
    run_starts,
    runs_length_m,
    simplify_runs,
    to_geojson,
    to_gpx,
)

MAX_TRAIL_FIXES = 200_000
MAX_REPORT_FIXES = 500_000
MAX_GAP_S = 31_536_000.0  # a year: gap_s is a silence, not a window
FORMATS = ("geojson", "gpx", "csv")
DEFAULT_RADIUS_M = 50.0
DEFAULT_MIN_DURATION_S = 300.0


def _format(request: Request) -> str:
    raw = request.query_params.get("format") or "geojson"
    if raw not in FORMATS:
        raise InvalidInput(f"format must be one of {', '.join(FORMATS)}; got {raw!r:.40}")
    return raw


async def _track(request: Request, device: Device, from_ms: int, to_ms: int, cap: int, hint: str) -> Trail:
    include = params.flag(request, "include_flagged")
    t = await history.track(params.core(request).db, device.id, from_ms, to_ms, cap, include)
    if t is None:
        raise InvalidInput(
            f"the window from/to holds more than {cap} fixes of device {device.id!r}: narrow from/to{hint}"
        )
    return t


def _download(device: Device, ext: str) -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="{device.id}.{ext}"'}


async def trail(request: Request) -> Response:
    """
    summary: A device's trail over a window, as GeoJSON, GPX or CSV
    description: >
      The fixes with from <= ts < to. GeoJSON (default): a Feature whose LineString runs through them in
      time order, with `times` parallel to the coordinates. Asked with `gap_s`, the trail breaks into runs
      where the device sent nothing for longer than that: with more than one run the geometry is a
      MultiLineString, a LineString per run, and `times` lists the times of every run's coordinates, run
      after run. With no fix in the window `geometry` is null; a run of a single fix is a LineString
      repeating it (times [ts, ts], counted once in points). `points` counts the fixes drawn (after
      simplification), `fixes` those stored in the window, `gap_s` is the gap used, and `distance_m` is the
      geodesic (WGS84) length of the full, unsimplified trail along each run (nothing across a gap), so
      simplifying never changes it. GPX has a trkseg per run. GeoJSON and GPX hold at most 200000 fixes
      (else 400); `format=csv` streams any window, with a header `ts,lat,lon,speed,heading`.
    security: [{bearer: []}]
    parameters:
      - {$ref: '#/components/parameters/DeviceId'}
      - {$ref: '#/components/parameters/From'}
      - {$ref: '#/components/parameters/To'}
      - name: simplify
        in: query
        description: >
          Douglas-Peucker tolerance in metres (0, the default, keeps every fix); endpoints are always kept.
          Not with format=csv.
        schema: {type: number, minimum: 0, default: 0}
      - name: gap_s
        in: query
        description: >
          Seconds without a fix after which the trail breaks into a new run; 0 never breaks. Default: 0 for
          GeoJSON (the contract's single LineString), TRACKER_TRAIL_GAP_S (600) for GPX. Not with format=csv.
        schema: {type: number, minimum: 0, maximum: 31536000}
      - name: max_points
        in: query
        description: >
          At most about this many points (each run keeps its first and last fix), for a map or a replay
          sized to the screen: the fixes are cut by a time-aware Douglas-Peucker (the distance between a
          fix and where the kept neighbours, interpolated in time, put the device), so `times` stay those
          of real fixes and interpolating between them replays the trail; 10 to 20000. The database first
          keeps the first fix of each 1/(10 max_points) of the window (of a quarter of gap_s at most, and
          never finer than 1/50000, or 1/(25 max_points) above 2000), and the last, so `distance_m` is
          measured along those (about 5 % short of the full trail on a week at 1 Hz) and `fixes` counts
          the window's fixes. With it the window may hold up to 2000000 fixes (a week
          at 3 Hz), speed and heading are not read, and `simplify` is not taken. Not with format=csv.
        schema: {type: integer, minimum: 10, maximum: 20000}
      - {name: format, in: query, schema: {enum: [geojson, gpx, csv], default: geojson}}
      - name: include_flagged
        in: query
        description: >
          true: also the fixes a fix filter flagged (`flag` in /positions), which a trail leaves out by
          default (contract part 2, "Fix quality").
        schema: {type: boolean, default: false}
    responses:
      200:
        description: The trail.
        content:
          application/geo+json:
            schema:
              type: object
              required: [type, geometry, properties]
              properties:
                type: {const: Feature}
                geometry:
                  oneOf:
                    - type: 'null'
                    - type: object
                      required: [type, coordinates]
                      properties:
                        type: {const: LineString}
                        coordinates: {$ref: '#/components/schemas/LineCoordinates'}
                    - type: object
                      required: [type, coordinates]
                      properties:
                        type: {const: MultiLineString}
                        coordinates:
                          type: array
                          minItems: 2
                          items: {$ref: '#/components/schemas/LineCoordinates'}
                properties:
                  type: object
                  required: [device, from, to, points, fixes, gap_s, distance_m, times]
                  properties:
                    device: {type: string}
                    from: {type: integer}
                    to: {type: integer}
                    points: {type: integer}
                    fixes: {type: integer}
                    gap_s: {type: number}
                    distance_m: {type: number}
                    times: {type: array, items: {type: integer}}
                    max_points: {type: integer, description: 'The max_points asked for, when it was.'}
          application/gpx+xml:
            schema: {type: string, description: 'GPX 1.1: one trk, a trkseg per run, a time per trkpt.'}
          text/csv:
            schema: {type: string, description: 'Header ts,lat,lon,speed,heading; empty when not reported.'}
    """
    _, device = await params.viewer_and_device(request)
    from_ms, to_ms = params.window(request)
    fmt = _format(request)
    tolerance = params.number(request, "simplify", 0.0, 0.0, math.inf)
    # GeoJSON keeps the contract's one LineString unless the caller asks for runs (the map does, with the
    # setting it is given); a GPX track has room for segments, so it breaks at the setting by default.
    default_gap = params.core(request).settings.trail_gap_s if fmt == "gpx" else 0.0
    gap_s = params.number(request, "gap_s", default_gap, 0.0, MAX_GAP_S)
    if "max_points" in request.query_params:
        return await budget_trail(
            request, device, from_ms, to_ms, fmt, tolerance, gap_s, _download(device, "gpx")
        )
    if fmt == "csv":
        if tolerance > 0:
            raise InvalidInput("simplify does not apply to format=csv, which streams every fix; drop it")
        if "gap_s" in request.query_params:
            raise InvalidInput("gap_s does not apply to format=csv, which has no runs; drop it")
        return StreamingResponse(
            _csv(request, device, from_ms, to_ms),
            media_type="text/csv; charset=utf-8",
            headers=_download(device, "csv"),
        )
    full = await _track(
        request, device, from_ms, to_ms, MAX_TRAIL_FIXES, ", or use format=csv or /positions paging"
    )
    if fmt == "gpx":
        xml = await asyncio.to_thread(_gpx, device.id, full, tolerance, gap_s)
        return Response(xml, media_type="application/gpx+xml", headers=_download(device, "gpx"))
    feature = await asyncio.to_thread(_geojson, device.id, from_ms, to_ms, full, tolerance, gap_s)
    return JSONResponse(feature, media_type="application/geo+json")


def _drawn(full: Trail, tolerance: float, gap_s: float) -> tuple[Trail, IntArray, IntArray]:
    """Where the full trail's runs start, the trail to draw (simplified run by run) and its runs' starts."""
    starts = run_starts(full.ts, gap_s * 1000)
    return (*simplify_runs(full, starts, tolerance), starts)


def _geojson(
    device: str, from_ms: int, to_ms: int, full: Trail, tolerance: float, gap_s: float
) -> dict[str, object]:
    drawn, drawn_starts, starts = _drawn(full, tolerance, gap_s)
    feature = to_geojson(device, from_ms, to_ms, drawn, runs_length_m(full, starts), drawn_starts)
    properties = feature["properties"]
    assert isinstance(properties, dict)
    properties["fixes"] = len(full)
    properties["gap_s"] = gap_s
    return feature


def _gpx(device: str, full: Trail, tolerance: float, gap_s: float) -> str:
    drawn, drawn_starts, _ = _drawn(full, tolerance, gap_s)
    return to_gpx(device, drawn, drawn_starts)


async def _csv(request: Request, device: Device, from_ms: int, to_ms: int) -> AsyncIterator[str]:
    yield CSV_HEADER
    include = params.flag(request, "include_flagged")
    async for chunk in history.rows(
        params.core(request).db, device.id, from_ms, to_ms, include_flagged=include
    ):
        yield csv_lines(chunk)


async def _report_input(request: Request) -> tuple[Trail, float, int]:
    """What `/stops` and `/trips` compute from: the device's trail of the window, the stop radius and the
    shortest stop (ms) (coroutine)."""
    _, device = await params.viewer_and_device(request)
    from_ms, to_ms = params.window(request)
    radius_m = params.number(request, "radius_m", DEFAULT_RADIUS_M, 1.0, 100_000.0)
    min_duration_s = params.number(request, "min_duration_s", DEFAULT_MIN_DURATION_S, 1.0, 30 * 86_400.0)
    full = await _track(request, device, from_ms, to_ms, MAX_REPORT_FIXES, "")
    return full, radius_m, round(min_duration_s * 1000)


async def stops(request: Request) -> Response:
    """
    summary: Where a device stopped during a window
    description: >
      A stop starts at the earliest fix such that the device then stays within radius_m (geodesic) of that
      fix for at least min_duration_s, and ends at the last fix before the first one farther away (or at the
      end of the window). Its lat/lon is the mean of its fixes. At most 500000 fixes in the window.
    security: [{bearer: []}]
    parameters:
      - {$ref: '#/components/parameters/DeviceId'}
      - {$ref: '#/components/parameters/From'}
      - {$ref: '#/components/parameters/To'}
      - {$ref: '#/components/parameters/RadiusM'}
      - {$ref: '#/components/parameters/MinDurationS'}
    responses:
      200:
        description: The stops, in time order.
        content: {application/json: {schema: {$ref: '#/components/schemas/StopList'}}}
    """
    full, radius_m, min_duration_ms = await _report_input(request)

    def run() -> list[dict[str, object]]:
        return [stop_item(full, s) for s in find_stops(full, radius_m, min_duration_ms)]

    return JSONResponse({"stops": await asyncio.to_thread(run)})


async def trips(request: Request) -> Response:
    """
    summary: How a device moved between its stops during a window
    description: >
      Trips run from the last fix of a stop to the first fix of the next (stops as in /stops, with the same
      radius_m and min_duration_s). The movement before the first stop and after the last (or the whole
      window without stops) is a trip when it goes farther than radius_m from where it began. distance_m is
      geodesic through the fixes, avg_speed = distance_m / duration_s, max_speed the highest reported speed
      (or, when no fix reported one, the highest between consecutive fixes); speeds in m/s.
    security: [{bearer: []}]
    parameters:
      - {$ref: '#/components/parameters/DeviceId'}
      - {$ref: '#/components/parameters/From'}
      - {$ref: '#/components/parameters/To'}
      - {$ref: '#/components/parameters/RadiusM'}
      - {$ref: '#/components/parameters/MinDurationS'}
    responses:
      200:
        description: The trips, in time order.
        content: {application/json: {schema: {$ref: '#/components/schemas/TripList'}}}
    """
    full, radius_m, min_duration_ms = await _report_input(request)

    def run() -> list[dict[str, object]]:
        spans = find_trips(full, find_stops(full, radius_m, min_duration_ms), radius_m)
        return [trip_item(full, s) for s in spans]

    return JSONResponse({"trips": await asyncio.to_thread(run)})


routes = [
    Route("/api/devices/{id}/trail", trail, methods=["GET"]),
    Route("/api/devices/{id}/stops", stops, methods=["GET"]),
    Route("/api/devices/{id}/trips", trips, methods=["GET"]),
]
