"""Ingest for ready-made tracking apps: the OsmAnd protocol (Traccar Client, OsmAnd) at `/api/ingest/osmand`
and OwnTracks in HTTP mode at `/api/ingest/owntracks`.

Each adapter turns its app's wire format into the fix objects of the Socket.IO `fix` event, with our units
(knots and km/h to m/s, seconds to milliseconds), then takes the same path as that event: the device comes
from its token, `parse_batch` validates, `Ingestor.submit` returns after COMMIT (fences evaluated, viewers
served), so a 200 means stored. Policy for the answers:
- 400 (naming the app's field) only when no fix of the request could be stored; a batch with some bad
  fixes stores the good ones, answers 200 and logs the rest, since the apps resend a refused request as it
  is and one bad fix would otherwise block their queue for good.
- 401 for a missing or unknown token; 503 with Retry-After when the server cannot take the fixes now.
- A negative speed, heading or accuracy means "not known" (CoreLocation and Android mark missing values
  with -1) and is left out rather than refused.
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tracker.api import params
from tracker.api.responses import JSONResponse
from tracker.core import Core
from tracker.errors import Busy, InvalidFix, InvalidInput, Unauthorized
from tracker.model import Device, WriteResult
from tracker.validation import MAX_ATTRS_BYTES, MIN_TS, parse_batch, parse_time

log = logging.getLogger("tracker.ingest_http")

MAX_BODY = 4 * 1024 * 1024  # as for a Socket.IO message: 1000 fixes with their attrs fit
MAX_FORM_FIELDS = 200
KNOT_MS = 1852 / 3600  # one knot in m/s (0.514444...)
KMH_MS = 1 / 3.6
MS_FROM = 100_000_000_000  # a numeric time at least this large is milliseconds (1e11 s is the year 5138)
BASIC_CHALLENGE = 'Basic realm="tracker"'
_NUMBER = re.compile(r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$")
_INTEGER = re.compile(r"^[+-]?[0-9]+$")
_FORM = "application/x-www-form-urlencoded"

# OsmAnd fields that become fix fields (or are the token); every other field is kept in attrs.
_OSMAND_FIELDS = frozenset(
    {"id", "deviceid", "lat", "lon", "location", "timestamp", "speed", "bearing", "heading", "altitude"}
    | {"accuracy", "batt"}
)
# OwnTracks location fields that become fix fields; the rest (tid, t, conn, bs, m, SSID, ...) go to attrs.
_OWNTRACKS_FIELDS = frozenset({"_type", "lat", "lon", "tst", "vel", "cog", "acc", "alt", "batt"})
_OWNTRACKS_NAMES = {"ts": "tst", "heading": "cog", "accuracy": "acc", "altitude": "alt", "battery": "batt"}
_JSON_NAMES = {
    "lat": "location.coords.latitude",
    "lon": "location.coords.longitude",
    "ts": "location.timestamp",
    "heading": "location.coords.heading",
    "accuracy": "location.coords.accuracy",
    "altitude": "location.coords.altitude",
}


@dataclass(slots=True)
class _Request:
    """One app request made into fix objects: `items` holds, in the app's order, a fix object or the
    reason its entry could not become one."""

    token: str | None
    items: list[dict[str, Any] | str] = field(default_factory=list)
    names: Mapping[str, str] = field(default_factory=dict)  # our field name -> the app's, for errors
    label: str = "location"  # what an entry is called in errors about a batch
    indexes: list[int] = field(default_factory=list)  # the entries' positions in the body
    batch: bool = False  # the body held several entries: errors say which one


# --- shared by both apps ---------------------------------------------------------------------------


async def _read_body(request: Request) -> bytes | None:
    """The request body, or None when it is larger than MAX_BODY (coroutine)."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_BODY:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large() -> Response:
    return JSONResponse({"error": f"the request body is larger than {MAX_BODY} bytes"}, status_code=413)


