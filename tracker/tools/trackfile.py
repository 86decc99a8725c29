"""Track files in, time-ordered point columns out: GPX, CSV, GeoJSON (or a JSON array of fixes) and GeoLife
PLT, chosen by the file's extension. Pure: no network, no database.

Policy:
- Points come out sorted by time; of points sharing one exact timestamp only the first in file order is
  kept (the server would store just one of them anyway) and the rest are counted in `duplicates`.
- A time is integer milliseconds, or seconds when the number is below 1e11 (that is before 1973 in ms,
  so a plausible recording time in seconds), or ISO 8601 with an offset. A time without an offset is
  refused, except in GPX and PLT, whose times are UTC by definition.
- GPX points without `<time>` are skipped and counted in `untimed`: GPX makes times optional, and
  recorders write untimed copies of tracks beside timed ones. Times are never invented; a file with no
  timed point, or whose clock was stuck (fewer than half its points have distinct times), is refused.
- Values are checked against the device protocol's bounds here, so that a bad row is reported with its
  place in the file instead of as a rejection by the server later.
- Errors are `TrackFileError` (an `InvalidInput`): `file:line: problem` where a line is known (CSV, PLT),
  else `file: where: problem`.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import gpxpy
import gpxpy.gpx
import numpy as np
import numpy.typing as npt
import orjson

from tracker.errors import InvalidInput
from tracker.validation import parse_time

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

SUFFIXES = (".gpx", ".csv", ".geojson", ".json", ".plt")
SECONDS_BELOW = 1e11  # a numeric time below this is in seconds, above it in milliseconds
FEET = 0.3048
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_WKT_POINT = re.compile(r"^\s*POINT\s*Z?\s*\(\s*(\S+)\s+(\S+)(?:\s+\S+)?\s*\)\s*$", re.IGNORECASE)

# Optional per-point values and the device protocol's bounds for them.
OPTIONAL: dict[str, tuple[float, float]] = {
    "speed": (0.0, math.inf),
    "heading": (0.0, 360.0),
    "accuracy": (0.0, math.inf),
    "altitude": (-math.inf, math.inf),
    "battery": (0.0, 100.0),
}
# Names a CSV column or a JSON property may carry for each value (lower case).
_TIME_NAMES = ("ts", "time", "timestamp", "tracked_at")
_LAT_NAMES = ("lat", "latitude")
_LON_NAMES = ("lon", "lng", "long", "longitude")
_ALIASES: dict[str, tuple[str, ...]] = {
    "speed": ("speed",),
    "heading": ("heading", "course", "bearing"),
    "accuracy": ("accuracy",),
    "altitude": ("altitude", "ele", "elevation", "alt"),
    "battery": ("battery", "batt"),
}
# GeoJSON line features: parallel per-coordinate arrays in `properties` (the server's trail has `times`).
_PARALLEL = {"speed": "speeds", "heading": "headings", "accuracy": "accuracies", "battery": "batteries"}


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


def read_track(path: str | Path) -> TrackFile:
    """Read a track file by its extension; raises TrackFileError naming the file (and line) at fault."""
    path = Path(path)
    suffix = path.suffix.lower()
    readers: dict[str, Callable[[Path, str], _Points]] = {
        ".gpx": _read_gpx,
        ".csv": _read_csv,
        ".geojson": _read_json,
        ".json": _read_json,
        ".plt": _read_plt,
    }
    reader = readers.get(suffix)
    if reader is None:
        raise TrackFileError(
            f"{path}: unknown track format {suffix or '(no extension)'!r}; use one of {', '.join(SUFFIXES)}"
        )
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise TrackFileError(f"{path}: cannot read the file: {exc}") from None
    if not text.strip():
        raise TrackFileError(f"{path}: the file is empty")
    return reader(path, text).finish()


class _Points:
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


# --- values ------------------------------------------------------------------------------------------


def _number(where: str, name: str, value: Any) -> float:
    """A finite number from a JSON number or a numeric string."""
    if isinstance(value, str) and _NUMBER.match(value.strip()):
        return float(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TrackFileError(f"{where}: {name} must be a number; got {value!r:.40}")
    f = float(value)
    if not math.isfinite(f):
        raise TrackFileError(f"{where}: {name} must be a finite number; got {value!r:.40}")
    return f


def _optional_number(where: str, name: str, value: Any) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return _number(where, name, value)


def _time(where: str, name: str, value: Any) -> int:
    """Milliseconds from a number (ms, or s below 1e11) or an ISO 8601 string with an offset."""
    if isinstance(value, str) and not _NUMBER.match(value.strip()):
        if not value.strip():
            raise TrackFileError(f"{where}: {name} is empty")
        try:
            return parse_time(value, name)
        except InvalidInput as exc:
            raise TrackFileError(f"{where}: {exc}") from None
    if value is None:
        raise TrackFileError(f"{where}: {name} is missing")
    number = _number(where, name, value)
    if abs(number) < SECONDS_BELOW:
        return round(number * 1000)
    return int(value) if isinstance(value, int) else round(number)


def _datetime_ms(value: datetime) -> int:
    """ms since the epoch; a naive datetime is UTC (GPX and PLT times are)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - _EPOCH) // timedelta(milliseconds=1)


