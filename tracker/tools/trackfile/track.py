"""A track file's points in time order (`TrackFile`), and `Points`, which collects them as a reader finds
them, checks each against the device protocol's bounds, then sorts them and drops repeated timestamps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import numpy.typing as npt

from tracker.errors import InvalidInput

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Optional per-point values and the device protocol's bounds for them.
OPTIONAL: dict[str, tuple[float, float]] = {
    "speed": (0.0, math.inf),
    "heading": (0.0, 360.0),
    "accuracy": (0.0, math.inf),
    "altitude": (-math.inf, math.inf),
    "battery": (0.0, 100.0),
}


class TrackFileError(InvalidInput):
    """A track file that cannot be read; the message starts with the file (and line, where known)."""


@dataclass(frozen=True)
class TrackFile:
    """The points of one track file in time order, one array per column.

    `ts` is ms since the epoch, strictly ascending. `optional` holds only the columns the file has
    (speed m/s, heading degrees, accuracy m, altitude m, battery %), NaN where a point lacks the value.
    Not `tracker.trail.Trail`, which is a stored trail read back from PostGIS.
    """

    name: str
    ts: IntArray
    lat: FloatArray
    lon: FloatArray
    optional: dict[str, FloatArray] = field(default_factory=dict)
    untimed: int = 0  # GPX points skipped for having no <time>
    duplicates: int = 0  # points dropped for repeating an earlier point's timestamp

    def __len__(self) -> int:
        return len(self.ts)

    @property
    def duration_ms(self) -> int:
        return int(self.ts[-1] - self.ts[0]) if len(self.ts) else 0

    def head(self, n: int) -> TrackFile:
        """The first `n` points (for tests and demos that want a short piece of a long track)."""
        return TrackFile(
            self.name,
            self.ts[:n],
            self.lat[:n],
            self.lon[:n],
            {k: v[:n] for k, v in self.optional.items()},
            self.untimed,
            self.duplicates,
        )

    def describe(self) -> str:
        """One line for people: points, time span and what was left out."""
        seconds = self.duration_ms / 1000
        span = f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"
        notes = []
        if self.untimed:
            notes.append(f"{_count(self.untimed, 'point')} without a time skipped")
        if self.duplicates:
            notes.append(f"{_count(self.duplicates, 'repeated timestamp')} dropped")
        extra = f" ({'; '.join(notes)})" if notes else ""
        return f"{self.name}: {len(self)} points over {span} from {iso(int(self.ts[0]))}{extra}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def iso(ms: int) -> str:
    """An ISO 8601 UTC time with milliseconds, for messages."""
    return (_EPOCH + timedelta(milliseconds=ms)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Points:
    """Points as they are read, checked one by one, then sorted into a TrackFile by `finish`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.ts: list[int] = []
        self.lat: list[float] = []
        self.lon: list[float] = []
        self.optional: dict[str, list[float]] = {}
        self.untimed = 0

    def add(self, where: str, ts: int, lat: float, lon: float, optional: dict[str, float | None]) -> None:
        """Append one point; `where` ("file:line" or "file: place") prefixes any error."""
        if not (math.isfinite(lat) and -90.0 <= lat <= 90.0):
            raise TrackFileError(f"{where}: latitude must be between -90 and 90; got {lat:g}")
        if not (math.isfinite(lon) and -180.0 <= lon <= 180.0):
            raise TrackFileError(f"{where}: longitude must be between -180 and 180; got {lon:g}")
        n = len(self.ts)
        for name, value in optional.items():
            if value is None:
                continue
            low, high = OPTIONAL[name]
            if not (math.isfinite(value) and low <= value <= high):
                bounds = f"at least {low:g}" if high == math.inf else f"between {low:g} and {high:g}"
                raise TrackFileError(f"{where}: {name} must be {bounds}; got {value:g}")
            column = self.optional.get(name)
            if column is None:
                column = self.optional[name] = [math.nan] * n
            column.append(value)
        self.ts.append(ts)
        self.lat.append(lat)
        self.lon.append(lon)
        for column in self.optional.values():
            if len(column) == n:
                column.append(math.nan)

    def finish(self) -> TrackFile:
        """Sort by time, drop repeated timestamps, refuse a file with nothing to replay."""
        n = len(self.ts)
        if n == 0:
            if self.untimed:
                raise TrackFileError(
                    f"{self.path}: none of its {self.untimed} points has a time, and replaying needs times"
                )
            raise TrackFileError(f"{self.path}: no track points found")
        ts = np.asarray(self.ts, dtype=np.int64)
        order = np.argsort(ts, kind="stable")
        ts = ts[order]
        keep = np.ones(n, dtype=bool)
        keep[1:] = ts[1:] != ts[:-1]
        distinct = int(keep.sum())
        if n > 1 and distinct * 2 < n:
            times = _count(distinct, "distinct time")
            raise TrackFileError(
                f"{self.path}: only {times} among {n} points (from {iso(int(ts[0]))} to "
                f"{iso(int(ts[-1]))}); the recorder's clock looks stuck, so there is no timing to replay"
            )
        index = order[keep]
        return TrackFile(
            name=str(self.path),
            ts=ts[keep],
            lat=np.asarray(self.lat, dtype=np.float64)[index],
            lon=np.asarray(self.lon, dtype=np.float64)[index],
            optional={k: np.asarray(v, dtype=np.float64)[index] for k, v in self.optional.items()},
            untimed=self.untimed,
            duplicates=n - distinct,
        )
