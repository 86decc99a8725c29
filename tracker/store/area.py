"""Who was in an area during a time window, from the stored fixes (not those a fix filter flagged: a jump
must not put a device where it never was).

One query per request, grouped by device: the time range prunes `fixes` to the partitions of the window
(and its BRIN index on `ts` narrows them further), `geom && envelope` lets the GiST index on `geom` pick
the candidate rows, and an exact test decides each of them: the box itself (edges included) for a bbox,
`ST_Covers` (the boundary counts) for a polygon fence, `ST_DWithin` on the WGS84 spheroid for a circle
fence, the same semantics as the live fence evaluation. A box or circle that crosses the antimeridian is
split into two envelopes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import shapely

from tracker.geo import circle_polygon, distances_from_m
from tracker.model import Fence
from tracker.parse import Box
from tracker.store.database import Database, ms_to_datetime

_M_PER_DEG = 111_000.0  # a little under a degree of latitude anywhere, so pads err on the large side


def split_box(box: Box) -> list[Box]:
    """The box as one or two boxes with west <= east (two when it crosses the antimeridian)."""
    west, south, east, north = box
    if west <= east:
        return [box]
    return [(west, south, 180.0, north), (-180.0, south, east, north)]


def circle_boxes(lat: float, lon: float, radius_m: float) -> list[Box]:
    """Envelopes (west <= east each) that together contain the geodesic circle around (lat, lon).

    Built from a 360-gon on the circle, padded by 1 % of the radius plus a metre (the arcs between its
    vertices bulge out by far less); a circle around a pole spans every longitude.
    """
    pad_m = radius_m * 0.01 + 1.0
    pole_m = distances_from_m(lat, lon, np.array([90.0, -90.0]), np.array([lon, lon]))
    ring = np.asarray(circle_polygon(lat, lon, radius_m, 360).exterior.coords)
    south = max(-90.0, float(ring[:, 1].min()) - pad_m / _M_PER_DEG)
    north = min(90.0, float(ring[:, 1].max()) + pad_m / _M_PER_DEG)
    if pole_m[0] <= radius_m + pad_m:
        return [(-180.0, south, 180.0, 90.0)]
    if pole_m[1] <= radius_m + pad_m:
        return [(-180.0, -90.0, 180.0, north)]
    # Longitudes relative to the centre, so a circle across the antimeridian stays one interval.
    offsets = (ring[:, 0] - lon + 180.0) % 360.0 - 180.0
    widest = max(abs(south), abs(north))
    pad_lon = pad_m / (_M_PER_DEG * max(np.cos(np.radians(widest)), 1e-6))
    west = lon + float(offsets.min()) - pad_lon
    east = lon + float(offsets.max()) + pad_lon
    if east - west >= 360.0:
        return [(-180.0, south, 180.0, north)]
    if west < -180.0:
        return [(west + 360.0, south, 180.0, north), (-180.0, south, east, north)]
    if east > 180.0:
        return [(west, south, 180.0, north), (-180.0, south, east - 360.0, north)]
    return [(west, south, east, north)]


class _Args:
    """Numbered query arguments for asyncpg."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def __call__(self, value: Any, cast: str) -> str:
        self.values.append(value)
        return f"${len(self.values)}::{cast}"


def _envelope(args: _Args, box: Box) -> str:
    w, s, e, n = (args(v, "float8") for v in box)
    return f"ST_MakeEnvelope({w}, {s}, {e}, {n}, 4326)"


def _bbox_where(args: _Args, box: Box) -> str:
    pieces = []
    for piece in split_box(box):
        w, s, e, n = (args(v, "float8") for v in piece)
        pieces.append(
            f"(f.geom && ST_MakeEnvelope({w}, {s}, {e}, {n}, 4326)"
            f" AND ST_X(f.geom) BETWEEN {w} AND {e} AND ST_Y(f.geom) BETWEEN {s} AND {n})"
        )
    return " OR ".join(pieces)