# --- GPX ---------------------------------------------------------------------------------------------


def _read_gpx(path: Path, text: str) -> _Points:
    try:
        gpx = gpxpy.parse(text)
    except gpxpy.gpx.GPXException as exc:
        raise TrackFileError(f"{path}: not valid GPX: {exc}") from None
    points: list[tuple[str, gpxpy.gpx.GPXTrackPoint | gpxpy.gpx.GPXRoutePoint]] = [
        (f"track {t + 1} segment {s + 1} point {p + 1}", point)
        for t, track in enumerate(gpx.tracks)
        for s, segment in enumerate(track.segments)
        for p, point in enumerate(segment.points)
    ]
    if not points:  # a planned route, then
        points = [
            (f"route {r + 1} point {p + 1}", point)
            for r, route in enumerate(gpx.routes)
            for p, point in enumerate(route.points)
        ]
    out = _Points(path)
    for place, point in points:
        if point.time is None:
            out.untimed += 1
            continue
        where = f"{path}: {place}"
        extensions = _gpx_extensions(point)
        speed = getattr(point, "speed", None)  # route points have neither speed nor course
        speed = speed if speed is not None else extensions.get("speed")
        course = getattr(point, "course", None)
        heading = course if course is not None else extensions.get("course")
        optional = {
            "speed": _optional_number(where, "speed", speed),
            "heading": _optional_number(where, "course", heading),
            "altitude": _optional_number(where, "ele", point.elevation),
        }
        out.add(where, _datetime_ms(point.time), point.latitude, point.longitude, optional)
    return out


def _gpx_extensions(point: Any) -> dict[str, str]:
    """`speed` and `course` from a point's extensions (Garmin TrackPointExtension v2 and the like)."""
    found: dict[str, str] = {}
    for element in getattr(point, "extensions", None) or []:
        for child in element.iter():
            local = child.tag.rpartition("}")[2].lower()
            if local in ("speed", "course") and child.text and child.text.strip():
                found.setdefault(local, child.text.strip())
    return found


# --- CSV ---------------------------------------------------------------------------------------------


def _read_csv(path: Path, text: str) -> _Points:
    first_line = text.split("\n", 1)[0]
    delimiter = max((",", ";", "\t"), key=first_line.count)
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    header = [h.strip().lower() for h in next(reader)]

    def column(names: tuple[str, ...], what: str, required: bool) -> int | None:
        for name in names:
            if name in header:
                return header.index(name)
        if required:
            raise TrackFileError(
                f"{path}:1: no {what} column: expected one of {', '.join(names)}; "
                f"the header has {', '.join(header) or 'nothing'}"
            )
        return None

    time_at = column(_TIME_NAMES, "time", True)
    lat_at = column(_LAT_NAMES, "latitude", True)
    lon_at = column(_LON_NAMES, "longitude", True)
    assert time_at is not None and lat_at is not None and lon_at is not None
    optional_at = {
        name: at for name, aliases in _ALIASES.items() if (at := column(aliases, name, False)) is not None
    }
    out = _Points(path)
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        where = f"{path}:{reader.line_num}"
        if len(row) < len(header):
            raise TrackFileError(f"{where}: {len(row)} fields where the header names {len(header)}")
        out.add(
            where,
            _time(where, header[time_at], row[time_at].strip()),
            _number(where, header[lat_at], row[lat_at].strip() or None),
            _number(where, header[lon_at], row[lon_at].strip() or None),
            {name: _optional_number(where, header[at], row[at]) for name, at in optional_at.items()},
        )
    return out


