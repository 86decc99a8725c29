"""The shared parts of `/openapi.json`: schemas, parameters and error responses that routes name by
`$ref` in their docstrings, so a shape the API answers in several places is written once."""

from __future__ import annotations

from typing import Any

from tracker.api.ingest_schemas import INGEST_SCHEMAS
from tracker.api.trip_schemas import TRIP_SCHEMAS
from tracker.model import EVENT_TYPES
from tracker.parse import ID_PATTERN, MAX_TIME_MS

INTEGER = {"type": "integer"}
NUMBER = {"type": "number"}
STRING = {"type": "string"}
NUMBER_OR_NULL = {"type": ["number", "null"]}
CURSOR_OR_NULL = {"type": ["string", "null"]}


def ref(name: str, kind: str = "schemas") -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def record(required: list[str] | None = None, /, **properties: Any) -> dict[str, Any]:
    """An object of `properties`; all of them required unless `required` names fewer."""
    return {
        "type": "object",
        "required": list(properties) if required is None else required,
        "properties": properties,
    }


def list_of(key: str, item: dict[str, Any]) -> dict[str, Any]:
    """An object with one array of `item` under `key`: how every list answer is wrapped."""
    return record(**{key: {"type": "array", "items": item}})


def page_of(key: str, item: str) -> dict[str, Any]:
    """A page of `item` schemas under `key`, with the cursor of the next page (null on the last)."""
    return record(**{key: {"type": "array", "items": ref(item)}, "next_cursor": CURSOR_OR_NULL})


def features(properties_required: list[str], **more: Any) -> dict[str, Any]:
    """A GeoJSON FeatureCollection whose features' properties hold at least `properties_required`."""
    feature = {
        "type": "object",
        "properties": {
            "geometry": {"type": "object"},
            "properties": {"type": "object", "required": properties_required},
        },
    }
    return record(type={"const": "FeatureCollection"}, features={"type": "array", "items": feature}, **more)


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ref("Error")}}}


def _time_param(name: str, default: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "description": f"Milliseconds since the epoch or ISO 8601 with an offset; default {default}.",
        "schema": {
            "oneOf": [
                {"type": "integer", "minimum": 0, "maximum": MAX_TIME_MS},
                {"type": "string", "format": "date-time"},
            ]
        },
    }


_POSITION = {
    "type": "object",
    "properties": {k: NUMBER_OR_NULL for k in ("lat", "lon", "ts", "speed", "heading")},
}
_LAT_LON = record(lat=NUMBER, lon=NUMBER)

