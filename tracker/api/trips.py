"""Trips over HTTP: start one for a device, read them, complete or cancel one.

A viewer token may act on the trips of the fleets it grants (the admin token on every fleet). The body
is checked here, field by field; the core (`tracker.trips.service`) does the rest.
"""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tracker.api import params
from tracker.api.responses import JSONResponse
from tracker.api.share import share_url as share_link
from tracker.auth import ADMIN
from tracker.errors import InvalidInput
from tracker.model import Viewer
from tracker.parse import check_id, json_number
from tracker.trips.model import STATUSES, Destination

RADIUS_M = 50.0
APPROACH_M = 1000.0
SHARE_TTL_S = 86_400
NOTIFY_MAX = 10
REF_MAX = 200


def _positive(body: dict[str, Any], name: str, default: float | None, high: float) -> float | None:
    """A number field greater than 0 and at most `high`, `default` when absent."""
    value = body.get(name)
    if value is None:
        return default
    number = json_number(value, name)
    if not 0 < number <= high:
        raise InvalidInput(f"{name} must be greater than 0 and at most {high:.15g}; got {number:.15g}")
    return number


def _destination(value: Any) -> Destination:
    if not isinstance(value, dict):
        raise InvalidInput('destination must be {"lat", "lon", "radius_m"?} or {"fence": "<id>"}')
    if "fence" in value:
        return Destination(None, None, 0.0, check_id(value["fence"], "destination.fence"))
    if "lat" not in value or "lon" not in value:
        raise InvalidInput('destination needs "lat" and "lon", or "fence"')
    lat = json_number(value["lat"], "destination.lat")
    lon = json_number(value["lon"], "destination.lon")
    if not -90 <= lat <= 90:
        raise InvalidInput(f"destination.lat must be between -90 and 90; got {lat:.15g}")
    if not -180 <= lon <= 180:
        raise InvalidInput(f"destination.lon must be between -180 and 180; got {lon:.15g}")
    radius = _positive(value, "radius_m", RADIUS_M, 100_000)
    assert radius is not None
    return Destination(lat, lon, radius)


def _notify(value: Any, who: Viewer) -> list[str]:
    """The trip's webhook URLs. A viewer may not aim the server's signed POSTs at this machine or its
    private network (loopback, private, link-local or reserved addresses, `localhost`); the admin may."""
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > NOTIFY_MAX:
        raise InvalidInput(f"notify must be a list of at most {NOTIFY_MAX} webhook URLs")
    for url in value:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")) or len(url) > 2000:
            raise InvalidInput(f"notify entries must be http:// or https:// URLs; got {url!r:.80}")
        if who != ADMIN and _internal(url):
            raise InvalidInput(
                f"notify entries must be public hosts; {url!r:.80} is a local or private address "
                "(only the admin token may name one)"
            )
    return value


def _internal(url: str) -> bool:
    """True for a URL whose host is `localhost` or an address that is not globally routable."""
    try:
        host = (urlsplit(url).hostname or "").rstrip(".").lower()
    except ValueError:
        return True
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return not ipaddress.ip_address(host).is_global
    except ValueError:
        return False  # a name: resolved only when the POST is sent


async def create(request: Request) -> Response:
    """
    summary: Start a trip of a device to a destination
    description: >-
      Status starts as `started`; the device's fixes move it to `approaching` (first fix within
      approach_m of the destination) and `arrived` (first fix inside it), then POST complete ends it (or
      cancel; a trip not arrived within ttl_s expires). Each change is a `trip` event to the viewers of
      the fleet, an `alert` to the device and a POST to each `notify` URL. eta_ts and remaining_m follow
      each fix.
    security: [{bearer: []}]
    requestBody:
      required: true
      content: {application/json: {schema: {$ref: '#/components/schemas/NewTrip'}}}
    responses:
      201:
        description: The new trip.
        content: {application/json: {schema: {$ref: '#/components/schemas/Trip'}}}
      400: {$ref: '#/components/responses/BadRequest'}
      401: {$ref: '#/components/responses/Unauthorized'}
      403: {$ref: '#/components/responses/Forbidden'}
      404: {$ref: '#/components/responses/NotFound'}
    """
    who = await params.viewer(request)
    body = await params.json_object(request)
    if "device" not in body:
        raise InvalidInput("device is required")
    device = await params.visible_device(request, who, check_id(body["device"], "device"))
    if "destination" not in body:
        raise InvalidInput("destination is required")
    destination = _destination(body["destination"])
    ref = body.get("ref")
    if ref is not None and (not isinstance(ref, str) or len(ref) > REF_MAX):
        raise InvalidInput(f"ref must be a string of at most {REF_MAX} characters")
    share = body.get("share", False)
    if not isinstance(share, bool):
        raise InvalidInput(f"share must be true or false; got {share!r:.40}")
    share_ttl = body.get("share_ttl_s", SHARE_TTL_S)
    if isinstance(share_ttl, bool) or not isinstance(share_ttl, int) or not 60 <= share_ttl <= 2_592_000:
        raise InvalidInput(f"share_ttl_s must be whole seconds from 60 to 2592000; got {share_ttl!r:.40}")
    approach = _positive(body, "approach_m", APPROACH_M, 1_000_000)
    assert approach is not None
    trip = await params.core(request).trips.create(
        who,
        device,
        destination,
        approach_m=approach,
        ref=ref,
        notify=_notify(body.get("notify"), who),
        share=share,
        share_ttl_s=share_ttl if share else None,
        ttl_s=_positive(body, "ttl_s", None, 31_536_000),
    )
    answer = trip.to_json()
    if share:
        answer["share_url"] = await share_link(request, trip)
    return JSONResponse(answer, status_code=201)


