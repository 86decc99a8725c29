"""`/openapi.json`: built from the YAML in each route's docstring, plus the shared components below,
so a route and its documentation live side by side and a test keeps them in step."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.schemas import SchemaGenerator

from tracker import __version__
from tracker.api.responses import JSONResponse
from tracker.parse import ID_PATTERN

_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _page(key: str, item: str) -> dict[str, Any]:
    """A page of `item` schemas under `key`, with the cursor of the next page (null on the last)."""
    return {
        "type": "object",
        "required": [key, "next_cursor"],
        "properties": {
            key: {"type": "array", "items": {"$ref": f"#/components/schemas/{item}"}},
            "next_cursor": {"type": ["string", "null"]},
        },
    }


def _time_param(name: str, default: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "description": f"Milliseconds since the epoch or ISO 8601 with an offset; default {default}.",
        "schema": {"oneOf": [{"type": "integer"}, {"type": "string", "format": "date-time"}]},
    }


_POSITION = {
    "type": "object",
    "properties": {k: {"type": ["number", "null"]} for k in ("lat", "lon", "ts", "speed", "heading")},
}

# The bodies of the ingest routes for ready-made tracking apps (tracker/api/ingest_http.py).
_NUMBER = {"type": ["number", "string"]}
INGEST_SCHEMAS: dict[str, Any] = {
    "OsmAndFields": {
        "type": "object",
        "description": "OsmAnd fields as Traccar Client sends them; other fields go to the attrs.",
        "required": ["id"],
        "properties": {
            "id": {"type": "string", "description": "The device token (also accepted as `deviceid`)."},
            "lat": {**_NUMBER, "description": "Degrees, -90..90."},
            "lon": {**_NUMBER, "description": "Degrees, -180..180."},
            "location": {"type": "string", "description": "`lat,lon`, instead of lat and lon."},
            "timestamp": {
                "type": "string",
                "description": "Unix seconds, milliseconds (from 1e11 on) or ISO 8601 with an offset; "
                "default: the server time.",
            },
            "speed": {**_NUMBER, "description": "Knots (stored as m/s)."},
            "bearing": {**_NUMBER, "description": "Degrees, 0..360 (also accepted as `heading`)."},
            "altitude": {**_NUMBER, "description": "Metres."},
            "accuracy": {**_NUMBER, "description": "Metres."},
            "batt": {**_NUMBER, "description": "Battery, percent."},
            "hdop": {**_NUMBER, "description": "Kept in attrs."},
            "charge": {"type": "string", "description": "true or false; kept in attrs."},
        },
    },
    "TraccarClientJson": {
        "type": "object",
        "description": "Traccar Client 9+ (transistorsoft geolocation); `location` may be an array.",
        "required": ["location", "device_id"],
        "properties": {
            "device_id": {"type": "string", "description": "The device token."},
            "location": {
                "type": "object",
                "required": ["timestamp", "coords"],
                "properties": {
                    "timestamp": {"type": "string", "format": "date-time"},
                    "coords": {
                        "type": "object",
                        "required": ["latitude", "longitude"],
                        "properties": {
                            "latitude": {"type": "number"},
                            "longitude": {"type": "number"},
                            "accuracy": {"type": "number", "description": "Metres; -1: unknown."},
                            "speed": {"type": "number", "description": "m/s; -1: unknown."},
                            "heading": {"type": "number", "description": "Degrees; -1: unknown."},
                            "altitude": {"type": "number"},
                        },
                    },
                    "battery": {
                        "type": "object",
                        "properties": {
                            "level": {"type": "number", "description": "0..1; -1: unknown."},
                            "is_charging": {"type": "boolean"},
                        },
                    },
                    "is_moving": {"type": "boolean"},
                    "odometer": {"type": "number"},
                    "event": {"type": "string"},
                    "activity": {"type": "object", "properties": {"type": {"type": "string"}}},
                    "extras": {"type": "object", "description": "Kept in attrs."},
                },
            },
        },
    },
    "OwnTracksMessage": {
        "type": "object",
        "description": "An OwnTracks message; only `_type: location` is stored, as a fix.",
        "required": ["_type"],
        "properties": {
            "_type": {"type": "string", "description": "location, transition, waypoint, lwt, card, ..."},
            "lat": {"type": "number"},
            "lon": {"type": "number"},
            "tst": {"type": "integer", "description": "Unix seconds of the fix."},
            "vel": {"type": "number", "description": "km/h (stored as m/s)."},
            "cog": {"type": "number", "description": "Heading, degrees."},
            "acc": {"type": "number", "description": "Metres."},
            "alt": {"type": "number", "description": "Metres."},
            "batt": {"type": "number", "description": "Percent."},
        },
        "additionalProperties": {"description": "tid, t, conn, bs, m, SSID, ...: kept in attrs."},
    },
}

COMPONENTS: dict[str, Any] = {
    "securitySchemes": {
        "bearer": {"type": "http", "scheme": "bearer"},
        "basic": {"type": "http", "scheme": "basic"},
    },
    "schemas": {
        "Error": _ERROR,
        "Id": {"type": "string", "pattern": ID_PATTERN.pattern},
        "Fleets": {
            "description": "Fleet ids, or every fleet.",
            "oneOf": [
                {"type": "array", "items": {"$ref": "#/components/schemas/Id"}},
                {"type": "string", "enum": ["all"]},
            ],
        },
        "DeviceList": {
            "type": "object",
            "required": ["devices"],
            "properties": {
                "devices": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["id", "fleet", "online", "last"],
                        "properties": {
                            "id": {"type": "string"},
                            "fleet": {"type": "string"},
                            "name": {"type": ["string", "null"]},
                            "online": {"type": "boolean"},
                            "last": {"oneOf": [_POSITION, {"type": "null"}]},
                        },
                    },
                }
            },
        },
        "PositionPage": {
            "type": "object",
            "required": ["type", "features", "next_cursor"],
            "properties": {
                "type": {"const": "FeatureCollection"},
                "features": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "geometry": {"type": "object"},
                            "properties": {
                                "type": "object",
                                "required": ["ts", "speed", "heading", "accuracy", "cell"],
                            },
                        },
                    },
                },
                "next_cursor": {"type": ["string", "null"]},
            },
        },
        "GeofenceEvent": {
            "type": "object",
            "required": ["id", "type", "rule", "fence", "device", "fleet", "ts", "lat", "lon"],
            "properties": {
                "id": {"type": "string"},
                "type": {"enum": ["enter", "exit", "dwell", "speeding", "cross"]},
                "rule": {"type": "string"},
                "fence": {"type": "string"},
                "device": {"type": "string"},
                "fleet": {"type": "string"},
                "ts": {"type": "integer"},
                "lat": {"type": "number"},
                "lon": {"type": "number"},
            },
        },
        "EventPage": _page("events", "GeofenceEvent"),
        "Message": {
            "type": "object",
            "required": ["id", "device", "body", "from", "ts", "state", "attempts", "sent_ts", "acked_ts"],
            "properties": {
                "id": {"type": "string"},
                "device": {"type": "string"},
                "body": {"description": "Any JSON value, as sent."},
                "from": {"type": "string", "description": "The sender's viewer name."},
                "ts": {"type": "integer", "description": "When it was sent (stored), ms."},
                "state": {"type": "string", "enum": ["queued", "sent", "acked"]},
                "attempts": {"type": "integer", "description": "Hand-overs to the device so far."},
                "sent_ts": {"type": ["integer", "null"]},
                "acked_ts": {"type": ["integer", "null"]},
            },
        },
        "MessagePage": _page("messages", "Message"),
        "InsideList": {
            "type": "object",
            "required": ["devices"],
            "properties": {
                "devices": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["id", "fleet", "since_ts"],
                        "properties": {
                            "id": {"type": "string"},
                            "fleet": {"type": "string"},
                            "since_ts": {"type": "integer"},
                        },
                    },
                }
            },
        },
        "Geofences": {
            "type": "object",
            "required": ["type", "features", "rules", "errors"],
            "properties": {
                "type": {"const": "FeatureCollection"},
                "features": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "geometry": {"type": "object"},
                            "properties": {"type": "object", "required": ["id", "name", "tags"]},
                        },
                    },
                },
                "rules": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["id", "on", "fences", "fleets", "confirm_fixes", "notify"],
                    },
                },
                "errors": {"type": "array", "items": {"type": "string"}},
            },
        },
        **INGEST_SCHEMAS,
    },
    "parameters": {
        "DeviceId": {
            "name": "id",
            "in": "path",
            "required": True,
            "schema": {"$ref": "#/components/schemas/Id"},
        },
        "From": _time_param("from", "24 hours before `to`"),
        "RadiusM": {
            "name": "radius_m",
            "in": "query",
            "description": "A stop keeps within this geodesic distance (metres) of its first fix.",
            "schema": {"type": "number", "minimum": 1, "maximum": 100000, "default": 50},
        },
        "MinDurationS": {
            "name": "min_duration_s",
            "in": "query",
            "description": "A stop lasts at least this many seconds.",
            "schema": {"type": "number", "minimum": 1, "maximum": 2592000, "default": 300},
        },
        "To": _time_param("to", "now"),
    },
    "responses": {
        "BadRequest": _error("A parameter is invalid; the error names it."),
        "Unauthorized": _error("No token, or an unknown one."),
        "Forbidden": _error("The token does not grant this fleet or device."),
        "NotFound": _error("No such resource."),
    },
}

_generator = SchemaGenerator(
    {
        "openapi": "3.1.0",
        "info": {
            "title": "tracker",
            "version": __version__,
            "description": "Real-time fleet tracking. Socket.IO namespaces /device and /viewer "
            "share this port; see the README for their events.",
        },
        "components": COMPONENTS,
    }
)


# Every route below a device answers these the same way (a bad parameter, no token, a device of another
# fleet, no such device), and every admin route the first three (not the admin token: 403); so their
# docstrings leave them out and the document adds them.
_ERRORS = {
    code: {"$ref": f"#/components/responses/{name}"}
    for code, name in ((400, "BadRequest"), (401, "Unauthorized"), (403, "Forbidden"), (404, "NotFound"))
}
SHARED_ERRORS = {"/api/devices/{id}/": (400, 401, 403, 404), "/api/admin/": (400, 401, 403)}


def document(routes: list[BaseRoute]) -> dict[str, Any]:
    """The OpenAPI document of `routes`."""
    schema: dict[str, Any] = _generator.get_schema(routes)
    for path, operations in schema["paths"].items():
        for prefix, codes in SHARED_ERRORS.items():
            if path.startswith(prefix):
                for operation in operations.values():
                    shared = {code: _ERRORS[code] for code in codes}
                    operation["responses"] = {**operation["responses"], **shared}
    return schema


async def openapi_json(request: Request) -> Response:
    """
    summary: This document
    responses:
      200: {description: The OpenAPI 3.1 document of the HTTP API.}
    """
    state = request.app.state
    if getattr(state, "openapi", None) is None:
        state.openapi = document(request.app.routes)
    return JSONResponse(state.openapi)


routes = [Route("/openapi.json", openapi_json, methods=["GET"], include_in_schema=True)]
