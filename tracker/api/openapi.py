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

_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
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

COMPONENTS: dict[str, Any] = {
    "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
    "schemas": {
        "Error": _ERROR,
        "Id": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"},
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
        "EventPage": {
            "type": "object",
            "required": ["events", "next_cursor"],
            "properties": {
                "events": {"type": "array", "items": {"$ref": "#/components/schemas/GeofenceEvent"}},
                "next_cursor": {"type": ["string", "null"]},
            },
        },
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


def document(routes: list[BaseRoute]) -> dict[str, Any]:
    """The OpenAPI document of `routes`."""
    schema: dict[str, Any] = _generator.get_schema(routes)
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
