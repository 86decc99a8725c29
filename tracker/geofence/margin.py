"""Accuracy-aware rules (`accuracy: strict`): which fences a fix's accuracy circle straddles.

A fix with accuracy radius `a` is wholly inside a polygon fence when the polygon covers it and its
boundary (holes included) is at least `a` metres away, and wholly outside when the polygon does not
cover it and the polygon is more than `a` metres away; for a circle fence of radius r at geodesic
distance d, inside when d + a <= r, outside when d - a > r. Anything else is *unsure*: a strict rule then
neither enters nor leaves on that fix (nor counts it toward `confirm_fixes`).

Distances are metres on the WGS84 ellipsoid, as PostGIS geography measures them: candidate fences come
from an STRtree query with a conservative radius in degrees; the nearest boundary point is found in a
plane scaled to metres around the fence (an equirectangular frame at its centre), and the distance to it
is then measured geodesically. The nearest point found in that plane is off the true one by a fraction of
the frame's scale error, and distance is flat at its minimum, so the error left is second order
(millimetres for fences a few kilometres across).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import shapely

from tracker.geo import WGS84, pairwise_distance_m
from tracker.model import Fence, Fix

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]

_M_PER_DEG = 111_320.0  # at the equator; fewer metres per degree of longitude elsewhere
_MARGIN = 1.02  # the degree radius of a candidate query is grown by this much


class Margins:
    """The fences some strict rule watches, compiled to find the ones a fix's accuracy circle straddles."""

    def __init__(self, fences: Sequence[Fence], positions: Sequence[int]) -> None:
        """`positions`: the indexes (in the rule set's fence list) of the fences with strict rules."""
        self.positions = np.asarray(positions, dtype=np.int64)
        self._fences = [fences[p] for p in positions]
        outlines = []
        self._frames: list[tuple[float, float, float, float]] = []  # lon0, lat0, m per deg lon, lat
        self._boundaries: list[shapely.Geometry | None] = []
        for fence in self._fences:
            if fence.is_circle:
                assert fence.center_lonlat is not None and fence.radius_m is not None
                lon, lat = fence.center_lonlat
                dlat = fence.radius_m / 110_574.0 * _MARGIN
                dlon = fence.radius_m / (_M_PER_DEG * max(math.cos(math.radians(lat)), 1e-6)) * _MARGIN
                outlines.append(shapely.box(lon - dlon, lat - dlat, lon + dlon, lat + dlat))
                self._frames.append((lon, lat, 0.0, 0.0))
                self._boundaries.append(None)
                continue
            geom = fence.geometry
            outlines.append(geom)
            c = geom.centroid
            kx, ky = _metres_per_degree(c.y)
            self._frames.append((c.x, c.y, kx, ky))
            self._boundaries.append(_scaled(geom.boundary, c.x, c.y, kx, ky))
        self._tree = shapely.STRtree(outlines)

    def __bool__(self) -> bool:
        return len(self._fences) > 0

    def unsure_per_fix(
        self,
        fixes: Sequence[Fix],
        fleets: frozenset[str] | None,
        lon: Floats,
        lat: Floats,
        covered: Sequence[set[int]],
    ) -> list[set[int]]:
        """Per fix, the positions of the fences its accuracy circle straddles (`unsure`), for the fixes of
        `fleets` (None: all; the fleets some strict rule concerns). Most fixes share one empty set."""
        none: set[int] = set()
        out = [none] * len(fixes)
        if not self:
            return out
        accuracy = np.fromiter(
            (
                f.accuracy if f.accuracy is not None and (fleets is None or f.fleet in fleets) else 0.0
                for f in fixes
            ),
            dtype=np.float64,
            count=len(fixes),
        )
        points, positions = self.unsure(lon, lat, accuracy, covered)
        for p, fi in zip(points.tolist(), positions.tolist(), strict=True):
            if out[p] is none:
                out[p] = set()
            out[p].add(fi)
        return out

    def unsure(
        self, lon: Floats, lat: Floats, accuracy: Floats, covered: Sequence[set[int]]
    ) -> tuple[Ints, Ints]:
        """(point, fence position) pairs whose accuracy circle straddles the fence, for the points with an
        accuracy above 0; `covered[i]`: the fence positions covering point i (the plain test)."""
        todo = np.flatnonzero(accuracy > 0)
        if len(todo) == 0 or not self:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        px, py, acc = lon[todo], lat[todo], accuracy[todo]
        degrees = acc / (_M_PER_DEG * np.maximum(np.cos(np.radians(py)), 1e-6)) * _MARGIN
        hit_point, hit_fence = self._tree.query(shapely.points(px, py), predicate="dwithin", distance=degrees)
        points: list[Ints] = []
        fences: list[Ints] = []
        for k in np.unique(hit_fence).tolist():
            rows = hit_point[hit_fence == k]
            idx = todo[rows]
            position = int(self.positions[k])
            inside = np.array([position in covered[i] for i in idx.tolist()], dtype=np.bool_)
            dist = self._distance_m(k, lon[idx], lat[idx])
            a = accuracy[idx]
            fence = self._fences[k]
            if fence.is_circle:
                assert fence.radius_m is not None
                sure = (dist + a <= fence.radius_m) | (dist - a > fence.radius_m)
            else:
                sure = np.where(inside, dist >= a, dist > a)
            points.append(idx[~sure])
            fences.append(np.full(int((~sure).sum()), position, dtype=np.int64))
        if not points:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate(points), np.concatenate(fences)

    def _distance_m(self, k: int, lon: Floats, lat: Floats) -> Floats:
        """Geodesic metres from each point to fence k's centre (circle) or nearest boundary point."""
        lon0, lat0, kx, ky = self._frames[k]
        if self._boundaries[k] is None:
            return pairwise_distance_m(np.full(len(lat), lat0), np.full(len(lat), lon0), lat, lon)
        points = shapely.points((lon - lon0) * kx, (lat - lat0) * ky)
        lines = shapely.shortest_line(points, self._boundaries[k])
        ends = shapely.get_coordinates(lines).reshape(-1, 2, 2)[:, 1, :]
        near_lon = ends[:, 0] / kx + lon0
        near_lat = ends[:, 1] / ky + lat0
        return pairwise_distance_m(lat, lon, near_lat, near_lon)


def _metres_per_degree(lat: float) -> tuple[float, float]:
    """Metres per degree of longitude and of latitude at `lat` on the WGS84 ellipsoid (from the geodesic
    across a small step, so the frame agrees with the distances measured in it)."""
    step = 1e-3
    _, _, east = WGS84.inv(0.0, lat, step, lat)
    _, _, north = WGS84.inv(0.0, lat - step / 2, 0.0, lat + step / 2)
    return float(east) / step, float(north) / step


def _scaled(geom: shapely.Geometry, lon0: float, lat0: float, kx: float, ky: float) -> shapely.Geometry:
    """`geom` (lon, lat) in the fence's metric frame."""
    return shapely.transform(
        geom, lambda xy: np.column_stack([(xy[:, 0] - lon0) * kx, (xy[:, 1] - lat0) * ky])
    )
