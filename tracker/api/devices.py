"""Devices as a viewer sees them: the list with live state, and a device's stored positions."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tracker.api import params
from tracker.api.responses import JSONResponse
from tracker.geo import cell_hex
from tracker.store import accounts
from tracker.store.fixes import positions_page


async def list_devices(request: Request) -> Response:
    """
    summary: Devices of the token's fleets, with their newest position
    security: [{bearer: []}]
    responses:
      200:
        description: Every device the token may see, ordered by id.
        content: {application/json: {schema: {$ref: '#/components/schemas/DeviceList'}}}
      401: {$ref: '#/components/responses/Unauthorized'}
    """
    who = await params.viewer(request)
    core = params.core(request)
    devices = await accounts.list_devices(core.db, who.fleets)
    online = await core.presence.online(d.id for d in devices)  # the cluster's, with Redis
    out: list[dict[str, Any]] = []
    for d in devices:
        p = core.index.get(d.id)
        last = (
            {"lat": p.lat, "lon": p.lon, "ts": p.ts, "speed": p.speed, "heading": p.heading}
            if p is not None
            else None
        )
        out.append(
            {
                "id": d.id,
                "fleet": d.fleet,
                "name": d.name,
                "online": d.id in online,
                "last": last,
            }
        )
    return JSONResponse({"devices": out})


async def positions(request: Request) -> Response:
    """
    summary: Stored fixes of one device, oldest first, a page at a time
    security: [{bearer: []}]
    parameters:
      - {$ref: '#/components/parameters/DeviceId'}
      - {$ref: '#/components/parameters/From'}
      - {$ref: '#/components/parameters/To'}
      - {$ref: '#/components/parameters/PageLimit'}
      - {$ref: '#/components/parameters/Cursor'}
    responses:
      200:
        description: A GeoJSON FeatureCollection of Points, plus next_cursor (null on the last page).
        content: {application/geo+json: {schema: {$ref: '#/components/schemas/PositionPage'}}}
    """
    _, device = await params.viewer_and_device(request)
    window = params.page_window(request)
    rows = await positions_page(params.core(request).db, device.id, window)
    shown, next_cursor = params.page(rows, window.limit, lambda r: int(r["ts"]))
    features = [
        {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [r["lon"], r["lat"]]},
            "properties": {
                "ts": r["ts"],
                "speed": r["speed"],
                "heading": r["heading"],
                "accuracy": r["accuracy"],
                "altitude": r["altitude"],
                "battery": r["battery"],
                "cell": cell_hex(r["cell"]),
                "flag": r["flag"],
            },
        }
        for r in shown
    ]
    return JSONResponse(
        {"type": "FeatureCollection", "features": features, "next_cursor": next_cursor},
        media_type="application/geo+json",
    )


routes = [
    Route("/api/devices", list_devices, methods=["GET"]),
    Route("/api/devices/{id}/positions", positions, methods=["GET"]),
]
