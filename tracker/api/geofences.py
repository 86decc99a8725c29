"""Geofences over HTTP: the fences and rules in force, who is inside a fence now, and stored events."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import shapely
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tracker.api import params
from tracker.api.responses import JSONResponse
from tracker.errors import InvalidInput, NotFound
from tracker.geo import circle_polygon
from tracker.model import EVENT_TYPES, Fence, FixFilter, Rule, Viewer
from tracker.parse import check_id
from tracker.store.events import events_page
from tracker.store.geofences import inside_now


def _fence_feature(fence: Fence) -> dict[str, Any]:
    properties: dict[str, Any] = {"id": fence.id, "name": fence.name, "tags": list(fence.tags)}
    if fence.center_lonlat is not None and fence.radius_m is not None:
        lon, lat = fence.center_lonlat
        # GeoJSON has no circle: a 64-gon for drawing, and the exact circle in the properties.
        geometry = shapely.geometry.mapping(circle_polygon(lat, lon, fence.radius_m, 64))
        properties["circle"] = {"center": [lon, lat], "radius_m": fence.radius_m}
    else:
        geometry = shapely.geometry.mapping(fence.geometry)
    return {"type": "Feature", "id": fence.id, "geometry": geometry, "properties": properties}


def _redact(url: str) -> str:
    """A webhook URL as non-admins see it: scheme and host only (paths and queries may hold secrets)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}/…"


def _rule_json(rule: Rule, who: Viewer, admin: bool) -> dict[str, Any]:
    fleets = sorted(rule.fleets) if rule.fleets is not None else None
    if fleets is not None and who.fleets is not None:
        fleets = [f for f in fleets if f in who.fleets]
    out: dict[str, Any] = {
        "id": rule.id,
        "on": rule.on,
        "fences": list(rule.fences),
        "fleets": fleets,
        "confirm_fixes": rule.confirm_fixes,
        "notify": [t if admin or t in ("viewers", "device") else _redact(t) for t in rule.notify],
    }
    if rule.dwell_s is not None:
        out["dwell_s"] = rule.dwell_s
    if rule.max_speed_kmh is not None:
        out["max_speed_kmh"] = rule.max_speed_kmh
    if rule.strict:
        out["accuracy"] = "strict"
    if rule.on == "near":
        near = sorted(rule.near_fleets) if rule.near_fleets is not None else fleets
        if near is not None and who.fleets is not None:
            near = [f for f in near if f in who.fleets]
        out["near_fleets"] = near
        out["distance_m"] = rule.distance_m
    return out


def _concerns(rule: Rule, who: Viewer) -> bool:
    """True when `rule` can fire for a device `who` sees (a near rule: on either side)."""
    if who.fleets is None or rule.fleets is None or rule.fleets & who.fleets:
        return True
    return rule.on == "near" and (rule.near_fleets is None or bool(rule.near_fleets & who.fleets))


def _filter_json(f: FixFilter, who: Viewer) -> dict[str, Any]:
    fleets = sorted(f.fleets) if f.fleets is not None else None
    if fleets is not None and who.fleets is not None:
        fleets = [x for x in fleets if x in who.fleets]
    out: dict[str, Any] = {"fleets": fleets}
    for key in ("max_accuracy_m", "max_speed_kmh", "min_distance_m", "jump_window_s", "keep_every_s"):
        if getattr(f, key) is not None:
            out[key] = getattr(f, key)
    return out


async def list_geofences(request: Request) -> Response:
    """
    summary: The fences and rules in force, and problems in the geofence folder
    description: >
      Fences as GeoJSON features (circles drawn as 64-gons, with the exact circle in `properties.circle`);
      the rules that apply to the token's fleets, and the fix filters (`filters`) of its fleets; `errors`
      lists `file:line: reason` for files that failed to load (the rules in force are then the last good
      ones).
    security: [{bearer: []}]
    responses:
      200:
        description: A GeoJSON FeatureCollection with top-level `rules` and `errors`.
        content: {application/geo+json: {schema: {$ref: '#/components/schemas/Geofences'}}}
      401: {$ref: '#/components/responses/Unauthorized'}
    """
    who = await params.viewer(request)
    core = params.core(request)
    admin = who.fleets is None and core.auth.is_admin(params.bearer(request))
    rules = core.geofences.rules
    visible = [r for r in rules.rules if _concerns(r, who)]
    return JSONResponse(
        {
            "type": "FeatureCollection",
            "features": [_fence_feature(f) for f in rules.fences],
            "rules": [_rule_json(r, who, admin) for r in visible],
            "filters": [
                _filter_json(f, who)
                for f in rules.filters.filters
                if f.fleets is None or who.fleets is None or f.fleets & who.fleets
            ],
            "errors": list(core.geofences.errors),
        },
        media_type="application/geo+json",
    )


