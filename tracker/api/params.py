"""Query parameters and tokens of HTTP requests: each parser names the parameter it rejects."""

from __future__ import annotations

import base64
import binascii
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import orjson
from starlette.requests import Request

from tracker.auth import Origin
from tracker.core import Core
from tracker.errors import InvalidInput, Unauthorized
from tracker.model import Device, Viewer, Window
from tracker.parse import check_id, text_number, time_ms
from tracker.store.database import DAY_MS

T = TypeVar("T")


def core(request: Request) -> Core:
    """The running core of this app."""
    c: Core = request.app.state.core
    return c


def bearer(request: Request) -> str | None:
    """The Bearer token of the request, if it carries one."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def origin(request: Request) -> Origin:
    """Where the request came from, for refusals."""
    return Origin(
        "http", request.client.host if request.client else None, f"{request.method} {request.url.path}"
    )


async def viewer(request: Request) -> Viewer:
    """The viewer (or admin) whose token the request carries (coroutine)."""
    return await core(request).auth.viewer(bearer(request), origin(request))


async def require_admin(request: Request) -> None:
    """Unauthorized without a token; Forbidden with one that is not the admin token (coroutine)."""
    token = bearer(request)
    if token is None:
        raise Unauthorized("send the admin token as 'Authorization: Bearer <token>'", "missing")
    await core(request).auth.admin(token, origin(request))


async def viewer_and_device(request: Request) -> tuple[Viewer, Device]:
    """The viewer of the request's token and the device named in the path, if it may see it (coroutine)."""
    who = await viewer(request)
    return who, await visible_device(request, who)


async def visible_device(request: Request, who: Viewer, device_id: str | None = None) -> Device:
    """The device named in the path (or `device_id`), if `who` may see it (coroutine)."""
    device_id = device_id or check_id(request.path_params["id"], "device id")
    return await core(request).auth.visible_device(who, device_id)


async def json_object(request: Request) -> dict[str, Any]:
    """The request body as a JSON object (coroutine)."""
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise InvalidInput("the request body must be a JSON object") from None
    if not isinstance(body, dict):
        raise InvalidInput("the request body must be a JSON object")
    return body


def window(request: Request) -> tuple[int, int]:
    """`from`/`to` as milliseconds; the last 24 hours by default."""
    now = int(time.time() * 1000)
    to_ms = time_ms(request.query_params["to"], "to") if "to" in request.query_params else now
    if "from" in request.query_params:
        from_ms = time_ms(request.query_params["from"], "from")
    else:
        from_ms = to_ms - DAY_MS
    if from_ms > to_ms:
        raise InvalidInput("from must not be later than to")
    return from_ms, to_ms


def page_window(request: Request, default_limit: int = 1000, max_limit: int = 10_000) -> Window:
    """The page a request asks for: `from`/`to` (see `window`), `limit` and `cursor`."""
    from_ms, to_ms = window(request)
    limit = integer(request, "limit", default_limit, 1, max_limit)
    return Window(from_ms, to_ms, decode_cursor(request), limit)


def integer(request: Request, name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter within [low, high]."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(f"{name} must be an integer; got {raw!r:.40}") from None
    if not low <= value <= high:
        raise InvalidInput(f"{name} must be between {low} and {high}; got {value}")
    return value


def flag(request: Request, name: str) -> bool:
    """A true/false query parameter (false when absent)."""
    raw = request.query_params.get(name)
    if raw is None or raw == "" or raw.lower() == "false":
        return False
    if raw.lower() == "true":
        return True
    raise InvalidInput(f"{name} must be true or false; got {raw!r:.40}")


def number(
    request: Request, name: str, default: float | None, low: float, high: float, *, above_low: bool = False
) -> float:
    """A finite number query parameter within [low, high] ((low, high] with `above_low`); required when
    `default` is None."""
    raw = request.query_params.get(name)
    value = text_number(raw, name)
    if value is None:
        if default is None:
            raise InvalidInput(f"{name} is required")
        return default
    if value > high or value < low or (above_low and value == low):
        if above_low:
            bounds = f"greater than {low:.15g} and at most {high:.15g}"
        elif math.isinf(high):
            bounds = f"at least {low:.15g}"
        else:
            bounds = f"between {low:.15g} and {high:.15g}"
        raise InvalidInput(f"{name} must be {bounds}; got {raw!r:.40}")
    return value


def encode_cursor(ts: int) -> str:
    """An opaque cursor that resumes after the fix at `ts`."""
    return base64.urlsafe_b64encode(f"t{ts}".encode()).decode().rstrip("=")


def page(rows: Sequence[T], limit: int, position: Callable[[T], int]) -> tuple[Sequence[T], str | None]:
    """The page in `rows`, which were fetched as `limit + 1` (the extra one only says another page
    follows), and the cursor that resumes after it (None on the last page)."""
    if len(rows) > limit:
        return rows[:limit], encode_cursor(position(rows[limit - 1]))
    return rows, None


def decode_cursor(request: Request) -> int | None:
    """The position a `cursor` parameter resumes after, or None for the first page."""
    raw = request.query_params.get("cursor")
    if not raw:
        return None
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
        if not text.startswith("t"):
            raise ValueError(text)
        return int(text[1:])
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidInput("cursor is not valid: pass the next_cursor of a previous page") from None
