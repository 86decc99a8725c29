"""GeoJSON (a Feature or FeatureCollection of LineStrings with parallel `times`, or of timed Points, as
the server's own trail and positions answers are) and JSON arrays of fix objects (`lat`/`lon` or a WKT
`point`, and `ts`/`time`). Errors name the place in the document, e.g. `features[2].properties`."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from tracker.tools.trackfile.track import Points, TrackFileError
from tracker.tools.trackfile.values import (
    ALIASES,
    LAT_NAMES,
    LON_NAMES,
    TIME_NAMES,
    number,
    optional_number,
    time_of,
)

_WKT_POINT = re.compile(r"^\s*POINT\s*Z?\s*\(\s*(\S+)\s+(\S+)(?:\s+\S+)?\s*\)\s*$", re.IGNORECASE)
# GeoJSON line features: parallel per-coordinate arrays in `properties` (the server's trail has `times`).
_PARALLEL = {"speed": "speeds", "heading": "headings", "accuracy": "accuracies", "battery": "batteries"}


def read_json(path: Path, text: str) -> Points:
    """A GeoJSON Feature or FeatureCollection (LineStrings with parallel `times`, or timed Points), or a
    JSON array of fix objects (`lat`/`lon` or a WKT `point`, and `ts`/`time`)."""
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise TrackFileError(f"{path}: not valid JSON: {exc}") from None
    out = Points(path)
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
    for name, aliases in ALIASES.items():
        key, value = _pick(obj, aliases)
        values[name] = optional_number(where, key, value)
    return values


def _add_fix_object(out: Points, where: str, item: Any) -> None:
    if not isinstance(item, dict):
        raise TrackFileError(f"{where}: a fix must be a JSON object; got {type(item).__name__}")
    name, when = _pick(item, TIME_NAMES)
    if not name:
        raise TrackFileError(f"{where}: no time: expected one of {', '.join(TIME_NAMES)}")
    lat_name, lat = _pick(item, LAT_NAMES)
    lon_name, lon = _pick(item, LON_NAMES)
    if isinstance(item.get("point"), str) and not lat_name:
        match = _WKT_POINT.match(item["point"])
        if match is None:
            raise TrackFileError(f"{where}: point must be WKT 'POINT(lon lat)'; got {item['point']!r:.60}")
        lon_name, lon, lat_name, lat = "point", match.group(1), "point", match.group(2)
    if not lat_name or not lon_name:
        raise TrackFileError(f"{where}: no position: expected lat and lon (or a WKT point)")
    out.add(
        where,
        time_of(where, name, when),
        number(where, lat_name, lat),
        number(where, lon_name, lon),
        _optional_values(where, item),
    )


def _add_feature(out: Points, where: str, feature: Any) -> None:
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
        name, when = _pick(properties, TIME_NAMES)
        if not name:
            raise TrackFileError(f"{where}.properties: no time: expected one of {', '.join(TIME_NAMES)}")
        optional = _optional_values(f"{where}.properties", properties)
        lon, lat, altitude = _position(where + ".geometry.coordinates", coords)
        if optional["altitude"] is None:
            optional["altitude"] = altitude
        out.add(where, time_of(f"{where}.properties", name, when), lat, lon, optional)
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
            name: optional_number(at, name, values[i]) if values is not None else None
            for name, values in columns.items()
        }
        optional["altitude"] = altitude
        out.add(f"{where} point {i}", time_of(at, "times", times[i]), lat, lon, optional)


def _position(where: str, value: Any) -> tuple[float, float, float | None]:
    """(lon, lat, altitude or None) of a GeoJSON position."""
    if not isinstance(value, list) or len(value) < 2:
        raise TrackFileError(f"{where}: a position must be [lon, lat] or [lon, lat, altitude]")
    altitude = number(where, "altitude", value[2]) if len(value) > 2 and value[2] is not None else None
    return number(where, "lon", value[0]), number(where, "lat", value[1]), altitude


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