def _busy(exc: Busy) -> Response:
    """The apps retry on a 5xx; Retry-After says when: the server's estimate, in whole seconds."""
    wait = max(1, math.ceil(exc.retry_after_s))
    return JSONResponse({"error": str(exc)}, status_code=503, headers={"Retry-After": str(wait)})


def _number(value: Any, name: str) -> float | None:
    """A number from JSON or form text (None when absent or empty), or InvalidFix naming `name`."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if not _NUMBER.match(text):
            raise InvalidFix(f"{name} must be a number; got {value!r:.40}")
        value = text
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidFix(f"{name} must be a number; got {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise InvalidFix(f"{name} must be a finite number; got {value!r:.40}")
    return number


def _known(value: float | None) -> float | None:
    """A speed, heading or accuracy, or None when the app marks it as not known (negative)."""
    return value if value is not None and value >= 0 else None


def _time_ms(value: Any, name: str) -> int:
    """A fix time in milliseconds from unix seconds (milliseconds from MS_FROM on, as Traccar reads
    them) or an ISO 8601 string with an offset."""
    if isinstance(value, str) and not _NUMBER.match(value.strip()):
        try:
            ms = parse_time(value, name)
        except InvalidInput as exc:
            text = value.strip()
            try:  # a time, without an offset or out of range: the message says which
                datetime.fromisoformat(text[:-1] if text.endswith(("Z", "z")) else text)
            except ValueError:
                raise InvalidFix(
                    f"{name} must be unix seconds or an ISO 8601 time with an offset such as "
                    f"2026-11-26T10:00:00Z; got {value!r:.40}"
                ) from None
            raise InvalidFix(str(exc)) from None
    else:
        number = _number(value, name)
        if number is None:
            raise InvalidFix(f"{name} must not be empty")
        ms = int(number) if abs(number) >= MS_FROM else round(number * 1000)
    if ms <= MIN_TS:
        raise InvalidFix(
            f"{name} must be later than 2000-01-01 (unix seconds or ISO 8601); got {value!r:.40}"
        )
    return ms


def _form_value(text: str) -> Any:
    """An unknown OsmAnd field as Traccar keeps it: a number when it parses, a boolean for true/false,
    else the text."""
    stripped = text.strip()
    if _INTEGER.match(stripped) and len(stripped) < 16:
        return int(stripped)
    if _NUMBER.match(stripped):
        number = float(stripped)
        return number if math.isfinite(number) else text
    if stripped.lower() in ("true", "false"):
        return stripped.lower() == "true"
    return text


def _bounded(attrs: Mapping[str, Any]) -> dict[str, Any] | None:
    """`attrs` without the entries that would take it past MAX_ATTRS_BYTES as JSON (in order, so the
    fields an app sends first are kept), or None when empty."""
    kept: dict[str, Any] = {}
    for key, value in attrs.items():
        kept[key] = value
        try:
            size = len(orjson.dumps(kept))
        except TypeError:  # integers beyond 64 bits
            size = MAX_ATTRS_BYTES + 1
        if size > MAX_ATTRS_BYTES:
            del kept[key]
            log.debug("attrs field %r dropped: attrs would exceed %d bytes", key, MAX_ATTRS_BYTES)
    return kept or None


def _rename(message: str, names: Mapping[str, str]) -> str:
    """A validation message about one of our fields, naming the app's field instead."""
    name, sep, rest = message.partition(" ")
    return names.get(name, name) + sep + rest


def _add(parsed: _Request, index: int, raw: Any, convert: Callable[[Any], dict[str, Any]]) -> None:
    """Append `convert(raw)` to `parsed`, or the reason it failed, as the body's entry `index`."""
    try:
        parsed.items.append(convert(raw))
    except InvalidFix as exc:
        parsed.items.append(str(exc))
    parsed.indexes.append(index)


async def _device(core: Core, token: str | None, field_name: str) -> Device:
    """The device of `token`; Unauthorized naming the field that carries it (coroutine)."""
    if not token:
        raise Unauthorized(f"{field_name} must be the device token; got none")
    try:
        return await core.auth.device(token)
    except Unauthorized:
        raise Unauthorized(f"{field_name} is not a known device token") from None


