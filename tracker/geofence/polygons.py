"""Fence polygons from user coordinates: positions and rings checked, invalid polygons repaired.

Policy: a position is `[lon, lat]` of finite numbers within -180..180 and -90..90, and a ring needs three
distinct positions; anything else is refused with a message saying which. A polygon that is not
OGC-valid (a bow tie, a self-touching ring) is not refused: it is evaluated as the polygonal part of
`make_valid`, with a warning naming the fence. A polygon of zero area is refused.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import shapely
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

from tracker.geofence.yaml_marks import Loc

log = logging.getLogger("tracker.geofence")


def position_problem(point: Any) -> str | None:
    """Why `point` is not a usable [lon, lat] position, or None."""
    if not isinstance(point, list | tuple) or len(point) < 2:
        return "must be [lon, lat]"
    lon, lat = point[0], point[1]
    if not all(_finite(v) for v in (lon, lat)):
        return "must be [lon, lat] with finite numbers"
    if not -180 <= lon <= 180:
        return f"lon {lon!r:.30} is outside -180..180"
    if not -90 <= lat <= 90:
        return f"lat {lat!r:.30} is outside -90..90"
    return None


def _finite(value: Any) -> bool:
    """A finite number: an int (never converted, since one beyond a float's range would overflow) or a
    finite float; not a boolean."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


def ring_problem(points: Sequence[Any]) -> tuple[int | None, str] | None:
    """The first problem of a ring as (point index or None for the whole ring, message), or None."""
    for i, point in enumerate(points):
        problem = position_problem(point)
        if problem:
            return i, f"point {i}: {problem}"
    distinct = {(float(p[0]), float(p[1])) for p in points}
    if len(distinct) < 3:
        return None, f"needs at least 3 distinct points, has {len(distinct)}"
    return None


def repair(geom: BaseGeometry) -> Polygon | MultiPolygon:
    """The polygonal part of `make_valid(geom)`: what an invalid fence polygon is evaluated as."""
    polygons: list[Polygon] = []
    for part in shapely.get_parts(shapely.make_valid(geom)):
        if isinstance(part, Polygon):
            polygons.append(part)
        elif isinstance(part, MultiPolygon):
            polygons.extend(part.geoms)
    return polygons[0] if len(polygons) == 1 else MultiPolygon(polygons) if polygons else Polygon()


def fence_polygon(geom: Polygon | MultiPolygon, fence_id: str, source: str) -> Polygon | MultiPolygon | None:
    """What fence `fence_id` is evaluated as: `geom` itself when OGC-valid, else its `repair` (with a
    warning naming the fence and `source`); None when that has zero area."""
    if not geom.is_valid:
        log.warning(
            "fence %s (%s): polygon is not valid (%s); repaired with make_valid",
            fence_id,
            source,
            shapely.is_valid_reason(geom),
        )
        geom = repair(geom)
    return None if geom.is_empty or geom.area == 0 else geom


def rings_polygon(
    rings: Sequence[tuple[Loc, Sequence[Any]]], fence_id: str, source: str
) -> tuple[Polygon | MultiPolygon | None, list[tuple[Loc | None, str]]]:
    """The fence polygon of a shell and its holes, each given with where it was written, and the
    problems found (where, reason; None for the polygon as a whole); no polygon when there is one."""
    found: list[tuple[Loc | None, str]] = []
    for ring_loc, ring in rings:
        problem = ring_problem(ring)
        if problem:
            index, message = problem
            found.append(
                (ring_loc, message) if index is None else ((*ring_loc, index), message.split(": ", 1)[1])
            )
    if found:
        return None, found
    shell, *holes = ([(p[0], p[1]) for p in ring] for _, ring in rings)
    geom = fence_polygon(Polygon(shell, holes), fence_id, source)
    return geom, [] if geom is not None else [(None, "has zero area")]
