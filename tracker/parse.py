"""Untrusted scalars in, typed values out: the one parser of ids, numbers and times.

Policy: every problem names the field it concerns. Numbers must be finite, and booleans are not numbers.
A JSON value is taken as it is typed; text from a form, a query string or a track file may also be a
number written out (`text_number`), and an empty text counts as absent. Times are milliseconds since the
epoch, or an ISO 8601 string with an offset; where the source speaks seconds (the phone apps, track
files), a number below `SECONDS_BELOW` is seconds and one from it on milliseconds, as Traccar reads them.
Errors are `InvalidInput`, or the subclass a caller names (`InvalidFix` for a fix's fields).
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from tracker.errors import InvalidInput

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
MAX_TIME_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
SECONDS_BELOW = 100_000_000_000  # a numeric time below this is unix seconds (1e11 s is the year 5138)
NUMBER_TEXT = re.compile(r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$")
_INTEGER_TEXT = re.compile(r"^-?[0-9]{1,20}$")
Box = tuple[float, float, float, float]  # west, south, east, north in degrees; west > east crosses 180
_NOT_FINITE = frozenset({"nan", "inf", "infinity"})
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def check_id(value: Any, what: str) -> str:
    """Return `value` when it is a valid id (device, fleet, fence, rule), else raise InvalidInput."""
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):  # `$` alone lets "a\n" pass
        raise InvalidInput(
            f"{what} must be 1-64 characters of letters, digits and _.:- starting with a letter or "
            f"digit; got {value!r:.80}"
        )
    return value


def json_number(value: Any, name: str, error: type[InvalidInput] = InvalidInput) -> float:
    """A finite number from a JSON number (not a string, not a boolean)."""
    if type(value) is float and math.isfinite(value):  # the common case first: one check per field
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise error(f"{name} must be a number; got {type(value).__name__}")
    return _finite(value, name, error)


def text_number(value: Any, name: str, error: type[InvalidInput] = InvalidInput) -> float | None:
    """A finite number from a JSON number or a number written as text; None when absent or empty."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if not NUMBER_TEXT.match(text):
            if text.lower().lstrip("+-") in _NOT_FINITE:
                raise error(f"{name} must be a finite number; got {value!r:.40}")
            raise error(f"{name} must be a number; got {value!r:.40}")
        return _finite(text, name, error)
    return json_number(value, name, error)


def _finite(value: int | float | str, name: str, error: type[InvalidInput]) -> float:
    try:
        number = float(value)
    except OverflowError:  # an integer beyond any float
        number = math.inf
    if not math.isfinite(number):
        raise error(f"{name} must be a finite number; got {value!r:.40}")
    return number


def time_ms(value: Any, name: str, error: type[InvalidInput] = InvalidInput) -> int:
    """Milliseconds since the epoch from an integer (ms) or an ISO 8601 string with an offset, between
    1970 and 9999."""
    ms = _time_ms(value, name, error)
    if not 0 <= ms <= MAX_TIME_MS:
        raise error(f"{name} must be between 1970 and 9999; got {value!r:.60}")
    return ms


def seconds_or_ms(value: Any, name: str, error: type[InvalidInput] = InvalidInput) -> int:
    """Milliseconds since the epoch from unix seconds (milliseconds from SECONDS_BELOW on), written as
    a number or as text, or from an ISO 8601 string with an offset."""
    if isinstance(value, str) and not NUMBER_TEXT.match(value.strip()):
        if not value.strip():
            raise error(f"{name} must not be empty")
        ms = iso_ms(value, name, error, "unix seconds or an ISO 8601 time with an offset")
        if not 0 <= ms <= MAX_TIME_MS:
            raise error(f"{name} must be between 1970 and 9999; got {value!r:.60}")
        return ms
    number = text_number(value, name, error)
    if number is None:
        raise error(f"{name} must not be empty")
    return round(number) if abs(number) >= SECONDS_BELOW else round(number * 1000)


def iso_ms(
    value: str,
    name: str,
    error: type[InvalidInput],
    expected: str = "milliseconds since the epoch or an ISO 8601 time with an offset",
) -> int:
    """Milliseconds since the epoch from an ISO 8601 string with an offset; `expected` says what the
    field takes, for the message when `value` is no time at all."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise error(f"{name} must be {expected} such as 2026-11-26T10:00:00Z; got {value!r:.60}") from None
    if parsed.tzinfo is None:
        raise error(f"{name} needs a UTC offset (for example a trailing Z); got {value!r:.60}")
    try:
        return (parsed - _EPOCH) // timedelta(milliseconds=1)
    except OverflowError:
        raise error(f"{name} must be between 1970 and 9999; got {value!r:.60}") from None


def _time_ms(value: Any, name: str, error: type[InvalidInput]) -> int:
    if isinstance(value, str):
        text = value.strip()
        if _INTEGER_TEXT.match(text):
            return int(text)
        return iso_ms(value, name, error)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise error(f"{name} must be milliseconds since the epoch or an ISO 8601 string")
    if not math.isfinite(value):
        raise error(f"{name} must be a finite number; got {value}")
    return int(value)


_DURATION = re.compile(r"^([0-9]+(?:\.[0-9]+)?)\s*([smhdw]?)$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def duration_s(value: str, name: str) -> float:
    """Seconds from a duration such as `30d`, `12h`, `90m`, `45s` or `3600` (seconds)."""
    match = _DURATION.match(value.strip().lower())
    if match is None:
        raise InvalidInput(
            f"{name} must be a duration such as 30d, 12h, 90m or 3600 (seconds); got {value!r:.40}"
        )
    return float(match[1]) * _UNIT_S[match[2]]


def parse_bbox(value: Any, name: str = "bbox") -> Box:
    """[west, south, east, north] in degrees; west > east crosses the antimeridian."""
    if not isinstance(value, list | tuple) or len(value) != 4:
        raise InvalidInput(f"{name} must be [west, south, east, north]")
    nums: list[float] = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise InvalidInput(f"{name} must hold four finite numbers: [west, south, east, north]")
        nums.append(float(v))
    west, south, east, north = nums
    if not (-180 <= west <= 180 and -180 <= east <= 180):
        raise InvalidInput(f"{name} west and east must be between -180 and 180")
    if not (-90 <= south < north <= 90):
        raise InvalidInput(f"{name} needs -90 <= south < north <= 90")
    if west == east:
        raise InvalidInput(f"{name} west and east must differ")
    return west, south, east, north
