"""The OsmAnd protocol, as Traccar Client and OsmAnd send it: query or form fields, or Traccar Client 9's
JSON body.

Fields (Traccar's OsmAndProtocolDecoder): `id` or `deviceid` (here: the device token), `lat`/`lon` or
`location=lat,lon`, `timestamp` (unix seconds, milliseconds, or ISO 8601 with an offset; default: now),
`speed` in knots, `bearing` or `heading`, `altitude`, `accuracy`, `batt`; every other field goes to
attrs, typed as Traccar types it. The JSON body is transistorsoft's background-geolocation location
(speed in m/s there, -1 for unknown, battery level 0..1).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

import orjson

from tracker.errors import InvalidFix, InvalidInput
from tracker.protocols.request import (
    KNOT_MS,
    AppRequest,
    OptionalFields,
    bounded,
    form_value,
    number,
    time_ms,
)

MAX_FORM_FIELDS = 200
FORM = "application/x-www-form-urlencoded"

# Fields that become fix fields (or are the token); every other field is kept in attrs.
_FIELDS = frozenset(
    {"id", "deviceid", "lat", "lon", "location", "timestamp", "speed", "bearing", "heading", "altitude"}
    | {"accuracy", "batt", "notificationToken"}
)
MAX_PUSH_TOKEN = 4096  # Firebase tokens are about 160 characters
_JSON_NAMES = {
    "lat": "location.coords.latitude",
    "lon": "location.coords.longitude",
    "ts": "location.timestamp",
    "heading": "location.coords.heading",
    "accuracy": "location.coords.accuracy",
    "altitude": "location.coords.altitude",
}


def decode(body: bytes, content_type: str, query: Mapping[str, str], now_ms: int) -> AppRequest:
    """One OsmAnd request: a JSON body, else the query string and a form body (fields in the body win).

    `content_type` is the media type alone, lower case. Raises InvalidInput when the request as a whole
    cannot be read; a bad entry is kept as its reason in the result.
    """
    if body.strip() and _is_json(content_type, body):
        return decode_json(body, query)
    fields = dict(query)
    if body.strip():
        if content_type not in ("", FORM, "text/plain"):
            raise InvalidInput(
                f"send the fields in the query string, as {FORM} or as Traccar Client JSON; "
                f"got a {content_type} body"
            )
        try:
            fields.update(parse_qsl(body.decode(), keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS))
        except UnicodeDecodeError:
            raise InvalidInput("the form body must be UTF-8") from None
        except ValueError:
            raise InvalidInput(f"the form has more than {MAX_FORM_FIELDS} fields") from None
    names = {"ts": "timestamp", "battery": "batt", "heading": "bearing" if "bearing" in fields else "heading"}
    request = AppRequest(token=fields.get("id") or fields.get("deviceid"), names=names)
    positioned = any(name in fields for name in ("lat", "lon", "location"))
    if "notificationToken" in fields:
        request.push_token = push_token(fields["notificationToken"], required=not positioned)
        if not positioned:  # Traccar Client registering for push (lib/push_service.dart): no fix
            return request
    request.add(0, fields, lambda f: decode_fields(f, now_ms))
    return request


def push_token(text: str, required: bool) -> str | None:
    """The push token of a `notificationToken` field; InvalidInput when it is unfit and the request is
    about nothing else (`required`), else None, so that the position beside it is still stored."""
    token = text.strip()
    if token and len(token) <= MAX_PUSH_TOKEN and token.isprintable():
        return token
    if required:
        raise InvalidInput(
            f"notificationToken must be the app's push token: 1-{MAX_PUSH_TOKEN} printable characters"
        )
    return None


def decode_fields(fields: Mapping[str, str], now_ms: int) -> dict[str, Any]:
    """One fix object from OsmAnd query or form fields."""
    lat, lon = fields.get("lat"), fields.get("lon")
    if "location" in fields and lat is None and lon is None:
        parts = fields["location"].split(",")
        if len(parts) != 2:
            raise InvalidFix(f"location must be 'lat,lon'; got {fields['location']!r:.40}")
        lat, lon = parts
    heading_field = "bearing" if "bearing" in fields else "heading"
    optional = OptionalFields()
    raw: dict[str, Any] = {
        "lat": number(lat, "lat"),
        "lon": number(lon, "lon"),
        "ts": time_ms(fields["timestamp"], "timestamp") if "timestamp" in fields else now_ms,
        "speed": optional.read(fields.get("speed"), "speed", "speed", KNOT_MS),
        "heading": optional.read(fields.get(heading_field), heading_field, "heading"),
        "altitude": optional.read(fields.get("altitude"), "altitude", "altitude"),
        "accuracy": optional.read(fields.get("accuracy"), "accuracy", "accuracy"),
        "battery": optional.read(fields.get("batt"), "batt", "battery"),
    }
    attrs = {k: form_value(v) for k, v in fields.items() if k not in _FIELDS}
    raw["attrs"] = bounded(attrs | optional.dropped)
    return raw


def decode_location(location: Any) -> dict[str, Any]:
    """One fix object from a Traccar Client 9+ JSON location: ISO `timestamp`, `coords` with speed in
    m/s (not knots) and -1 for unknown values, battery level 0..1 (sources: Traccar
    OsmAndProtocolDecoder.decodeJson, traccar.org/osmand, Traccar Client preferences.dart)."""
    if not isinstance(location, dict):
        raise InvalidFix(f"location must be a JSON object; got {type(location).__name__}")
    coords = location.get("coords")
    if not isinstance(coords, dict):
        raise InvalidFix("location.coords is required: an object with latitude and longitude")
    if location.get("timestamp") is None:
        raise InvalidFix("location.timestamp is required")
    optional = OptionalFields()
    raw: dict[str, Any] = {
        "lat": number(coords.get("latitude"), "location.coords.latitude"),
        "lon": number(coords.get("longitude"), "location.coords.longitude"),
        "ts": time_ms(location["timestamp"], "location.timestamp"),
        "speed": optional.read(coords.get("speed"), "coords.speed", "speed"),
        "heading": optional.read(coords.get("heading"), "coords.heading", "heading"),
        "accuracy": optional.read(coords.get("accuracy"), "coords.accuracy", "accuracy"),
        "altitude": optional.read(coords.get("altitude"), "coords.altitude", "altitude"),
    }
    attrs: dict[str, Any] = {}
    battery = location.get("battery")
    if isinstance(battery, dict):
        raw["battery"] = optional.read(battery.get("level"), "battery.level", "battery", 100)
        if isinstance(battery.get("is_charging"), bool):
            attrs["charge"] = battery["is_charging"]
    for key, name in (("is_moving", "motion"), ("odometer", "odometer"), ("mock", "mock")):
        if isinstance(location.get(key), bool | int | float):
            attrs[name] = location[key]
    for key in ("event", "alarm", "uuid"):
        if isinstance(location.get(key), str) and location[key]:
            attrs[key] = location[key]
    activity = location.get("activity")
    if isinstance(activity, dict) and isinstance(activity.get("type"), str) and activity["type"]:
        attrs["activity"] = activity["type"]
    extras = location.get("extras")
    if isinstance(extras, dict):
        attrs.update((k, v) for k, v in extras.items() if k not in attrs)
    raw["attrs"] = bounded(attrs | optional.dropped)
    return raw


def decode_json(body: bytes, query: Mapping[str, str]) -> AppRequest:
    """A Traccar Client JSON body: `{"location": {...} or [...], "device_id": ...}`, an array of those,
    or locations with the device id beside `coords` (transistorsoft's httpRootProperty ".")."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"the request body is not valid JSON: {exc}") from None
    roots = document if isinstance(document, list) else [document]
    request = AppRequest(
        token=query.get("id") or query.get("deviceid"), token_field="device_id", names=_JSON_NAMES
    )
    token: str | None = None
    for i, root in enumerate(roots):
        if not isinstance(root, dict):
            raise InvalidInput(
                f"the JSON body must be an object with location and device_id, or an array of them; "
                f"entry {i} is {type(root).__name__}"
            )
        device_id = root.get("device_id", root.get("id"))
        if device_id is not None:
            if not isinstance(device_id, str | int) or isinstance(device_id, bool):
                raise InvalidInput(f"device_id must be the device token; got {type(device_id).__name__}")
            if token is not None and str(device_id) != token:
                raise InvalidInput("device_id must be the same for every location of a request")
            token = str(device_id)
        location = root.get("location", root if "coords" in root else None)
        if location is None:
            request.items.append("location is required: an object with timestamp and coords")
            request.indexes.append(len(request.indexes))
        for one in location if isinstance(location, list) else [location] if location is not None else []:
            request.add(len(request.indexes), one, decode_location)
    if not request.items:
        raise InvalidInput("the JSON body holds no location")
    request.token = token or request.token
    request.batch = len(request.items) > 1
    return request


def _is_json(content_type: str, body: bytes) -> bool:
    if content_type == "application/json" or content_type.endswith("+json"):
        return True
    return not content_type and body.lstrip()[:1] in (b"{", b"[")
