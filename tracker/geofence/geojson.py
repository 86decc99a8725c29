"""GeoJSON files as fence shapes: a Polygon or MultiPolygon geometry, a Feature, or a FeatureCollection.

Policy: RFC 7946 only, so coordinates are WGS84 [lon, lat]; a `crs` naming anything else is refused
rather than guessed at. Every position and ring is checked as in YAML (`polygons.py`); the first problem
raises `GeoJSONError` naming its place in the file (`features[3].geometry.coordinates[0]: ...`).
"""

from __future__ import annotations

import json
import re
from typing import Any, TypeAlias

from shapely.geometry import MultiPolygon, Polygon

from tracker.errors import ConfigError
from tracker.geofence.polygons import ring_problem

# (feature id, properties.name, geometry) of one shape in a file
Feature: TypeAlias = tuple[str | None, str | None, Polygon | MultiPolygon]


class GeoJSONError(ConfigError):
    """A GeoJSON file that cannot be used; the message names the place in the file."""


def read_features(content: bytes) -> tuple[bool, list[Feature]]:
    """(is a collection, its shapes) of a GeoJSON document. Raises GeoJSONError."""
    try:
        doc = json.loads(content)
    except json.JSONDecodeError as exc:
        raise GeoJSONError(f"line {exc.lineno}: not valid JSON: {exc.msg}") from exc
    except UnicodeDecodeError as exc:
        raise GeoJSONError("not UTF-8 text") from exc
    except RecursionError:
        raise GeoJSONError("nested too deeply to be GeoJSON") from None
    if not isinstance(doc, dict):
        raise GeoJSONError("must be a GeoJSON object")
    crs = doc.get("crs")
    if crs is not None:
        properties = crs.get("properties") if isinstance(crs, dict) else None
        name = str(properties.get("name", "")) if isinstance(properties, dict) else ""
        if not re.search(r"CRS84$|EPSG:*4326$", name):
            raise GeoJSONError(f"crs {name or crs!r} is not WGS84 lon/lat (RFC 7946); reproject the file")
    kind = doc.get("type")
    if kind == "FeatureCollection":
        features = doc.get("features")
        if not isinstance(features, list) or not features:
            raise GeoJSONError("features: must be a non-empty list")
        return True, [_feature(f, f"features[{i}]") for i, f in enumerate(features)]
    if kind == "Feature":
        return False, [_feature(doc, "feature")]
    return False, [(None, None, _polygon(doc, "geometry"))]


def _feature(f: Any, where: str) -> Feature:
    if not isinstance(f, dict) or f.get("type") != "Feature":
        raise GeoJSONError(f"{where}: must be a Feature")
    props = f.get("properties")
    name = props.get("name") if isinstance(props, dict) else None
    fid = f.get("id")
    if isinstance(fid, float) and fid.is_integer():
        fid = int(fid)
    key = None if fid is None or isinstance(fid, bool) else str(fid)
    return key, name, _polygon(f.get("geometry"), f"{where}.geometry")


def _polygon(geometry: Any, where: str) -> Polygon | MultiPolygon:
    if not isinstance(geometry, dict):
        raise GeoJSONError(f"{where}: must be a GeoJSON geometry object")
    kind, coords = geometry.get("type"), geometry.get("coordinates")
    if kind not in ("Polygon", "MultiPolygon"):
        raise GeoJSONError(f"{where}: type {kind!r} is not Polygon or MultiPolygon")
    polygons = [coords] if kind == "Polygon" else coords
    if not isinstance(polygons, list) or not polygons:
        raise GeoJSONError(f"{where}.coordinates: must be a non-empty list")
    built: list[Polygon] = []
    for p, rings in enumerate(polygons):
        at = f"{where}.coordinates" + ("" if kind == "Polygon" else f"[{p}]")
        if not isinstance(rings, list) or not rings:
            raise GeoJSONError(f"{at}: must be a non-empty list of rings")
        for r, ring in enumerate(rings):
            problem = ring_problem(ring) if isinstance(ring, list) else (None, "must be a list of positions")
            if problem:
                raise GeoJSONError(f"{at}[{r}]: {problem[1]}")
        shell, *holes = ([(float(x[0]), float(x[1])) for x in ring] for ring in rings)
        built.append(Polygon(shell, holes))
    return built[0] if kind == "Polygon" else MultiPolygon(built)
