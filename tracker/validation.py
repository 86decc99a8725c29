"""Untrusted payloads in, typed values out: fixes, times, ids.

Policy: every problem is reported with the field it concerns, and one bad fix never spoils the batch it
came in. Unknown fields are ignored, `null` counts as absent for optional fields, numbers must be finite
(booleans are not numbers). Times arrive as integer milliseconds or ISO 8601 strings with an offset.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from tracker.errors import InvalidFix, InvalidInput
from tracker.model import Fix

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
MAX_BATCH = 1000
MAX_ATTRS_BYTES = 2048
MIN_TS = 946_684_800_000  # 2000-01-01T00:00:00Z
_DAY_MS = 86_400_000
MAX_AHEAD_MS = 5 * 60 * 1000
MAX_TIME_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_INTEGER = re.compile(r"^-?[0-9]{1,20}$")

# Optional numeric fields and their inclusive bounds.
_OPTIONAL: tuple[tuple[str, float, float], ...] = (
    ("speed", 0.0, math.inf),
    ("heading", 0.0, 360.0),
    ("accuracy", 0.0, math.inf),
    ("altitude", -math.inf, math.inf),
    ("battery", 0.0, 100.0),
)


def check_id(value: Any, what: str) -> str:
    """Return `value` when it is a valid id (device, fleet, fence, rule), else raise InvalidInput."""
    if not isinstance(value, str) or not ID_PATTERN.match(value):
        raise InvalidInput(
            f"{what} must be 1-64 characters of letters, digits and _.:- starting with a letter or "
            f"digit; got {value!r:.80}"
        )
    return value


def _number(value: Any, name: str) -> float:
    if type(value) is float and math.isfinite(value):  # the common case first: one check per field
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidFix(f"{name} must be a number; got {type(value).__name__}")
    try:
        f = float(value)
    except OverflowError:  # an integer beyond any float
        f = math.inf
    if not math.isfinite(f):
        raise InvalidFix(f"{name} must be a finite number; got {value}")
    return f


def parse_time(value: Any, name: str) -> int:
    """Milliseconds since the epoch from an integer (ms) or an ISO 8601 string with an offset,
    between 1970 and 9999."""
    ms = _time_ms(value, name)
    if not 0 <= ms <= MAX_TIME_MS:
        raise InvalidInput(f"{name} must be between 1970 and 9999; got {value!r:.60}")
    return ms


def _time_ms(value: Any, name: str) -> int:
    if isinstance(value, str):
        text = value.strip()
        if _INTEGER.match(text):
            return int(text)
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise InvalidInput(
                f"{name} must be milliseconds since the epoch or an ISO 8601 time with an offset "
                f"such as 2026-11-26T10:00:00Z; got {value!r:.60}"
            ) from None
        if parsed.tzinfo is None:
            raise InvalidInput(f"{name} needs a UTC offset (for example a trailing Z); got {value!r:.60}")
        try:
            return (parsed - _EPOCH) // timedelta(milliseconds=1)
        except OverflowError:
            raise InvalidInput(f"{name} must be between 1970 and 9999; got {value!r:.60}") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(f"{name} must be milliseconds since the epoch or an ISO 8601 string")
    if not math.isfinite(value):
        raise InvalidInput(f"{name} must be a finite number; got {value}")
    return int(value)


def parse_fix(raw: Any, device: str, fleet: str, now_ms: int, retention_days: int | None = None) -> Fix:
    """One fix object -> Fix, or InvalidFix naming the first field at fault.

    With `retention_days`, a fix older than that is refused: it would be dropped at the next retention
    run, and storing it would re-create a partition that retention just removed.
    """
    if not isinstance(raw, dict):
        raise InvalidFix(f"a fix must be a JSON object; got {type(raw).__name__}")
    for name in ("lat", "lon", "ts"):
        if raw.get(name) is None:
            raise InvalidFix(f"{name} is required")
    lat = _number(raw["lat"], "lat")
    if not -90.0 <= lat <= 90.0:
        raise InvalidFix(f"lat must be between -90 and 90; got {lat}")
    lon = _number(raw["lon"], "lon")
    if not -180.0 <= lon <= 180.0:
        raise InvalidFix(f"lon must be between -180 and 180; got {lon}")
    try:
        ts = parse_time(raw["ts"], "ts")
    except InvalidInput as exc:
        raise InvalidFix(str(exc)) from None
    if ts <= MIN_TS:
        hint = " (ts is in milliseconds; was it sent in seconds?)" if ts > 0 else ""
        raise InvalidFix(f"ts must be later than 2000-01-01; got {ts}{hint}")
    if ts > now_ms + MAX_AHEAD_MS:
        raise InvalidFix(
            f"ts is {(ts - now_ms) / 1000:.0f} s ahead of the server clock; at most 300 s is allowed"
        )
    if retention_days is not None and ts < now_ms - retention_days * _DAY_MS:
        raise InvalidFix(f"ts is older than this server keeps fixes ({retention_days} days); not stored")
    fix = Fix(device=device, fleet=fleet, ts=ts, lat=lat, lon=lon)
    for name, low, high in _OPTIONAL:
        value = raw.get(name)
        if value is None:
            continue
        f = _number(value, name)
        if not low <= f <= high:
            bounds = f">= {low:g}" if high == math.inf else f"between {low:g} and {high:g}"
            raise InvalidFix(f"{name} must be {bounds}; got {f:g}")
        setattr(fix, name, f)
    attrs = raw.get("attrs")
    if attrs is not None:
        if not isinstance(attrs, dict):
            raise InvalidFix(f"attrs must be a JSON object; got {type(attrs).__name__}")
        try:
            size = len(orjson.dumps(attrs))
        except TypeError as exc:  # integers beyond 64 bits, which JSON columns and clients can't keep
            raise InvalidFix(f"attrs is not storable JSON: {exc}") from None
        if size > MAX_ATTRS_BYTES:
            raise InvalidFix(f"attrs must be at most {MAX_ATTRS_BYTES} bytes as JSON; got {size}")
        fix.attrs = attrs
    return fix


def parse_batch(
    payload: Any, device: str, fleet: str, now_ms: int, retention_days: int | None = None
) -> tuple[list[Fix], list[dict[str, Any]]]:
    """A `fix` event payload -> (good fixes, rejections `{"index", "error"}` in payload order).

    A payload that is neither an object nor an array of at most MAX_BATCH raises InvalidInput: the whole
    event is refused, since no index could name the problem.
    """
    items: list[Any]
    if isinstance(payload, dict):
        items = [payload]
    elif isinstance(payload, list):
        if len(payload) > MAX_BATCH:
            raise InvalidInput(f"a fix batch holds at most {MAX_BATCH} fixes; got {len(payload)}")
        items = payload
    else:
        raise InvalidInput(
            f"fix must be a fix object or an array of fix objects; got {type(payload).__name__}"
        )
    fixes: list[Fix] = []
    rejected: list[dict[str, Any]] = []
    for i, raw in enumerate(items):
        try:
            fixes.append(parse_fix(raw, device, fleet, now_ms, retention_days))
        except InvalidFix as exc:
            rejected.append({"index": i, "error": str(exc)})
    return fixes, rejected