async def _ingest(core: Core, device: Device, parsed: _Request) -> WriteResult:
    """Validate and store the fixes of `parsed` for `device`; return what was stored (coroutine).

    Raises InvalidInput naming the first problem when nothing could be stored, Busy when the server
    cannot take the fixes now.
    """
    started = time.perf_counter()
    raws = [item for item in parsed.items if isinstance(item, dict)]
    positions = [i for i, item in enumerate(parsed.items) if isinstance(item, dict)]
    errors = [(i, item) for i, item in enumerate(parsed.items) if isinstance(item, str)]
    fixes, rejected = parse_batch(
        raws, device.id, device.fleet, int(time.time() * 1000), core.settings.retention_days
    )
    errors.extend((positions[r["index"]], _rename(r["error"], parsed.names)) for r in rejected)
    errors.sort()
    if errors:
        core.metrics.fixes_rejected.inc(len(errors))
        described = [
            f"{parsed.label}[{parsed.indexes[i]}]: {error}" if parsed.batch else error for i, error in errors
        ]
        log.info("device=%s rejected %d fixes, first: %s", device.id, len(errors), described[0])
        if not fixes:
            raise InvalidInput(described[0])
    if not fixes:
        return WriteResult(0, 0)
    if core.settings.redis_url:  # another process may have taken this device's last fixes
        await core.geofences.refresh(device.id)
    result = await core.ingestor.submit(fixes)
    core.metrics.ack_seconds.observe(time.perf_counter() - started)
    return result


# --- OsmAnd (Traccar Client) ----------------------------------------------------------------------


def _osmand_form(fields: Mapping[str, str], now_ms: int) -> dict[str, Any]:
    """One fix object from OsmAnd query or form fields (see Traccar's OsmAndProtocolDecoder)."""
    lat, lon = fields.get("lat"), fields.get("lon")
    if "location" in fields and lat is None and lon is None:
        parts = fields["location"].split(",")
        if len(parts) != 2:
            raise InvalidFix(f"location must be 'lat,lon'; got {fields['location']!r:.40}")
        lat, lon = parts
    speed = _known(_number(fields.get("speed"), "speed"))
    heading_field = "bearing" if "bearing" in fields else "heading"
    raw: dict[str, Any] = {
        "lat": _number(lat, "lat"),
        "lon": _number(lon, "lon"),
        "ts": _time_ms(fields["timestamp"], "timestamp") if "timestamp" in fields else now_ms,
        "speed": speed * KNOT_MS if speed is not None else None,
        "heading": _known(_number(fields.get(heading_field), heading_field)),
        "altitude": _number(fields.get("altitude"), "altitude"),
        "accuracy": _known(_number(fields.get("accuracy"), "accuracy")),
        "battery": _number(fields.get("batt"), "batt"),
    }
    raw["attrs"] = _bounded({k: _form_value(v) for k, v in fields.items() if k not in _OSMAND_FIELDS})
    return raw


