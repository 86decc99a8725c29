"""What a `send` carries: the payloads of the viewers' and the devices' `send` events, and a message body
as the JSON text that is stored, refused by name when it is not JSON or too large."""

from __future__ import annotations

from typing import Any

import orjson

from tracker.errors import InvalidInput
from tracker.parse import check_id


def parse_send(data: Any) -> tuple[str, Any]:
    """The device id and body of a `send` payload `{"device": id, "body": any JSON}`."""
    if not isinstance(data, dict):
        raise InvalidInput('send takes an object {"device": "<id>", "body": <any JSON>}')
    if "body" not in data:
        raise InvalidInput("body is required (any JSON value)")
    return check_id(data.get("device"), "device"), data["body"]


_CLIENT_ID_MAX = 128


def parse_device_send(data: Any) -> tuple[Any, str | None]:
    """The body and client_id of a device's `send` payload `{"body": any JSON, "client_id"?: "<id>"}`."""
    if not isinstance(data, dict):
        raise InvalidInput('send takes an object {"body": <any JSON>, "client_id"?: "<id>"}')
    if "body" not in data:
        raise InvalidInput("body is required (any JSON value)")
    client_id = data.get("client_id")
    if client_id is not None and (
        not isinstance(client_id, str)
        or not 0 < len(client_id) <= _CLIENT_ID_MAX
        or not client_id.isprintable()
    ):
        raise InvalidInput(f"client_id must be a printable string of 1 to {_CLIENT_ID_MAX} characters")
    return data["body"], client_id


def encode_body(body: Any, max_bytes: int) -> str:
    """The body as JSON text, refused when it is not JSON or larger than `max_bytes` encoded."""
    try:
        text = orjson.dumps(body)
    except TypeError as exc:
        raise InvalidInput(f"body must be a JSON value: {exc}") from None
    if len(text) > max_bytes:
        raise InvalidInput(f"body must be at most {max_bytes} bytes as JSON; got {len(text)}")
    return text.decode()
