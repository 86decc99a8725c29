"""OwnTracks in HTTP mode (owntracks.org/booklet/tech/http): the app POSTs every message it would publish
over MQTT, one JSON object or an array, with HTTP Basic credentials.

Only `_type: location` messages become fixes: `tst` unix seconds, `vel` km/h, `cog` degrees, `acc`/`alt`
metres, `batt` percent; their other fields (tid, t, conn, bs, m, SSID, ...) go to attrs. Every other
type (transition, waypoint(s), lwt, card, status, steps, encrypted, ...) is skipped. The answer to the
app is a JSON array of OwnTracks objects: the way back to the device in HTTP mode.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import orjson

from tracker.errors import InvalidFix, InvalidInput
from tracker.model import Message
from tracker.protocols.request import KMH_MS, AppRequest, bounded, known, number, time_ms

TOKEN_FIELD = "the Basic auth password"
# Location fields that become fix fields; the rest go to attrs.
_FIELDS = frozenset({"_type", "lat", "lon", "tst", "vel", "cog", "acc", "alt", "batt"})
_NAMES = {"ts": "tst", "heading": "cog", "accuracy": "acc", "altitude": "alt", "battery": "batt"}


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
    vel = known(number(message.get("vel"), "vel"))
    return {
        "lat": number(message.get("lat"), "lat"),
        "lon": number(message.get("lon"), "lon"),
        "ts": time_ms(message["tst"], "tst"),
        "speed": vel * KMH_MS if vel is not None else None,
        "heading": known(number(message.get("cog"), "cog")),
        "accuracy": known(number(message.get("acc"), "acc")),
        "altitude": number(message.get("alt"), "alt"),
        "battery": number(message.get("batt"), "batt"),
        "attrs": bounded({k: v for k, v in message.items() if k not in _FIELDS}),
    }


def answer(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """Messages to the device as the OwnTracks objects of an HTTP answer: a body that already is one
    (has `_type`, e.g. `{"_type": "cmd", "action": "reportLocation"}`) goes as it is; any other body
    becomes a `msg` (title, desc) the app shows."""
    out: list[dict[str, Any]] = []
    for message in messages:
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