def _osmand_location(location: Any) -> dict[str, Any]:
    """One fix object from a Traccar Client 9+ JSON location, the transistorsoft background-geolocation
    shape: ISO `timestamp`, `coords` with speed in m/s (not knots) and -1 for unknown values, battery
    level 0..1 (sources: Traccar OsmAndProtocolDecoder.decodeJson, traccar.org/osmand, Traccar Client
    preferences.dart locationTemplate)."""
    if not isinstance(location, dict):
        raise InvalidFix(f"location must be a JSON object; got {type(location).__name__}")
    coords = location.get("coords")
    if not isinstance(coords, dict):
        raise InvalidFix("location.coords is required: an object with latitude and longitude")
    if location.get("timestamp") is None:
        raise InvalidFix("location.timestamp is required")
    raw: dict[str, Any] = {
        "lat": _number(coords.get("latitude"), "location.coords.latitude"),
        "lon": _number(coords.get("longitude"), "location.coords.longitude"),
        "ts": _time_ms(location["timestamp"], "location.timestamp"),
        "speed": _known(_number(coords.get("speed"), "location.coords.speed")),
        "heading": _known(_number(coords.get("heading"), "location.coords.heading")),
        "accuracy": _known(_number(coords.get("accuracy"), "location.coords.accuracy")),
        "altitude": _number(coords.get("altitude"), "location.coords.altitude"),
    }
    attrs: dict[str, Any] = {}
    battery = location.get("battery")
    if isinstance(battery, dict):
        level = _number(battery.get("level"), "location.battery.level")
        if level is not None and level >= 0:
            if level > 1:
                raise InvalidFix(f"location.battery.level must be between 0 and 1; got {level:g}")
            raw["battery"] = level * 100
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
    raw["attrs"] = _bounded(attrs)
    return raw


