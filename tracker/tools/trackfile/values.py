"""One value of a point, from text or JSON: numbers, times, and the names a column or a property may
carry for each value. Errors name the place (`where`) and the field.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

from tracker.errors import InvalidInput
from tracker.parse import NUMBER_TEXT, SECONDS_BELOW, time_ms
from tracker.tools.trackfile.track import TrackFileError

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Names a CSV column or a JSON property may carry for each value (lower case).
TIME_NAMES = ("ts", "time", "timestamp", "tracked_at")
LAT_NAMES = ("lat", "latitude")
LON_NAMES = ("lon", "lng", "long", "longitude")
ALIASES: dict[str, tuple[str, ...]] = {
    "speed": ("speed",),
    "heading": ("heading", "course", "bearing"),
    "accuracy": ("accuracy",),
    "altitude": ("altitude", "ele", "elevation", "alt"),
    "battery": ("battery", "batt"),
}


def number(where: str, name: str, value: Any) -> float:
    """A finite number from a JSON number or a numeric string."""
    if isinstance(value, str) and NUMBER_TEXT.match(value.strip()):
        return float(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TrackFileError(f"{where}: {name} must be a number; got {value!r:.40}")
    f = float(value)
    if not math.isfinite(f):
        raise TrackFileError(f"{where}: {name} must be a finite number; got {value!r:.40}")
    return f


def optional_number(where: str, name: str, value: Any) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return number(where, name, value)


def time_of(where: str, name: str, value: Any) -> int:
    """Milliseconds from a number (ms, or s below 1e11) or an ISO 8601 string with an offset."""
    if isinstance(value, str) and not NUMBER_TEXT.match(value.strip()):
        if not value.strip():
            raise TrackFileError(f"{where}: {name} is empty")
        try:
            return time_ms(value, name)
        except InvalidInput as exc:
            raise TrackFileError(f"{where}: {exc}") from None
    if value is None:
        raise TrackFileError(f"{where}: {name} is missing")
    found = number(where, name, value)
    if abs(found) < SECONDS_BELOW:
        return round(found * 1000)
    return int(value) if isinstance(value, int) else round(found)


def datetime_ms(value: datetime) -> int:
    """ms since the epoch; a naive datetime is UTC (GPX and PLT times are)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - _EPOCH) // timedelta(milliseconds=1)
