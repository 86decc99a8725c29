"""The `/openapi.json` schemas of trips (tracker/api/trips.py), merged into the shared components."""

from __future__ import annotations

from typing import Any

_NULL_INT = {"type": ["integer", "null"]}
_NULL_NUMBER = {"type": ["number", "null"]}
_STATUS = {
    "type": "string",
    "enum": ["started", "approaching", "arrived", "completed", "cancelled", "expired"],
}
_URL = {"type": "string", "pattern": "^https?://", "maxLength": 2000}

_POINT = {
    "type": "object",
    "required": ["lat", "lon"],
    "properties": {
        "lat": {"type": "number", "minimum": -90, "maximum": 90},
        "lon": {"type": "number", "minimum": -180, "maximum": 180},
        "radius_m": {
            "type": "number",
            "exclusiveMinimum": 0,
            "maximum": 100_000,
            "default": 50,
            "description": "Arrived: the first fix within this geodesic distance of the point.",
        },
    },
}
_FENCE = {
    "type": "object",
    "required": ["fence"],
    "properties": {
        "fence": {"type": "string", "description": "A loaded fence: arrived on the first fix inside."}
    },
}

TRIP_SCHEMAS: dict[str, Any] = {
    "NewTrip": {
        "type": "object",
        "required": ["device", "destination"],
        "properties": {
            "device": {"type": "string", "description": "A device of a fleet the token grants."},
            "destination": {"oneOf": [_POINT, _FENCE]},
            "approach_m": {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": 1_000_000,
                "default": 1000,
                "description": "approaching: the first fix within this distance of the destination.",
            },
            "ref": {"type": "string", "maxLength": 200, "description": "The caller's order id."},
            "notify": {
                "type": "array",
                "items": _URL,
                "maxItems": 10,
                "description": "Webhook URLs that get each status change (POSTed like geofence events).",
            },
            "share": {
                "type": "boolean",
                "default": False,
                "description": "Ask for a live link to share (stored; the link comes with share links).",
            },
            "share_ttl_s": {"type": "integer", "minimum": 60, "maximum": 2_592_000, "default": 86400},
            "ttl_s": {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": 31_536_000,
                "description": "Expire the trip if it has not arrived this long after its creation; "
                "default TRACKER_TRIP_TTL_S (24 h).",
            },
        },
    },
    "Trip": {
        "type": "object",
        "required": ["id", "device", "fleet", "status", "destination", "eta_ts", "remaining_m"],
        "properties": {
            "id": {"type": "string"},
            "device": {"type": "string"},
            "fleet": {"type": "string"},
            "status": _STATUS,
            "destination": {"oneOf": [_POINT, _FENCE]},
            "approach_m": {"type": "number"},
            "ref": {"type": ["string", "null"]},
            "notify": {"type": "array", "items": {"type": "string"}},
            "eta_ts": {**_NULL_INT, "description": "Expected arrival (ms); null while the speed is unknown."},
            "remaining_m": {
                **_NULL_NUMBER,
                "description": "Geodesic metres to the destination; 0 once arrived.",
            },
            "progress_ts": {**_NULL_INT, "description": "The fix eta_ts and remaining_m come from."},
            "created_ts": {"type": "integer"},
            "expires_ts": {"type": "integer", "description": "Expired if not arrived by then."},
            "approaching_ts": _NULL_INT,
            "arrived_ts": _NULL_INT,
            "ended_ts": _NULL_INT,
            "share": {"type": "boolean"},
            "share_url": {"type": "string", "description": "The live link, when one was asked for."},
        },
    },
    "TripPage": {
        "type": "object",
        "required": ["trips", "next_cursor"],
        "properties": {
            "trips": {"type": "array", "items": {"$ref": "#/components/schemas/Trip"}},
            "next_cursor": {"type": ["string", "null"]},
        },
    },
}
