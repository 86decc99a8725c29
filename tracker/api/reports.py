"""HTTP edge of daily reports: `GET /api/reports/daily`, as JSON or CSV, scoped to the token's fleets.

The scope is the token's fleets, narrowed by `fleet` (403 when the token does not grant it) and `device`
(403/404 as every device route). The work runs in the core (`tracker.reports`), which keeps the event loop
free; this module only parses, checks and formats.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tracker import reports
from tracker.api import params
from tracker.api.responses import JSONResponse
from tracker.errors import Busy, Forbidden, InvalidInput
from tracker.model import Device, Viewer
from tracker.parse import check_id
from tracker.stops import DEFAULT_MIN_DURATION_S, DEFAULT_RADIUS_M
from tracker.store import accounts

FORMATS = ("json", "csv")
MAX_RUNNING = 2  # reports at once per process: each holds two pooled connections for seconds


async def _scope(request: Request, who: Viewer) -> list[Device]:
    """The devices the request reports on, ordered by id (coroutine)."""
    query = request.query_params
    fleet = check_id(query["fleet"], "fleet") if query.get("fleet") else None
    if fleet is not None and not who.grants(fleet):
        raise Forbidden(f"this token does not grant fleet {fleet!r}")
    if query.get("device"):
        device = await params.visible_device(request, who, check_id(query["device"], "device"))
        if fleet is not None and device.fleet != fleet:
            raise InvalidInput(f"device {device.id!r} is in fleet {device.fleet!r}, not in fleet {fleet!r}")
        return [device]
    fleets = frozenset([fleet]) if fleet is not None else who.fleets
    return await accounts.list_devices(params.core(request).db, fleets)


async def daily(request: Request) -> Response:
    """
    summary: A day of each device of the token's fleets, in a time zone, as JSON or CSV
    description: >
      One row per device in scope (every device of the token's fleets, or of `fleet`, or just `device`),
      also for a device with no fix that day (zeros, null first_ts/last_ts), ordered by id. The day is the
      local calendar day `date` in `tz` (23 or 25 hours on a DST change). distance_m, moving_s, stopped_s,
      stops and max_speed come from the stops and trips of the day exactly as /stops and /trips compute
      them with the same radius_m and min_duration_s; flagged fixes are left out. events counts geofence
      events by type (fix time in the day), messages the messages stored that day by direction. JSON adds
      `fleets`, the totals per fleet. CSV (`format=csv`) has the columns of `days`, with `events` and
      `messages` flattened to `events_<type>` and `messages_to_device`, `messages_from_device`.
    security: [{bearer: []}]
    parameters:
      - name: date
        in: query
        required: true
        description: The local calendar day, YYYY-MM-DD.
        schema: {type: string, format: date}
      - name: tz
        in: query
        required: true
        description: The IANA time zone the day is local to, e.g. Europe/Berlin or UTC.
        schema: {type: string}
      - name: fleet
        in: query
        description: Only this fleet (403 if the token does not grant it).
        schema: {$ref: '#/components/schemas/Id'}
      - name: device
        in: query
        description: Only this device (403 or 404 as on device routes).
        schema: {$ref: '#/components/schemas/Id'}
      - {name: format, in: query, schema: {enum: [json, csv], default: json}}
      - {$ref: '#/components/parameters/RadiusM'}
      - {$ref: '#/components/parameters/MinDurationS'}
    responses:
      200:
        description: The report.
        content:
          application/json: {schema: {$ref: '#/components/schemas/DailyReport'}}
          text/csv: {schema: {type: string, description: 'A header row, then a row per device.'}}
      400: {$ref: '#/components/responses/BadRequest'}
      401: {$ref: '#/components/responses/Unauthorized'}
      403: {$ref: '#/components/responses/Forbidden'}
      404: {$ref: '#/components/responses/NotFound'}
      503: {description: Two reports are being computed on this process; retry later (Retry-After).}
    """
    who = await params.viewer(request)  # first: a request without a valid token learns nothing else
    query = request.query_params
    fmt = query.get("format") or "json"
    if fmt not in FORMATS:
        raise InvalidInput(f"format must be one of {', '.join(FORMATS)}; got {fmt!r:.40}")
    if not query.get("date"):
        raise InvalidInput("date is required: the local day as YYYY-MM-DD")
    if not query.get("tz"):
        raise InvalidInput("tz is required: an IANA time zone such as Europe/Berlin or UTC")
    day = reports.local_day(query["date"], query["tz"])
    radius_m = params.number(request, "radius_m", DEFAULT_RADIUS_M, 1.0, 100_000.0)
    min_duration_s = params.number(request, "min_duration_s", DEFAULT_MIN_DURATION_S, 1.0, 30 * 86_400.0)
    state = request.app.state
    if getattr(state, "reports_running", 0) >= MAX_RUNNING:
        raise Busy(f"{MAX_RUNNING} reports are being computed on this process; retry in a minute", 10.0)
    state.reports_running = getattr(state, "reports_running", 0) + 1  # before the first await
    try:
        devices = await _scope(request, who)
        report = await reports.daily(params.core(request).db, devices, day, radius_m, min_duration_s)
    finally:
        state.reports_running -= 1
    if fmt == "csv":
        name = f"report-{day.date.isoformat()}{'-' + query['fleet'] if query.get('fleet') else ''}.csv"
        return Response(
            reports.csv_text(report),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )
    return JSONResponse(report.as_json())


routes = [Route("/api/reports/daily", daily, methods=["GET"])]