# --- GeoLife PLT -------------------------------------------------------------------------------------


def _read_plt(path: Path, text: str) -> _Points:
    """GeoLife: 6 header lines, then `lat,lon,0,altitude_ft,days_since_1899,YYYY-MM-DD,HH:MM:SS` (UTC);
    an altitude of -777 means none."""
    lines = text.splitlines()
    if len(lines) < 6 or not lines[0].lower().startswith("geolife"):
        raise TrackFileError(
            f"{path}:1: not a GeoLife PLT file (6 header lines starting 'Geolife trajectory')"
        )
    out = _Points(path)
    for number, line in enumerate(lines[6:], start=7):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        fields = line.split(",")
        if len(fields) < 7:
            raise TrackFileError(
                f"{where}: expected 7 fields (lat,lon,0,altitude_ft,days,date,time); got {len(fields)}"
            )
        try:
            when = datetime.fromisoformat(f"{fields[5].strip()}T{fields[6].strip()}+00:00")
        except ValueError:
            raise TrackFileError(
                f"{where}: date and time must be YYYY-MM-DD,HH:MM:SS; got {fields[5]},{fields[6]}"
            ) from None
        feet = _number(where, "altitude", fields[3].strip())
        out.add(
            where,
            _datetime_ms(when),
            _number(where, "latitude", fields[0].strip()),
            _number(where, "longitude", fields[1].strip()),
            {"altitude": None if feet == -777 else feet * FEET},
        )
    return out


# --- GeoJSON and JSON --------------------------------------------------------------------------------


def _read_json(path: Path, text: str) -> _Points:
    """A GeoJSON Feature or FeatureCollection (LineStrings with parallel `times`, or timed Points), or a
    JSON array of fix objects (`lat`/`lon` or a WKT `point`, and `ts`/`time`)."""
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise TrackFileError(f"{path}: not valid JSON: {exc}") from None
    out = _Points(path)
    if isinstance(doc, list):
        for i, item in enumerate(doc):
            _add_fix_object(out, f"{path}: [{i}]", item)
        return out
    kind = doc.get("type") if isinstance(doc, dict) else None
    if kind == "FeatureCollection" and isinstance(doc.get("features"), list):
        for i, feature in enumerate(doc["features"]):
            _add_feature(out, f"{path}: features[{i}]", feature)
    elif kind == "Feature":
        _add_feature(out, f"{path}: feature", doc)
    else:
        raise TrackFileError(
            f"{path}: expected a GeoJSON Feature or FeatureCollection, or a JSON array of fixes; "
            f"got {kind or type(doc).__name__!r}"
        )
    return out


def _pick(obj: dict[str, Any], names: tuple[str, ...]) -> tuple[str, Any]:
    """The first of `names` present (not null) in `obj`, as (name, value); ("", None) if none is."""
    for name in names:
        if obj.get(name) is not None:
            return name, obj[name]
    return "", None


def _optional_values(where: str, obj: dict[str, Any]) -> dict[str, float | None]:
    values: dict[str, float | None] = {}
    for name, aliases in _ALIASES.items():
        key, value = _pick(obj, aliases)
        values[name] = _optional_number(where, key, value)
    return values


def _add_fix_object(out: _Points, where: str, item: Any) -> None:
    if not isinstance(item, dict):
        raise TrackFileError(f"{where}: a fix must be a JSON object; got {type(item).__name__}")
    name, when = _pick(item, _TIME_NAMES)
    if not name:
        raise TrackFileError(f"{where}: no time: expected one of {', '.join(_TIME_NAMES)}")
    lat_name, lat = _pick(item, _LAT_NAMES)
    lon_name, lon = _pick(item, _LON_NAMES)
    if isinstance(item.get("point"), str) and not lat_name:
        match = _WKT_POINT.match(item["point"])
        if match is None:
            raise TrackFileError(f"{where}: point must be WKT 'POINT(lon lat)'; got {item['point']!r:.60}")
        lon_name, lon, lat_name, lat = "point", match.group(1), "point", match.group(2)
    if not lat_name or not lon_name:
        raise TrackFileError(f"{where}: no position: expected lat and lon (or a WKT point)")
    out.add(
        where,
        _time(where, name, when),
        _number(where, lat_name, lat),
        _number(where, lon_name, lon),
        _optional_values(where, item),
    )


