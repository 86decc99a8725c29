"""Where, not who: devices seen in an area during a window (stored fixes) and live devices near a point.

Both answer only with devices of the fleets the token grants. `/api/area` caps its window at
AREA_MAX_DAYS so one request reads at most that many daily partitions; longer spans are several requests.
`/api/nearby` caps the radius at NEARBY_MAX_RADIUS_M: it answers from the live index, where a larger
radius would mean scanning every device anyway (for that, `GET /api/devices` lists them all). In a
cluster the index first loads the newest stored fixes of the token's fleets: another process's moves
reach it a broadcast interval late, and every process must answer alike right after a fix is acked.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tracker.api import params
from tracker.api.responses import JSONResponse
from tracker.errors import InvalidInput, NotFound
from tracker.parse import check_id, parse_bbox
from tracker.store.area import visits_in_bbox, visits_in_fence
from tracker.store.database import DAY_MS
from tracker.store.latest import newest_positions

AREA_MAX_DAYS = 31
NEARBY_MAX_RADIUS_M = 100_000.0


def _bbox(raw: str) -> tuple[float, float, float, float]:
    parts = raw.split(",")
    try:
        numbers = [float(p) for p in parts]
    except ValueError:
        raise InvalidInput(
            f"bbox must be four comma-separated numbers west,south,east,north; got {raw!r:.60}"
        ) from None
    return parse_bbox(numbers, "bbox")


async def area(request: Request) -> Response:
    """
    summary: Devices that were in an area during a time window
    description: >
      From the stored fixes: every device of the token's fleets with at least one fix in the area and
      `from <= ts < to`, with the times of its first and last such fix and how many there were. The area
      is either `bbox` (edges included; west > east crosses the antimeridian) or a loaded fence (`fence`,
      by the fence semantics: a polygon covers the fix, or its geodesic distance to a circle's centre is
      at most the radius); give exactly one. The window may span at most 31 days.
    security: [{bearer: []}]
    parameters:
      - name: bbox
        in: query
        description: west,south,east,north in degrees.
        schema: {type: string, example: '13.38,52.50,13.42,52.53'}
      - name: fence
        in: query
        description: Id of a loaded fence (see GET /api/geofences).
        schema: {$ref: '#/components/schemas/Id'}
      - {$ref: '#/components/parameters/From'}
      - {$ref: '#/components/parameters/To'}
    responses:
      200:
        description: The devices, by first_ts then id.
        content: {application/json: {schema: {$ref: '#/components/schemas/AreaVisitList'}}}
      400: {$ref: '#/components/responses/BadRequest'}
      401: {$ref: '#/components/responses/Unauthorized'}
      404: {$ref: '#/components/responses/NotFound'}
    """
    who = await params.viewer(request)
    query = request.query_params
    given = [name for name in ("bbox", "fence") if name in query]
    if len(given) != 1:
        raise InvalidInput("give exactly one of bbox (west,south,east,north) or fence (a fence id)")
    from_ms, to_ms = params.window(request)
    if to_ms - from_ms > AREA_MAX_DAYS * DAY_MS:
        raise InvalidInput(
            f"from and to may be at most {AREA_MAX_DAYS} days apart; ask for longer spans in parts"
        )
    core = params.core(request)
    fleets = sorted(who.fleets) if who.fleets is not None else None
    if "bbox" in query:
        devices = await visits_in_bbox(core.db, _bbox(query["bbox"]), from_ms, to_ms, fleets)
    else:
        fence_id = check_id(query["fence"], "fence")
        rules = core.geofences.rules
        position = rules.fence_position.get(fence_id)
        if position is None:
            raise NotFound(f"fence {fence_id!r} is not loaded; GET /api/geofences lists the fences")
        devices = await visits_in_fence(core.db, rules.fences[position], from_ms, to_ms, fleets)
    return JSONResponse({"devices": devices})


async def nearby(request: Request) -> Response:
    """
    summary: Live devices near a point, nearest first
    description: >
      The newest position of each device of the token's fleets within `radius_m` metres (geodesic, WGS84)
      of the point, nearest first (ties by id), at most `limit`.
    security: [{bearer: []}]
    parameters:
      - {name: lat, in: query, required: true, schema: {type: number, minimum: -90, maximum: 90}}
      - {name: lon, in: query, required: true, schema: {type: number, minimum: -180, maximum: 180}}
      - name: radius_m
        in: query
        required: true
        schema: {type: number, exclusiveMinimum: 0, maximum: 100000}
      - {name: limit, in: query, schema: {type: integer, minimum: 1, maximum: 1000, default: 100}}
    responses:
      200:
        description: The devices, nearest first.
        content: {application/json: {schema: {$ref: '#/components/schemas/NearbyList'}}}
      400: {$ref: '#/components/responses/BadRequest'}
      401: {$ref: '#/components/responses/Unauthorized'}
    """
    who = await params.viewer(request)
    lat = params.number(request, "lat", None, -90.0, 90.0)
    lon = params.number(request, "lon", None, -180.0, 180.0)
    radius_m = params.number(request, "radius_m", None, 0.0, NEARBY_MAX_RADIUS_M, above_low=True)
    limit = params.integer(request, "limit", 100, 1, 1000)
    core = params.core(request)
    if core.sync is not None:
        fleets = sorted(who.fleets) if who.fleets is not None else None
        core.index.load(await newest_positions(core.db, fleets=fleets))
    found = core.index.nearby(lat, lon, radius_m, who.fleets, limit)
    return JSONResponse(
        {
            "devices": [
                {
                    "id": p.device,
                    "fleet": p.fleet,
                    "lat": p.lat,
                    "lon": p.lon,
                    "ts": p.ts,
                    "distance_m": round(distance, 3),
                }
                for p, distance in found
            ]
        }
    )


routes = [
    Route("/api/area", area, methods=["GET"]),
    Route("/api/nearby", nearby, methods=["GET"]),
]
