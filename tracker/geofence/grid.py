"""Which fences cover which points, for a whole batch at once.

Fences are compiled once per load into a quadtree over lon/lat: every square either lies wholly inside a
fence (`INTERIOR`: its points are inside without a test), crosses the fence's edge (`BOUNDARY`: its points
get the exact test), or is dropped. All squares of all fences become ranges on one Z-order (Morton) line,
cut into disjoint segments, each listing its (fence, kind) pairs. A batch then costs one vectorised key
computation and one `searchsorted`; only points in boundary squares reach Shapely or the geodesic.

Why lon/lat squares rather than H3 cells: the contract's polygons are planar in lon/lat (a point is inside
when the polygon covers it), and a lon/lat square is exactly a box in that plane, so "the box is covered"
proves every point in it is inside with no margin for the curved edges of H3 hexagons, and the keys come
from numpy arithmetic instead of one H3 call per point. H3 stays the live index's cell of every fix.

Circles are inside by geodesic distance on the WGS84 ellipsoid (Karney, as PostGIS geography): squares
within a polygon inscribed at 95 % of the radius are interior, squares touching one drawn at 105 % are
boundary, and only boundary points are measured.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import shapely
from shapely.geometry.base import BaseGeometry

from tracker.geo import WGS84, circle_polygon, distances_from_m
from tracker.model import Fence

LEVEL = 24  # finest square: 360° / 2**24 ≈ 2.1e-5° (about 2 m)
_SCALE = (1 << LEVEL) / 360.0
_EPS = 1e-9  # squares are grown by this (degrees) before classification: floating keys never fall outside
INTERIOR = 1
BOUNDARY = 2
CIRCLE_VERTICES = 128  # of the polygons that bound a circle fence in the quadtree

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]


def _spread(v: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """Interleave zero bits between the low 24 bits of `v` (the Morton code's half)."""
    v = v & np.uint64(0xFFFFFF)
    v = (v | (v << np.uint64(16))) & np.uint64(0x0000FFFF0000FFFF)
    v = (v | (v << np.uint64(8))) & np.uint64(0x00FF00FF00FF00FF)
    v = (v | (v << np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    v = (v | (v << np.uint64(2))) & np.uint64(0x3333333333333333)
    v = (v | (v << np.uint64(1))) & np.uint64(0x5555555555555555)
    return v


def _morton(cx: npt.NDArray[np.uint64], cy: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    return _spread(cx) | (_spread(cy) << np.uint64(1))


def point_keys(lon: Floats, lat: Floats) -> npt.NDArray[np.uint64]:
    """The finest-level Z-order key of each point (vectorised)."""
    limit = (1 << LEVEL) - 1
    cx = np.clip(np.floor((lon + 180.0) * _SCALE), 0, limit).astype(np.uint64)
    cy = np.clip(np.floor((lat + 90.0) * _SCALE), 0, limit).astype(np.uint64)
    return _morton(cx, cy)


class _Shape:
    """What the quadtree classifies one fence against, and its exact test."""

    def __init__(self, fence: Fence) -> None:
        self.fence = fence
        if fence.center_lonlat is not None and fence.radius_m is not None:
            r = fence.radius_m
            lon0, lat0 = fence.center_lonlat
            self.outer: BaseGeometry = circle_polygon(lat0, lon0, r * 1.05 + 1.0, CIRCLE_VERTICES)
            reach = math.degrees(r / 6_356_752.0) * 1.1
            near_pole = abs(lat0) + reach > 80.0
            self.inner: BaseGeometry | None = (
                None if near_pole else circle_polygon(lat0, lon0, r * 0.95, CIRCLE_VERTICES)
            )
        else:
            self.outer = fence.geometry
            self.inner = fence.geometry
        shapely.prepare(self.outer)
        if self.inner is not None:
            shapely.prepare(self.inner)

    def covers(self, lon: Floats, lat: Floats) -> Bools:
        """The exact test: polygon covers the point (boundary inside), or geodesic distance <= radius."""
        f = self.fence
        if f.center_lonlat is not None and f.radius_m is not None:
            lon0, lat0 = f.center_lonlat
            return distances_from_m(lat0, lon0, lat, lon) <= f.radius_m
        return np.asarray(shapely.intersects_xy(self.outer, lon, lat), dtype=np.bool_)

    def squares(
        self, depth: int
    ) -> tuple[list[npt.NDArray[np.uint64]], list[npt.NDArray[np.uint64]], list[int]]:
        """Quadtree squares of this fence as Z-order ranges: (lo, hi, kind) arrays per level."""
        xmin, ymin, xmax, ymax = self.outer.bounds
        extent = max(xmax - xmin, ymax - ymin, 1e-7)
        start = max(0, min(LEVEL, int(math.floor(math.log2(360.0 / extent)))))
        finest = min(LEVEL, start + depth)
        size = 360.0 / (1 << start)
        xs = np.arange(math.floor((xmin + 180.0) / size), math.floor((xmax + 180.0) / size) + 1)
        ys = np.arange(math.floor((ymin + 90.0) / size), math.floor((ymax + 90.0) / size) + 1)
        gx, gy = np.meshgrid(xs, ys)
        cx, cy = gx.ravel().astype(np.int64), gy.ravel().astype(np.int64)
        los: list[npt.NDArray[np.uint64]] = []
        his: list[npt.NDArray[np.uint64]] = []
        kinds: list[int] = []
        for level in range(start, finest + 1):
            if len(cx) == 0:
                break
            size = 360.0 / (1 << level)
            boxes = shapely.box(
                cx * size - 180.0 - _EPS,
                cy * size - 90.0 - _EPS,
                (cx + 1) * size - 180.0 + _EPS,
                (cy + 1) * size - 90.0 + _EPS,
            )
            touches = np.asarray(shapely.intersects(self.outer, boxes), dtype=np.bool_)
            inner = (
                np.asarray(shapely.covers(self.inner, boxes), dtype=np.bool_) & touches
                if self.inner is not None
                else np.zeros(len(cx), dtype=np.bool_)
            )
            edge = touches & ~inner
            shift = np.uint64(2 * (LEVEL - level))
            for mask, kind in ((inner, INTERIOR), (edge if level == finest else None, BOUNDARY)):
                if mask is None or not mask.any():
                    continue
                prefix = _morton(cx[mask].astype(np.uint64), cy[mask].astype(np.uint64))
                los.append(prefix << shift)
                his.append((prefix + np.uint64(1)) << shift)
                kinds.append(kind)
            if level < finest:
                ex, ey = cx[edge] * 2, cy[edge] * 2
                cx = np.concatenate([ex, ex + 1, ex, ex + 1])
                cy = np.concatenate([ey, ey, ey + 1, ey + 1])
        return los, his, kinds


class FenceIndex:
    """The compiled fences of one load: `inside` and `crossings` answer for whole batches."""

    def __init__(self, fences: Sequence[Fence], depth: int = 6) -> None:
        self.fences = tuple(fences)
        self._shapes = [_Shape(f) for f in self.fences]
        los: list[npt.NDArray[np.uint64]] = []
        his: list[npt.NDArray[np.uint64]] = []
        owner: list[Ints] = []
        kind: list[npt.NDArray[np.int8]] = []
        for i, shape in enumerate(self._shapes):
            for lo, hi, k in zip(*shape.squares(depth), strict=True):
                los.append(lo)
                his.append(hi)
                owner.append(np.full(len(lo), i, dtype=np.int64))
                kind.append(np.full(len(lo), k, dtype=np.int8))
        self.squares = sum(len(a) for a in los)
        if los:
            lo, hi, fo, ki = _merge(
                np.concatenate(los), np.concatenate(his), np.concatenate(owner), np.concatenate(kind)
            )
        else:
            lo = hi = np.zeros(0, dtype=np.uint64)
            fo = np.zeros(0, dtype=np.int64)
            ki = np.zeros(0, dtype=np.int8)
        # Disjoint segments [breaks[i], breaks[i+1]) of the Z-order line, each with its (fence, kind) pairs.
        self._breaks = np.unique(np.concatenate([np.zeros(1, dtype=np.uint64), lo, hi]))
        a = np.searchsorted(self._breaks, lo)
        b = np.searchsorted(self._breaks, hi)
        span = (b - a).astype(np.int64)
        seg = np.repeat(a, span) + _ramp(span)
        order = np.argsort(seg, kind="stable")
        self._pair_fence = np.repeat(fo, span)[order]
        self._pair_kind = np.repeat(ki, span)[order]
        counts = np.bincount(seg, minlength=len(self._breaks))
        # The most (fence, kind) pairs of any square: at most that many fences cover one point, which bounds
        # the pairs `inside` gives a batch (the dry-run sizes its chunks by it).
        self.max_overlap = int(counts.max()) if len(counts) else 0
        self._offsets = np.concatenate([np.zeros(1, dtype=np.int64), np.cumsum(counts)])
        self._tree = shapely.STRtree([s.outer for s in self._shapes]) if self._shapes else None
        self._subtrees: dict[bytes, tuple[shapely.STRtree | None, Ints]] = {}  # by fence mask (`crossings`)
        # Per fence, for the vectorised exact tests: prepared polygons, and circles' centres and radii.
        self._outer = np.array([s.outer for s in self._shapes] + [None], dtype=object)[:-1]
        centers = [f.center_lonlat or (0.0, 0.0) for f in self.fences]
        self._circle = np.array([f.center_lonlat is not None for f in self.fences], dtype=np.bool_)
        self._center_lon = np.array([c[0] for c in centers], dtype=np.float64)
        self._center_lat = np.array([c[1] for c in centers], dtype=np.float64)
        self._radius = np.array([f.radius_m or 0.0 for f in self.fences], dtype=np.float64)

    def __len__(self) -> int:
        return len(self.fences)

    def inside(self, lon: Floats, lat: Floats) -> tuple[Ints, Ints]:
        """Every (point index, fence index) pair where the fence covers the point, sorted by point."""
        if len(lon) == 0 or len(self._shapes) == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        seg = np.searchsorted(self._breaks, point_keys(lon, lat), side="right") - 1
        start = self._offsets[seg]
        counts = self._offsets[seg + 1] - start
        point = np.repeat(np.arange(len(lon), dtype=np.int64), counts)
        pos = np.repeat(start, counts) + _ramp(counts)
        fence = self._pair_fence[pos]
        exact = self._pair_kind[pos] == BOUNDARY
        keep = ~exact
        if exact.any():
            # One vectorised call per kind for all (point, fence) pairs on edges, not one per fence.
            idx = np.flatnonzero(exact)
            circle = self._circle[fence[idx]]
            if (~circle).any():
                poly = idx[~circle]
                keep[poly] = shapely.intersects_xy(
                    self._outer[fence[poly]], lon[point[poly]], lat[point[poly]]
                )
            if circle.any():
                ring = idx[circle]
                f, p = fence[ring], point[ring]
                _, _, dist = WGS84.inv(lon[p], lat[p], self._center_lon[f], self._center_lat[f])
                keep[ring] = np.asarray(dist) <= self._radius[f]
        point, fence = point[keep], fence[keep]
        order = np.lexsort((fence, point))
        return point[order], fence[order]

    def covers(self, fence: int, lon: Floats, lat: Floats) -> Bools:
        """The exact test of one fence, for checks and tests."""
        return self._shapes[fence].covers(lon, lat)

    def tree_of(self, fences: Bools | None) -> tuple[shapely.STRtree | None, Ints]:
        """The STRtree of the fences in the mask (None: all) and the fence index of each of its entries.
        Built once per mask: segments are tested only against the fences asked about (the cross rules'),
        never against every district a fleet drives through, whose exact test is the costly part."""
        if fences is None:
            return self._tree, np.arange(len(self._shapes), dtype=np.int64)
        key = fences.tobytes()
        found = self._subtrees.get(key)
        if found is None:
            chosen = np.flatnonzero(fences).astype(np.int64)
            tree = shapely.STRtree([self._shapes[i].outer for i in chosen]) if len(chosen) else None
            found = self._subtrees[key] = (tree, chosen)
        return found


def _ramp(counts: Ints) -> Ints:
    """0..c-1 for each count c, concatenated: the position inside each run of a `np.repeat`."""
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.cumsum(counts) - counts
    return np.arange(total, dtype=np.int64) - np.repeat(starts, counts)


def _merge(
    lo: npt.NDArray[np.uint64], hi: npt.NDArray[np.uint64], fence: Ints, kind: npt.NDArray[np.int8]
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64], Ints, npt.NDArray[np.int8]]:
    """Join ranges of one fence and kind that touch on the Z-order line (sibling squares)."""
    order = np.lexsort((lo, fence))
    lo, hi, fence, kind = lo[order], hi[order], fence[order], kind[order]
    new = np.ones(len(lo), dtype=np.bool_)
    new[1:] = (fence[1:] != fence[:-1]) | (kind[1:] != kind[:-1]) | (lo[1:] != hi[:-1])
    starts = np.flatnonzero(new)
    ends = np.concatenate([starts[1:], [len(lo)]]) - 1
    return lo[starts], hi[ends], fence[starts], kind[starts]