async def list_trips(request: Request) -> Response:
    """
    summary: Trips open at some time in the window, oldest first
    description: >-
      A trip counts when it was created before `to` and had not ended before `from` (so open trips
      always show). Only fleets the token grants.
    security: [{bearer: []}]
    parameters:
      - {name: device, in: query, schema: {$ref: '#/components/schemas/Id'}}
      - name: status
        in: query
        schema: {type: string, enum: [started, approaching, arrived, completed, cancelled, expired]}
      - {$ref: '#/components/parameters/From'}
      - {$ref: '#/components/parameters/To'}
      - {name: limit, in: query, schema: {type: integer, minimum: 1, maximum: 1000, default: 100}}
      - {$ref: '#/components/parameters/Cursor'}
    responses:
      200:
        description: A page of trips and next_cursor (null on the last page).
        content: {application/json: {schema: {$ref: '#/components/schemas/TripPage'}}}
      400: {$ref: '#/components/responses/BadRequest'}
      401: {$ref: '#/components/responses/Unauthorized'}
      403: {$ref: '#/components/responses/Forbidden'}
      404: {$ref: '#/components/responses/NotFound'}
    """
    who = await params.viewer(request)
    device = request.query_params.get("device") or None
    if device is not None:
        await params.visible_device(request, who, check_id(device, "device"))
    status = request.query_params.get("status") or None
    if status is not None and status not in STATUSES:
        raise InvalidInput(f"status must be one of {', '.join(STATUSES)}; got {status!r:.40}")
    window = params.page_window(request, 100, 1000)
    trips = await params.core(request).trips.page(who, device=device, status=status, window=window)
    page, next_cursor = params.page(trips, window.limit, lambda t: int(t.id))
    return JSONResponse({"trips": [t.to_json() for t in page], "next_cursor": next_cursor})


_ONE_TRIP_DOC = """
    security: [{bearer: []}]
    parameters:
      - {name: id, in: path, required: true, schema: {type: string, pattern: '^[0-9]{1,18}$'}}
    responses:
      200:
        description: The trip.
        content: {application/json: {schema: {$ref: '#/components/schemas/Trip'}}}
      400: {$ref: '#/components/responses/BadRequest'}
      401: {$ref: '#/components/responses/Unauthorized'}
      403: {$ref: '#/components/responses/Forbidden'}
      404: {$ref: '#/components/responses/NotFound'}
"""


def _trip_id(request: Request) -> str:
    raw = request.path_params["id"]
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise InvalidInput(f"trip id must be a number; got {raw!r:.40}")
    return str(int(raw))


async def get_trip(request: Request) -> Response:
    who = await params.viewer(request)
    trip = await params.core(request).trips.get(who, _trip_id(request))
    return JSONResponse(trip.to_json())


async def complete(request: Request) -> Response:
    who = await params.viewer(request)
    trip = await params.core(request).trips.end(who, _trip_id(request), "completed")
    return JSONResponse(trip.to_json())


async def cancel(request: Request) -> Response:
    who = await params.viewer(request)
    trip = await params.core(request).trips.end(who, _trip_id(request), "cancelled")
    return JSONResponse(trip.to_json())


_CONFLICT = """      409:
        description: The trip has ended already (completed, cancelled or expired).
        content: {application/json: {schema: {$ref: '#/components/schemas/Error'}}}
"""
get_trip.__doc__ = "\n    summary: A trip, with its newest ETA" + _ONE_TRIP_DOC
complete.__doc__ = (
    "\n    summary: Complete a trip (started, approaching or arrived)" + _ONE_TRIP_DOC + _CONFLICT
)
cancel.__doc__ = "\n    summary: Cancel a trip (started, approaching or arrived)" + _ONE_TRIP_DOC + _CONFLICT

routes = [
    Route("/api/trips", create, methods=["POST"]),
    Route("/api/trips", list_trips, methods=["GET"]),
    Route("/api/trips/{id}", get_trip, methods=["GET"]),
    Route("/api/trips/{id}/complete", complete, methods=["POST"]),
    Route("/api/trips/{id}/cancel", cancel, methods=["POST"]),
]