def _osmand_json(body: bytes, query: Mapping[str, str]) -> _Request:
    """A Traccar Client JSON body: `{"location": {...} or [...], "device_id": ...}`, an array of those,
    or locations with the device id beside `coords` (transistorsoft's httpRootProperty ".")."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"the request body is not valid JSON: {exc}") from None
    roots = document if isinstance(document, list) else [document]
    parsed = _Request(token=query.get("id") or query.get("deviceid"), names=_JSON_NAMES)
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
            parsed.items.append("location is required: an object with timestamp and coords")
            parsed.indexes.append(len(parsed.indexes))
        for one in location if isinstance(location, list) else [location] if location is not None else []:
            _add(parsed, len(parsed.indexes), one, _osmand_location)
    if not parsed.items:
        raise InvalidInput("the JSON body holds no location")
    parsed.token = token or parsed.token
    parsed.batch = len(parsed.items) > 1
    return parsed


def _is_json(content_type: str, body: bytes) -> bool:
    if content_type == "application/json" or content_type.endswith("+json"):
        return True
    return not content_type and body.lstrip()[:1] in (b"{", b"[")


async def _osmand(request: Request, body: bytes) -> Response:
    """Parse (syntax only), authenticate, then validate and store; 200 with an empty body as Traccar."""
    core = params.core(request)
    query = dict(request.query_params.multi_items())
    content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if body.strip() and _is_json(content_type, body):
        parsed = _osmand_json(body, query)
        device = await _device(core, parsed.token, "device_id")
    else:
        fields = dict(query)
        if body.strip():
            if content_type not in ("", _FORM, "text/plain"):
                raise InvalidInput(
                    f"send the fields in the query string, as {_FORM} or as Traccar Client JSON; "
                    f"got a {content_type} body"
                )
            try:
                text = body.decode()
                fields.update(parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS))
            except UnicodeDecodeError:
                raise InvalidInput("the form body must be UTF-8") from None
            except ValueError:
                raise InvalidInput(f"the form has more than {MAX_FORM_FIELDS} fields") from None
        device = await _device(core, fields.get("id") or fields.get("deviceid"), "id")
        now_ms = int(time.time() * 1000)
        names = {
            "ts": "timestamp",
            "battery": "batt",
            "heading": "bearing" if "bearing" in fields else "heading",
        }
        parsed = _Request(token=None, names=names)
        _add(parsed, 0, fields, lambda f: _osmand_form(f, now_ms))
    try:
        await _ingest(core, device, parsed)
    except Busy as exc:
        return _busy(exc)
    return Response(status_code=200)


async def osmand_get(request: Request) -> Response:
    """
    Traccar Client (up to version 8) and OsmAnd send one fix per request in the query string.
    ---
    summary: Ingest a fix in the OsmAnd protocol (Traccar Client, OsmAnd), fields in the query string
    description: >
      The device token is the `id` field. Speed is in knots and stored as m/s; timestamp is unix seconds,
      milliseconds or ISO 8601 with an offset (default: the server time). Fields not listed are stored in
      the fix's attrs. Same validation, durability and fence evaluation as the Socket.IO `fix` event.
    parameters:
      - name: fields
        in: query
        style: form
        explode: true
        required: true
        schema: {$ref: '#/components/schemas/OsmAndFields'}
    responses:
      200: {description: 'Stored (or already stored: a retry is safe). Empty body, as Traccar answers.'}
      400: {$ref: '#/components/responses/BadRequest'}
      401: {$ref: '#/components/responses/Unauthorized'}
      503: {description: 'Cannot take the fix now; retry after Retry-After seconds.'}
    """
    return await _osmand(request, b"")


async def osmand_post(request: Request) -> Response:
    """
    Traccar Client POSTs the query string with an empty body (up to version 8) or a JSON body (9 and
    later); other clients POST a form.
    ---
    summary: Ingest fixes in the OsmAnd protocol (Traccar Client), as query, form or Traccar Client JSON
    description: >
      Fields as for GET, in the query string or an application/x-www-form-urlencoded body; or the JSON
      body of Traccar Client 9+ (`device_id` = the device token, `location` an object or an array, speed
      in m/s there, battery level 0..1). A batch with some bad locations stores the good ones and answers
      200; 400 only when nothing could be stored.
    parameters:
      - name: fields
        in: query
        style: form
        explode: true
        schema: {$ref: '#/components/schemas/OsmAndFields'}
    requestBody:
      content:
        application/x-www-form-urlencoded:
          schema: {$ref: '#/components/schemas/OsmAndFields'}
        application/json:
          schema:
            oneOf:
              - {$ref: '#/components/schemas/TraccarClientJson'}
              - {type: array, items: {$ref: '#/components/schemas/TraccarClientJson'}}
    responses:
      200: {description: 'Stored (or already stored: a retry is safe). Empty body, as Traccar answers.'}
      400: {$ref: '#/components/responses/BadRequest'}
      401: {$ref: '#/components/responses/Unauthorized'}
      413: {description: The body is larger than 4 MiB.}
      503: {description: 'Cannot take the fixes now; retry after Retry-After seconds.'}
    """
    body = await _read_body(request)
    if body is None:
        return _too_large()
    return await _osmand(request, body)


# --- OwnTracks (HTTP mode) ------------------------------------------------------------------------


def _owntracks_location(message: dict[str, Any]) -> dict[str, Any]:
    """One fix object from an OwnTracks `_type: location` message (owntracks.org/booklet/tech/json):
    `tst` unix seconds, `vel` km/h, `cog` degrees, `acc`/`alt` metres, `batt` percent."""
    if message.get("tst") is None:
        raise InvalidFix("tst is required")
    vel = _known(_number(message.get("vel"), "vel"))
    return {
        "lat": _number(message.get("lat"), "lat"),
        "lon": _number(message.get("lon"), "lon"),
        "ts": _time_ms(message["tst"], "tst"),
        "speed": vel * KMH_MS if vel is not None else None,
        "heading": _known(_number(message.get("cog"), "cog")),
        "accuracy": _known(_number(message.get("acc"), "acc")),
        "altitude": _number(message.get("alt"), "alt"),
        "battery": _number(message.get("batt"), "batt"),
        "attrs": _bounded({k: v for k, v in message.items() if k not in _OWNTRACKS_FIELDS}),
    }


def _basic_password(request: Request) -> str | None:
    """The password of the request's HTTP Basic credentials, or None without valid ones."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    _user, colon, password = decoded.partition(":")
    return password if colon and password else None