def _add_feature(out: _Points, where: str, feature: Any) -> None:
    if not isinstance(feature, dict) or feature.get("type") != "Feature":
        raise TrackFileError(f"{where}: expected a GeoJSON Feature")
    geometry = feature.get("geometry")
    properties = feature.get("properties") or {}
    if geometry is None:  # the server's trail of an empty window
        return
    if not isinstance(geometry, dict) or not isinstance(properties, dict):
        raise TrackFileError(f"{where}: geometry and properties must be JSON objects")
    kind, coords = geometry.get("type"), geometry.get("coordinates")
    if kind == "Point":
        name, when = _pick(properties, _TIME_NAMES)
        if not name:
            raise TrackFileError(f"{where}.properties: no time: expected one of {', '.join(_TIME_NAMES)}")
        optional = _optional_values(f"{where}.properties", properties)
        lon, lat, altitude = _position(where + ".geometry.coordinates", coords)
        if optional["altitude"] is None:
            optional["altitude"] = altitude
        out.add(where, _time(f"{where}.properties", name, when), lat, lon, optional)
        return
    if kind not in ("LineString", "MultiLineString"):
        raise TrackFileError(
            f"{where}: geometry must be a LineString, MultiLineString or Point; got {kind!r}"
        )
    lines = [coords] if kind == "LineString" else coords
    if not isinstance(lines, list) or not all(isinstance(line, list) for line in lines):
        raise TrackFileError(f"{where}.geometry.coordinates: expected arrays of positions for a {kind}")
    positions = [_position(f"{where}.geometry.coordinates", p) for line in lines for p in line]
    parallel = properties.get("coordinateProperties") or {}
    times = _parallel(where, "times", properties.get("times") or parallel.get("times"), len(positions))
    if times is None:
        raise TrackFileError(
            f"{where}.properties: no times: a line needs `times` parallel to its coordinates"
        )
    columns = {
        name: _parallel(where, plural, properties.get(plural) or parallel.get(plural), len(positions))
        for name, plural in _PARALLEL.items()
    }
    if len(positions) == 2 and times[0] == times[1] and positions[0] == positions[1]:
        positions, times = positions[:1], times[:1]  # the server's trail of a single fix repeats it
    for i, (lon, lat, altitude) in enumerate(positions):
        at = f"{where}.properties.times[{i}]"
        optional = {
            name: _optional_number(at, name, values[i]) if values is not None else None
            for name, values in columns.items()
        }
        optional["altitude"] = altitude
        out.add(f"{where} point {i}", _time(at, "times", times[i]), lat, lon, optional)


def _position(where: str, value: Any) -> tuple[float, float, float | None]:
    """(lon, lat, altitude or None) of a GeoJSON position."""
    if not isinstance(value, list) or len(value) < 2:
        raise TrackFileError(f"{where}: a position must be [lon, lat] or [lon, lat, altitude]")
    altitude = _number(where, "altitude", value[2]) if len(value) > 2 and value[2] is not None else None
    return _number(where, "lon", value[0]), _number(where, "lat", value[1]), altitude


def _parallel(where: str, name: str, values: Any, n: int) -> list[Any] | None:
    """A per-coordinate array, flat or nested per line (flattened); None when absent."""
    if values is None:
        return None
    if not isinstance(values, list):
        raise TrackFileError(f"{where}.properties.{name} must be an array")
    flat = list(_flatten(values))
    if len(flat) != n:
        raise TrackFileError(f"{where}.properties.{name} has {len(flat)} entries for {n} coordinates")
    return flat


def _flatten(values: list[Any]) -> Iterator[Any]:
    for value in values:
        if isinstance(value, list):
            yield from value
        else:
            yield value
