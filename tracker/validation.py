"""The contract's fix object in, a `Fix` out: the one validation every fix source goes through.

Policy: every problem is reported with the field it concerns, and one bad fix never spoils the batch it
came in. Unknown fields are ignored, `null` counts as absent for optional fields, numbers must be finite
(booleans are not numbers; `tracker.parse`). Times arrive as integer milliseconds or ISO 8601 strings
with an offset. `attrs` must be JSON that PostgreSQL keeps: no integer beyond 64 bits, no NUL character.
"""

from __future__ import annotations

from typing import Any

import orjson

from tracker.errors import InvalidFix, InvalidInput
from tracker.model import Fix
from tracker.parse import json_number, time_ms

MAX_BATCH = 1000
MAX_ATTRS_BYTES = 2048
MIN_TS = 946_684_800_000  # 2000-01-01T00:00:00Z
_DAY_MS = 86_400_000
MAX_AHEAD_MS = 5 * 60 * 1000

# Optional numeric fields and their inclusive bounds; PostgreSQL keeps them as `real`, so none may be
# larger than a 32-bit float.
REAL_MAX = 3.4028234663852886e38
_OPTIONAL: tuple[tuple[str, float, float], ...] = (
    ("speed", 0.0, REAL_MAX),
    ("heading", 0.0, 360.0),
    ("accuracy", 0.0, REAL_MAX),
    ("altitude", -REAL_MAX, REAL_MAX),
    ("battery", 0.0, 100.0),
)
_BOUNDS = {name: (low, high) for name, low, high in _OPTIONAL}


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
    lat = json_number(raw["lat"], "lat", InvalidFix)
    if not -90.0 <= lat <= 90.0:
        raise InvalidFix(f"lat must be between -90 and 90; got {lat}")
    lon = json_number(raw["lon"], "lon", InvalidFix)
    if not -180.0 <= lon <= 180.0:
        raise InvalidFix(f"lon must be between -180 and 180; got {lon}")
    ts = time_ms(raw["ts"], "ts", InvalidFix)
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
    for name in _BOUNDS:
        value = raw.get(name)
        if value is None:
            continue
        f = json_number(value, name, InvalidFix)
        if problem := optional_problem(name, f):
            raise InvalidFix(problem)
        setattr(fix, name, f)
    attrs = raw.get("attrs")
    if attrs is not None:
        if not isinstance(attrs, dict):
            raise InvalidFix(f"attrs must be a JSON object; got {type(attrs).__name__}")
        try:
            encoded = orjson.dumps(attrs)
        except TypeError as exc:  # integers beyond 64 bits, which JSON columns and clients can't keep
            raise InvalidFix(f"attrs is not storable JSON: {exc}") from None
        size = len(encoded)
        if size > MAX_ATTRS_BYTES:
            raise InvalidFix(f"attrs must be at most {MAX_ATTRS_BYTES} bytes as JSON; got {size}")
        if b"\\u0000" in encoded and (where := nul_at(attrs, "attrs")):
            shown = where.replace("\x00", "\\u0000")
            raise InvalidFix(f"{shown:.80} holds a NUL character (\\u0000), which cannot be stored")
        fix.attrs = attrs
    return fix


def optional_problem(name: str, value: float) -> str | None:
    """Why the optional numeric field `name` (speed, heading, accuracy, altitude, battery) cannot hold
    `value`, or None when it can: the app decoders ask before they build a fix, to leave such a value out
    rather than refuse the fix."""
    low, high = _BOUNDS[name]
    if abs(value) > REAL_MAX:
        return f"{name} must be within ±{REAL_MAX:g}, kept as a 32-bit float; got {value:g}"
    if not low <= value <= high:
        bounds = f">= {low:g}" if high == REAL_MAX else f"between {low:g} and {high:g}"
        return f"{name} must be {bounds}; got {value:g}"
    return None


def nul_at(value: Any, path: str) -> str | None:
    """Where below `path` (`attrs.a[2]`) the first key or string of JSON `value` holds a NUL character,
    which PostgreSQL keeps in neither text nor jsonb; None when none does."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        children = [(f"{path}.{key}", item) for key, item in value.items()]
    elif isinstance(value, list):
        children = [(f"{path}[{i}]", item) for i, item in enumerate(value)]
    else:
        return None
    for where, item in children:
        found = where if "\x00" in where else nul_at(item, where)
        if found:
            return found
    return None


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
