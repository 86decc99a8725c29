"""The `/openapi.json` schemas of the app ingest routes (tracker/api/ingest_http.py): the requests of
Traccar Client, OsmAnd and OwnTracks as `tracker.protocols` reads them; `tracker.api.schemas` lists
them among its components (kept apart so that each module stays under 15 KB)."""

from __future__ import annotations

from typing import Any

from tracker.parse import NUMBER_TEXT

NUMBER = {"type": "number"}
STRING = {"type": "string"}

# The bodies of the ingest routes for ready-made tracking apps (tracker/api/ingest_http.py). Ranges bound
# the numbers a fix takes; an optional value outside them, or the apps' "unknown" (-1, empty, null, NaN),
# is no error: it is left out of the fix (an unfit one kept in attrs). Only lat, lon and time refuse a fix.
_NUMBER_TEXT = {"type": ["number", "string"], "pattern": NUMBER_TEXT.pattern}
_LAT = {"minimum": -90, "maximum": 90}
_LON = {"minimum": -180, "maximum": 180}
_HEADING = {"maximum": 360}
_PERCENT = {"minimum": 0, "maximum": 100}
_AFTER_2000_S = 946_684_801  # unix seconds: a fix time must be later than 2000-01-01
INGEST_SCHEMAS: dict[str, Any] = {
    "OsmAndFields": {
        "type": "object",
        "description": "OsmAnd fields as Traccar Client sends them; other fields go to the attrs.",
        "required": ["id"],
        "anyOf": [
            {"required": ["lat", "lon"]},
            {"required": ["location"]},
            {"required": ["notificationToken"]},
        ],
        "properties": {
            "id": {"type": "string", "description": "The device token (also accepted as `deviceid`)."},
            "lat": {**_NUMBER_TEXT, **_LAT, "description": "Degrees, -90..90."},
            "lon": {**_NUMBER_TEXT, **_LON, "description": "Degrees, -180..180."},
            "location": {"type": "string", "description": "`lat,lon`, instead of lat and lon."},
            "timestamp": {
                "type": "string",
                "description": "Unix seconds, milliseconds (from 1e11 on) or ISO 8601 with an offset; "
                "default: the server time.",
            },
            "speed": {**_NUMBER_TEXT, "description": "Knots (stored as m/s); -1 or empty: unknown."},
            "bearing": {
                **_NUMBER_TEXT,
                **_HEADING,
                "description": "Degrees, 0..360 (also accepted as `heading`); -1 or empty: unknown.",
            },
            "altitude": {**_NUMBER_TEXT, "description": "Metres."},
            "accuracy": {**_NUMBER_TEXT, "description": "Metres; -1 or empty: unknown."},
            "batt": {**_NUMBER_TEXT, **_PERCENT, "description": "Battery, percent; -1 or empty: unknown."},
            "hdop": {**_NUMBER_TEXT, "description": "Kept in attrs."},
            "charge": {"type": "string", "description": "true or false; kept in attrs."},
            "notificationToken": {
                "type": "string",
                "minLength": 1,
                "maxLength": 4096,
                "description": "Traccar Client's push token, kept for the device (the newest replaces "
                "the last); sent with `id` alone, it registers the token and stores no fix.",
            },
        },
        "examples": [{"id": "<device token>", "lat": 52.52, "lon": 13.405, "speed": 12.5, "batt": 87}],
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
                            "latitude": {"type": "number", **_LAT},
                            "longitude": {"type": "number", **_LON},
                            "accuracy": {"type": "number", "description": "Metres; -1: unknown."},
                            "speed": {"type": "number", "description": "m/s; -1: unknown."},
                            "heading": {"type": "number", **_HEADING, "description": "Degrees; -1: unknown."},
                            "altitude": NUMBER,
                        },
                    },
                    "battery": {
                        "type": "object",
                        "properties": {
                            "level": {"type": "number", "maximum": 1, "description": "0..1; -1: unknown."},
                            "is_charging": {"type": "boolean"},
                        },
                    },
                    "is_moving": {"type": "boolean"},
                    "odometer": NUMBER,
                    "event": STRING,
                    "activity": {"type": "object", "properties": {"type": STRING}},
                    "extras": {"type": "object", "description": "Kept in attrs."},
                },
            },
        },
    },
    "OwnTracksMessage": {
        "type": "object",
        "description": "An OwnTracks message; only `_type: location` is stored, as a fix.",
        "required": ["_type"],
        "if": {"properties": {"_type": {"const": "location"}}},
        "then": {"required": ["lat", "lon", "tst"]},
        "properties": {
            "_type": {"type": "string", "description": "location, transition, waypoint, lwt, card, ..."},
            "lat": {"type": "number", **_LAT},
            "lon": {"type": "number", **_LON},
            "tst": {"type": "integer", "minimum": _AFTER_2000_S, "description": "Unix seconds of the fix."},
            "vel": {"type": "number", "description": "km/h (stored as m/s)."},
            "cog": {"type": "number", **_HEADING, "description": "Heading, degrees."},
            "acc": {"type": "number", "description": "Metres."},
            "alt": {"type": "number", "description": "Metres."},
            "batt": {"type": "number", **_PERCENT, "description": "Percent."},
        },
        "additionalProperties": {"description": "tid, t, conn, bs, m, SSID, ...: kept in attrs."},
        "examples": [
            {"_type": "location", "lat": 52.52, "lon": 13.405, "tst": 1795687200, "vel": 18, "tid": "v7"}
        ],
    },
}