async def pending_for_owntracks(core: Core, device: Device) -> list[dict[str, Any]]:
    """The messages waiting for `device`, as OwnTracks objects for the HTTP answer (coroutine).

    The answer is the delivery (HTTP mode has no other way back), so they count as acked. A body that
    is already an OwnTracks object (has `_type`, e.g. `{"_type": "cmd", "action": "reportLocation"}`)
    goes as it is; any other body becomes a `msg` (title, desc) the app shows.
    """
    out: list[dict[str, Any]] = []
    for message in await core.messages.take(device):
        body = message.body
        if isinstance(body, dict) and isinstance(body.get("_type"), str):
            out.append(body)
            continue
        text = body if isinstance(body, str) else orjson.dumps(body).decode()
        out.append(
            {
                "_type": "msg",
                "title": f"Message from {message.sender}",
                "desc": text,
                "tst": message.ts // 1000,
            }
        )
    return out


async def owntracks(request: Request) -> Response:
    """
    OwnTracks POSTs every message it would publish over MQTT; only locations become fixes. The Basic
    auth user name is not checked (the app requires one; any will do): the token alone names the device.
    ---
    summary: Ingest OwnTracks messages (HTTP mode); answers the device's pending messages
    description: >
      HTTP Basic auth with the device token as the password (any user name). A `_type: location` message
      (or each of an array) becomes a fix: `tst` unix seconds, `vel` km/h (stored as m/s), `cog` heading,
      `acc`, `alt`, `batt`; other fields (tid, t, conn, bs, m, SSID, ...) are stored in attrs. Other
      types (transition, waypoint(s), lwt, card, status, steps, encrypted, ...) and empty bodies are
      answered 200 and ignored. The answer is a JSON array: [] or messages for the device as OwnTracks
      cmd/msg objects.
    security: [{basic: []}]
    requestBody:
      required: true
      content:
        application/json:
          schema:
            oneOf:
              - {$ref: '#/components/schemas/OwnTracksMessage'}
              - {type: array, items: {$ref: '#/components/schemas/OwnTracksMessage'}}
    responses:
      200:
        description: Stored (or already stored, or ignored); the device's pending messages.
        content:
          application/json:
            schema:
              type: array
              items: {type: object, required: [_type], properties: {_type: {type: string}}}
      400: {$ref: '#/components/responses/BadRequest'}
      401:
        description: 'No or unknown credentials; WWW-Authenticate: Basic realm="tracker".'
        content:
          application/json:
            schema: {$ref: '#/components/schemas/Error'}
      413: {description: The body is larger than 4 MiB.}
      503: {description: 'Cannot take the fixes now; retry after Retry-After seconds.'}
    """
    core = params.core(request)
    try:
        device = await _device(core, _basic_password(request), "the Basic auth password")
    except Unauthorized as exc:
        return JSONResponse(
            {"error": f"{exc} (OwnTracks: set the password to the device token)"},
            status_code=401,
            headers={"WWW-Authenticate": BASIC_CHALLENGE},
        )
    body = await _read_body(request)
    if body is None:
        return _too_large()
    if body.strip():  # OwnTracks POSTs an empty body when a friend is deleted: nothing to do
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(f"the request body is not valid JSON: {exc}") from None
        messages = document if isinstance(document, list) else [document]
        parsed = _Request(token=None, names=_OWNTRACKS_NAMES, label="message", batch=len(messages) > 1)
        for i, message in enumerate(messages):
            if not isinstance(message, dict):
                raise InvalidInput(
                    f"an OwnTracks message must be a JSON object; got {type(message).__name__}"
                )
            kind = message.get("_type")
            if not isinstance(kind, str):
                raise InvalidInput("_type is required: an OwnTracks message names its type")
            if kind != "location":
                log.debug("device=%s OwnTracks %s message ignored", device.id, kind)
                continue
            _add(parsed, i, message, _owntracks_location)
        if parsed.items:
            try:
                await _ingest(core, device, parsed)
            except Busy as exc:
                return _busy(exc)
    return JSONResponse(await pending_for_owntracks(core, device))


routes = [
    Route("/api/ingest/osmand", osmand_get, methods=["GET"]),
    Route("/api/ingest/osmand", osmand_post, methods=["POST"]),
    Route("/api/ingest/owntracks", owntracks, methods=["POST"]),
]