async def inside(request: Request) -> Response:
    """
    summary: Devices inside a fence now
    description: >
      Devices of the token's fleets whose newest fix is inside the fence, with the time they entered.
    security: [{bearer: []}]
    parameters:
      - {name: id, in: path, required: true, schema: {$ref: '#/components/schemas/Id'}}
    responses:
      200:
        description: The devices inside, earliest arrival first.
        content: {application/json: {schema: {$ref: '#/components/schemas/InsideList'}}}
      400: {$ref: '#/components/responses/BadRequest'}
      401: {$ref: '#/components/responses/Unauthorized'}
      404: {$ref: '#/components/responses/NotFound'}
    """
    who = await params.viewer(request)
    fence_id = check_id(request.path_params["id"], "fence id")
    core = params.core(request)
    if fence_id not in core.geofences.rules.fence_position:
        raise NotFound(f"fence {fence_id!r} is not loaded; GET /api/geofences lists the fences")
    fleets = sorted(who.fleets) if who.fleets is not None else None
    return JSONResponse({"devices": await inside_now(core.db, fence_id, fleets)})


def _optional_id(request: Request, name: str) -> str | None:
    raw = request.query_params.get(name)
    return check_id(raw, name) if raw else None


async def list_events(request: Request) -> Response:
    """
    summary: Stored geofence events, oldest first, a page at a time
    description: >
      Events of the token's fleets whose fix time is in [from, to), filtered by any of the parameters.
    security: [{bearer: []}]
    parameters:
      - {name: device, in: query, schema: {$ref: '#/components/schemas/Id'}}
      - {name: fence, in: query, schema: {$ref: '#/components/schemas/Id'}}
      - {name: rule, in: query, schema: {$ref: '#/components/schemas/Id'}}
      - {name: type, in: query, schema: {enum: [enter, exit, dwell, speeding, cross, near, far]}}
      - {$ref: '#/components/parameters/From'}
      - {$ref: '#/components/parameters/To'}
      - {$ref: '#/components/parameters/PageLimit'}
      - {$ref: '#/components/parameters/Cursor'}
    responses:
      200:
        description: Events, plus next_cursor (null on the last page).
        content: {application/json: {schema: {$ref: '#/components/schemas/EventPage'}}}
      400: {$ref: '#/components/responses/BadRequest'}
      401: {$ref: '#/components/responses/Unauthorized'}
      403: {$ref: '#/components/responses/Forbidden'}
      404: {$ref: '#/components/responses/NotFound'}
    """
    who = await params.viewer(request)
    device = _optional_id(request, "device")
    if device is not None:
        await params.visible_device(request, who, device)
    kind = request.query_params.get("type") or None
    if kind is not None and kind not in EVENT_TYPES:
        raise InvalidInput(f"type must be one of {', '.join(EVENT_TYPES)}; got {kind!r:.40}")
    window = params.page_window(request)
    events = await events_page(
        params.core(request).db,
        fleets=sorted(who.fleets) if who.fleets is not None else None,
        device=device,
        fence=_optional_id(request, "fence"),
        rule=_optional_id(request, "rule"),
        type=kind,
        window=window,
    )
    shown, next_cursor = params.page(events, window.limit, lambda e: int(e.id))
    return JSONResponse({"events": [e.to_json() for e in shown], "next_cursor": next_cursor})


routes = [
    Route("/api/geofences", list_geofences, methods=["GET"]),
    Route("/api/geofences/{id}/inside", inside, methods=["GET"]),
    Route("/api/events", list_events, methods=["GET"]),
]
