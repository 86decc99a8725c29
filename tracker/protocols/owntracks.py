"""OwnTracks in HTTP mode (owntracks.org/booklet/tech/http): the app POSTs every message it would publish
over MQTT, one JSON object or an array, with HTTP Basic credentials.

Only `_type: location` messages become fixes: `tst` unix seconds, `vel` km/h, `cog` degrees, `acc`/`alt`
metres, `batt` percent; their other fields (tid, t, conn, bs, m, SSID, ...) go to attrs. Every other
type (transition, waypoint(s), lwt, card, status, steps, encrypted, ...) is skipped. The answer to the
app is a JSON array of OwnTracks objects: the way back to the device in HTTP mode; a dispatcher's text
goes as a `transition`, the one thing both apps show to the driver (see `answer`).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import orjson

from tracker.errors import InvalidFix, InvalidInput
from tracker.model import Message
from tracker.protocols.request import KMH_MS, AppRequest, OptionalFields, bounded, number, time_ms

TOKEN_FIELD = "the Basic auth password"
# Location fields that become fix fields; the rest go to attrs.
_FIELDS = frozenset({"_type", "lat", "lon", "tst", "vel", "cog", "acc", "alt", "batt"})
_NAMES = {"ts": "tst", "heading": "cog", "accuracy": "acc", "altitude": "alt", "battery": "batt"}
# The `_type`s the apps know in an HTTP answer (iOS's message.json lists them); a body of another type
# would show nothing, so it goes as text.
APP_TYPES = frozenset(
    {"beacon", "card", "cmd", "configuration", "location", "lwt", "request", "status", "steps", "transition"}
    | {"waypoint", "waypoints"}
)


def basic_password(authorization: str) -> str | None:
    """The password of HTTP Basic credentials (an Authorization header), or None without valid ones.
    The user name is not checked: the app requires one, and the token alone names the device."""
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except ValueError:  # not base64 (binascii.Error), not ASCII, or not UTF-8 once decoded
        return None
    _user, colon, password = decoded.partition(":")
    return password if colon and password else None


def decode(body: bytes, token: str | None) -> AppRequest:
    """The locations of one OwnTracks body; an empty body (sent when a friend is deleted) holds none.
    Raises InvalidInput when the body is not OwnTracks JSON at all."""
    request = AppRequest(token=token, token_field=TOKEN_FIELD, names=_NAMES, label="message")
    if not body.strip():
        return request
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"the request body is not valid JSON: {exc}") from None
    messages = document if isinstance(document, list) else [document]
    request.batch = len(messages) > 1
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise InvalidInput(f"an OwnTracks message must be a JSON object; got {type(message).__name__}")
        kind = message.get("_type")
        if not isinstance(kind, str):
            raise InvalidInput("_type is required: an OwnTracks message names its type")
        if kind == "location":
            request.add(i, message, decode_location)
    return request


def decode_location(message: dict[str, Any]) -> dict[str, Any]:
    """One fix object from an OwnTracks `_type: location` message."""
    if message.get("tst") is None:
        raise InvalidFix("tst is required")
    optional = OptionalFields()
    raw: dict[str, Any] = {
        "lat": number(message.get("lat"), "lat"),
        "lon": number(message.get("lon"), "lon"),
        "ts": time_ms(message["tst"], "tst"),
        "speed": optional.read(message.get("vel"), "vel", "speed", KMH_MS),
        "heading": optional.read(message.get("cog"), "cog", "heading"),
        "accuracy": optional.read(message.get("acc"), "acc", "accuracy"),
        "altitude": optional.read(message.get("alt"), "alt", "altitude"),
        "battery": optional.read(message.get("batt"), "batt", "battery"),
    }
    attrs = {k: v for k, v in message.items() if k not in _FIELDS and not _unknown(k, v)}
    raw["attrs"] = bounded(attrs | optional.dropped)
    return raw


def _unknown(key: str, value: Any) -> bool:
    """An attrs field the app sends for a value it does not have: a negative `vac` (CoreLocation's -1
    for no altitude) or `bs` 0 (battery state unknown, owntracks.org/booklet/tech/json)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return (key == "vac" and value < 0) or (key == "bs" and value == 0)


def answer(messages: Sequence[Message], where: tuple[float, float] | None) -> list[dict[str, Any]]:
    """Messages to the device as the OwnTracks objects of an HTTP answer.

    A body that already is an object the apps read (`_type` one of `APP_TYPES`, e.g. `{"_type": "cmd",
    "action": "reportLocation"}`) goes as it is. Any other body is text for the driver: neither app shows
    a `msg` (Android parses it as an unknown type and drops it; iOS's schema has no such type and no code
    handles it), but both notify a friend's `transition`: iOS as an alert, a notification and a History
    entry, "<tid> enters <desc> @ <time>" (OwnTracking.m processTransitionMessage), Android as an Events
    notification, "<time> <contact> enters <desc>" (BackgroundService.sendEventNotification). So the text
    goes as the `desc` of an `enter` transition from the sender, at `where` (the device's newest position,
    (lat, lon); Android draws the sender there), with the fields iOS's schema requires (message.json:
    acc, event, lat, lon, tst, wtst).
    """
    out: list[dict[str, Any]] = []
    for message in messages:
        body = message.body
        if isinstance(body, dict) and body.get("_type") in APP_TYPES:
            out.append(body)
            continue
        lat, lon = where if where is not None else (0.0, 0.0)
        tst = message.ts // 1000
        out.append(
            {
                "_type": "transition",
                "event": "enter",
                "desc": _text(body),
                "tid": message.sender,
                "tst": tst,
                "wtst": tst,
                "lat": lat,
                "lon": lon,
                "acc": 0,
            }
        )
    return out


def _text(body: Any) -> str:
    """The text of a dispatcher's message: the body when it is text (as the dispatcher map sends it),
    its `text` when it has one, else the body as JSON."""
    if isinstance(body, str):
        return body
    if isinstance(body, dict) and isinstance(body.get("text"), str):
        return str(body["text"])
    return orjson.dumps(body).decode()