def _fence_where(args: _Args, fence: Fence) -> str:
    if fence.center_lonlat is not None and fence.radius_m is not None:
        c_lon, c_lat = fence.center_lonlat
        boxes = circle_boxes(c_lat, c_lon, fence.radius_m)
        lon, lat = args(c_lon, "float8"), args(c_lat, "float8")
        radius = args(fence.radius_m, "float8")
        exact = (
            f"ST_DWithin(f.geom::geography, ST_SetSRID(ST_MakePoint({lon}, {lat}), 4326)::geography,"
            f" {radius})"
        )
    else:
        west, south, east, north = (float(v) for v in fence.geometry.bounds)
        boxes = [(west, south, east, north)]
        # The polygon comes from the `shape` CTE of `_visits`: parsed once per query, also under a
        # generic plan (as an expression of the parameter it was parsed again for every row: 55 -> 300 ms).
        # `_ST_Covers` is ST_Covers without its index support: the constant envelope above gives the index
        # condition, and the one ST_Covers adds (`geom @ <the CTE's polygon>`) can't be estimated at plan
        # time, which led the planner to a plan 7x slower at p95 on a district over one hour of 10M fixes.
        exact = "_ST_Covers(shape.g, f.geom)"
    prefilter = " OR ".join(f"f.geom && {_envelope(args, b)}" for b in boxes)
    return f"({prefilter}) AND {exact}"


async def _visits(
    db: Database,
    args: _Args,
    where: str,
    from_ms: int,
    to_ms: int,
    fleets: list[str] | None,
    shape: str = "NULL::geometry",
) -> list[dict[str, Any]]:
    lower, upper = args(ms_to_datetime(from_ms), "timestamptz"), args(ms_to_datetime(to_ms), "timestamptz")
    granted = args(fleets, "text[]")
    sql = f"""
        WITH shape AS MATERIALIZED (SELECT {shape} AS g)
        SELECT f.device_id, d.fleet,
               (extract(epoch FROM min(f.ts)) * 1000)::bigint AS first_ts,
               (extract(epoch FROM max(f.ts)) * 1000)::bigint AS last_ts,
               count(*) AS fixes
        FROM shape, fixes f JOIN devices d ON d.id = f.device_id
        WHERE f.ts >= {lower} AND f.ts < {upper} AND f.flag IS NULL
          AND ({granted} IS NULL OR d.fleet = ANY({granted}))
          AND ({where})
        GROUP BY f.device_id, d.fleet
        ORDER BY first_ts, f.device_id
    """
    async with db.pool.acquire() as conn:
        rows = await conn.fetch(sql, *args.values)
    keys = ("id", "fleet", "first_ts", "last_ts", "fixes")
    return [dict(zip(keys, r, strict=True)) for r in rows]


async def visits_in_bbox(
    db: Database, box: Box, from_ms: int, to_ms: int, fleets: list[str] | None
) -> list[dict[str, Any]]:
    """Devices of `fleets` (None: all) with fixes in the box (edges included) and from <= ts < to:
    `{"id", "fleet", "first_ts", "last_ts", "fixes"}` each, by first_ts then id (coroutine)."""
    args = _Args()
    where = _bbox_where(args, box)
    return await _visits(db, args, where, from_ms, to_ms, fleets)


async def visits_in_fence(
    db: Database, fence: Fence, from_ms: int, to_ms: int, fleets: list[str] | None
) -> list[dict[str, Any]]:
    """As `visits_in_bbox`, for the fixes inside `fence` by the fence semantics (coroutine)."""
    args = _Args()
    where = _fence_where(args, fence)
    shape = (
        f"ST_GeomFromWKB({args(shapely.to_wkb(fence.geometry), 'bytea')}, 4326)"
        if fence.center_lonlat is None
        else "NULL::geometry"
    )
    return await _visits(db, args, where, from_ms, to_ms, fleets, shape)