_SCHEMAS: dict[str, Any] = {
    "Error": record(error=STRING),
    "Id": {"type": "string", "pattern": ID_PATTERN.pattern},
    "Fleets": {
        "description": "Fleet ids, or every fleet.",
        "oneOf": [{"type": "array", "items": ref("Id"), "minItems": 1}, {"type": "string", "enum": ["all"]}],
    },
    "NewDevice": record(["id", "fleet"], id=ref("Id"), fleet=ref("Id"), name=STRING),
    "DeviceToken": record(
        ["id", "fleet", "token"], id=STRING, fleet=STRING, name={"type": ["string", "null"]}, token=STRING
    ),
    "Viewer": record(name=STRING, fleets=ref("Fleets")),
    "NewViewer": record(
        ["name", "fleets"],
        name=STRING,
        fleets=ref("Fleets"),
        expires_s={"type": "number", "exclusiveMinimum": 0, "description": "The token expires after this."},
    ),
    "ViewerToken": record(
        ["name", "token"],
        name=STRING,
        fleets=ref("Fleets"),
        token=STRING,
        expires_ts={"type": ["integer", "null"], "description": "When the token expires (ms); null: never."},
    ),
    "AuditEntry": record(
        id=STRING,
        ts=INTEGER,
        actor=STRING,
        action=STRING,
        target=STRING,
        detail={
            "type": "object",
            "description": "What else the action changed (fleet, name, message id, ...).",
        },
    ),
    "AuditPage": page_of("entries", "AuditEntry"),
    "Erasure": record(
        device=STRING,
        state={"enum": ["erasing", "done"]},
        actor=STRING,
        started_ts=INTEGER,
        finished_ts={"type": ["integer", "null"]},
        deleted={
            "type": "object",
            "description": "Rows deleted, by kind (fixes, events, fence_states, messages, trips).",
        },
    ),
    "Readiness": record(
        ["ok", "degraded"],
        ok={"type": "boolean"},
        error=STRING,
        problems={"type": "array", "items": STRING},
        degraded={"type": "array", "items": STRING},
    ),
    "DeviceRevoked": record(id=STRING, revoked={"const": True}),
    "ViewerRevoked": record(name=STRING, revoked={"const": True}),
    "NewMessage": record(
        body={"description": "Any JSON value, at most TRACKER_MESSAGE_BODY_MAX_BYTES (16 KiB) encoded."}
    ),
    "DeviceList": list_of(
        "devices",
        record(
            ["id", "fleet", "online", "last"],
            id=STRING,
            fleet=STRING,
            name={"type": ["string", "null"]},
            online={"type": "boolean"},
            last={"oneOf": [_POSITION, {"type": "null"}]},
        ),
    ),
    "PositionPage": features(
        ["ts", "speed", "heading", "accuracy", "cell", "flag"], next_cursor=CURSOR_OR_NULL
    ),
    "GeofenceEvent": record(
        ["id", "type", "rule", "fence", "device", "fleet", "ts", "lat", "lon"],
        id=STRING,
        type={"enum": list(EVENT_TYPES)},
        rule=STRING,
        fence={
            "type": ["string", "null"],
            "description": "The fence; null for near and far, which are about two devices.",
        },
        device=STRING,
        fleet=STRING,
        ts=INTEGER,
        lat=NUMBER,
        lon=NUMBER,
        other={"type": "string", "description": "near and far only: the other device of the pair."},
    ),
    "EventPage": page_of("events", "GeofenceEvent"),
    "DryRunRequest": record(
        ["yaml"],
        yaml={"type": "string", "description": "A geofences file (YAML), at most 1 MiB."},
        devices={"type": "array", "items": ref("Id"), "minItems": 1, "maxItems": 5000},
        **{
            "from": {"description": "ms or ISO 8601; default 24 hours before `to`."},
            "to": {"description": "ms or ISO 8601; default now. At most 31 days after `from`."},
        },
    ),
    "DryRunResult": record(
        events={"type": "array", "items": {"type": "object", "description": "A GeofenceEvent without id."}},
        errors={"type": "array", "items": STRING, "description": "`file:line: reason`, or why it stopped."},
    ),
    "Message": record(
        id=STRING,
        device=STRING,
        direction={"type": "string", "enum": ["to_device", "from_device"]},
        body={"description": "Any JSON value, as sent."},
        **{
            "from": {
                "type": "string",
                "description": "The sender: a viewer's name, or the device's id for its own message.",
            }
        },
        ts={"type": "integer", "description": "When it was sent (stored), ms."},
        state={
            "type": "string",
            "enum": ["queued", "sent", "acked", "received"],
            "description": "How far a message to the device got; `received` for the device's own.",
        },
        attempts={"type": "integer", "description": "Hand-overs to the device so far."},
        sent_ts={"type": ["integer", "null"]},
        acked_ts={"type": ["integer", "null"]},
        client_id={
            "type": ["string", "null"],
            "description": "The id the device chose for its own message (`send`'s client_id).",
        },
    ),
    "MessagePage": page_of("messages", "Message"),
    "InsideList": list_of("devices", record(id=STRING, fleet=STRING, since_ts=INTEGER)),
    "Geofences": features(
        ["id", "name", "tags"],
        rules={
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id", "on", "fences", "fleets", "confirm_fixes", "notify"],
            },
        },
        filters={
            "type": "array",
            "items": {"type": "object", "required": ["fleets"]},
            "description": "The fix filters of the token's fleets (contract part 2, Fix quality).",
        },
        errors={"type": "array", "items": STRING},
    ),
    # A line's positions [lon, lat], at least two (a lone fix is repeated).
    "LineCoordinates": {
        "type": "array",
        "minItems": 2,
        "items": {"type": "array", "items": NUMBER, "minItems": 2, "maxItems": 2},
    },
    "StopList": list_of(
        "stops",
        record(start_ts=INTEGER, end_ts=INTEGER, duration_s=NUMBER, lat=NUMBER, lon=NUMBER, fixes=INTEGER),
    ),
    "TripList": list_of(
        "trips",
        record(
            start_ts=INTEGER,
            end_ts=INTEGER,
            duration_s=NUMBER,
            distance_m=NUMBER,
            start=_LAT_LON,
            end=_LAT_LON,
            max_speed=NUMBER_OR_NULL,
            avg_speed=NUMBER_OR_NULL,
            fixes=INTEGER,
        ),
    ),
    "AreaVisitList": list_of(
        "devices",
        record(
            id=STRING,
            fleet=STRING,
            first_ts={"type": "integer", "description": "ms of the device's first fix in the area"},
            last_ts={"type": "integer", "description": "ms of its last fix in the area"},
            fixes={"type": "integer", "description": "its fixes in the area and window"},
        ),
    ),
    "NearbyList": list_of(
        "devices", record(id=STRING, fleet=STRING, lat=NUMBER, lon=NUMBER, ts=INTEGER, distance_m=NUMBER)
    ),
    "DailyReport": record(
        ["days"],
        days={"type": "array", "items": ref("DeviceDay")},
        fleets={"type": "array", "items": ref("FleetDay"), "description": "Per fleet: the sums of its rows."},
    ),
    "DeviceDay": record(
        device=STRING,
        fleet=STRING,
        date={"type": "string", "format": "date"},
        distance_m={"type": "number", "description": "Sum of the day's trips' distance_m (as /trips)."},
        moving_s={"type": "number", "description": "Sum of the trips' duration_s."},
        stopped_s={"type": "number", "description": "Sum of the stops' duration_s (as /stops)."},
        stops=INTEGER,
        max_speed={"type": ["number", "null"], "description": "Highest of the trips' max_speed (m/s)."},
        first_ts={"type": ["integer", "null"], "description": "ms of the day's first fix; null: none."},
        last_ts={"type": ["integer", "null"], "description": "ms of the day's last fix."},
        events={"type": "object", "additionalProperties": INTEGER, "description": "Geofence events by type."},
        messages=record(to_device=INTEGER, from_device=INTEGER),
    ),
    "FleetDay": record(
        fleet=STRING,
        date={"type": "string", "format": "date"},
        devices={"type": "integer", "description": "Rows of the fleet in days."},
        active={"type": "integer", "description": "Those with a fix that day."},
        distance_m=NUMBER,
        moving_s=NUMBER,
        stopped_s=NUMBER,
        stops=INTEGER,
        max_speed=NUMBER_OR_NULL,
        first_ts={"type": ["integer", "null"]},
        last_ts={"type": ["integer", "null"]},
        events={"type": "object", "additionalProperties": INTEGER},
        messages=record(to_device=INTEGER, from_device=INTEGER),
    ),
    **INGEST_SCHEMAS,
    **TRIP_SCHEMAS,
}

COMPONENTS: dict[str, Any] = {
    "securitySchemes": {
        "bearer": {"type": "http", "scheme": "bearer"},
        "basic": {"type": "http", "scheme": "basic"},
    },
    "schemas": _SCHEMAS,
    "parameters": {
        "DeviceId": {"name": "id", "in": "path", "required": True, "schema": ref("Id")},
        "From": _time_param("from", "24 hours before `to`"),
        "To": _time_param("to", "now"),
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
        "PageLimit": {
            "name": "limit",
            "in": "query",
            "schema": {"type": "integer", "minimum": 1, "maximum": 10000, "default": 1000},
        },
        "Cursor": {
            "name": "cursor",
            "in": "query",
            "description": "next_cursor of the previous page",
            "schema": STRING,
        },
    },
    "responses": {
        "BadRequest": _error("A parameter is invalid; the error names it."),
        "Unauthorized": _error("No token, or an unknown one."),
        "Forbidden": _error("The token does not grant this fleet or device."),
        "NotFound": _error("No such resource."),
    },
}
