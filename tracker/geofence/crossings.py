"""Cross rules: which fences each fix's incoming segment crosses, for a whole batch at once.

A fix's incoming segment starts at the device's fix before it, or for a device's first fix of a batch at
its head (none without a head). A crossing counts when the straight segment touches the fence and both
ends are outside it. Two callers: the detector, on one batch's fixes grouped by device, and the dry-run's
triage (`triage.py`), on a whole chunk's columns, which then feeds the detector only some of the fixes
and hands it these crossings, measured on every segment.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Container, Mapping, Sequence

import numpy as np
import numpy.typing as npt
import shapely

from tracker.geo import distances_from_m
from tracker.geofence.grid import FenceIndex
from tracker.geofence.ruleset import RuleSet
from tracker.model import Fix, Head

Floats = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]
Ints = npt.NDArray[np.int64]

MAX_BOXED = 64  # cross fences up to which segments are first tested against their boxes, in numpy
_M_PER_DEG_LAT = 111_320.0  # the local plane of a circle's closest point
_BOX_EPS = 1e-7  # degrees the boxes are grown by
_boxes: weakref.WeakKeyDictionary[RuleSet, Floats] = weakref.WeakKeyDictionary()


def batch_crossings(
    rules: RuleSet,
    todo: Mapping[str, list[Fix]],
    heads: Mapping[str, Head],
    lon: Floats,
    lat: Floats,
    raw: Sequence[Container[int]],
) -> dict[int, list[int]]:
    """Fence indexes each fix's incoming segment crosses, by position in the batch (`todo`'s fixes in
    order; `raw`: the fences covering each); cross rules only."""
    if not rules.cross_mask.any():
        return {}
    n = len(lon)
    counts = np.fromiter((len(fs) for fs in todo.values()), dtype=np.int64, count=len(todo))
    starts = np.cumsum(counts) - counts
    first = np.zeros(n, dtype=np.bool_)
    first[starts] = True
    head_lon = np.full(n, np.nan)
    head_lat = np.full(n, np.nan)
    for position, device in zip(starts.tolist(), todo, strict=True):
        head = heads.get(device)
        if head is not None:
            head_lon[position], head_lat[position] = head.lon, head.lat
    return segment_crossings(rules, first, head_lon, head_lat, lon, lat, raw)


def segment_crossings(
    rules: RuleSet,
    first: Bools,
    head_lon: Floats,
    head_lat: Floats,
    lon: Floats,
    lat: Floats,
    raw: Sequence[Container[int]],
) -> dict[int, list[int]]:
    """Fence indexes each fix's incoming segment crosses, by position: fixes of one device are adjacent,
    `first` marks each device's first, whose segment starts at (head_lon, head_lat) (NaN: no head, no
    segment); `raw[i]`: the fences covering fix i. Cross rules only."""
    if not rules.cross_mask.any():
        return {}
    e = np.flatnonzero(~first | ~np.isnan(head_lon))
    if not len(e):
        return {}
    from_head = first[e]
    s_lon = np.where(from_head, head_lon[e], lon[e - 1])
    s_lat = np.where(from_head, head_lat[e], lat[e - 1])
    near = _near_boxes(rules, s_lon, s_lat, lon[e], lat[e])
    if near is not None:
        e, from_head, s_lon, s_lat = e[near], from_head[near], s_lon[near], s_lat[near]
    seg, fence = fence_crossings(rules.index, s_lon, s_lat, lon[e], lat[e], rules.cross_mask)
    if not len(seg):
        return {}
    head_inside: dict[int, set[int]] = {}  # segment index -> fences covering its head
    rows = np.unique(seg[from_head[seg]])
    if len(rows):
        hp, hf = rules.index.inside(s_lon[rows], s_lat[rows])
        for p, f in zip(hp.tolist(), hf.tolist(), strict=True):
            head_inside.setdefault(int(rows[p]), set()).add(f)
    out: dict[int, list[int]] = {}
    for j, f in zip(seg.tolist(), fence.tolist(), strict=True):
        pos = int(e[j])
        start_inside: Container[int] = head_inside.get(j, set()) if from_head[j] else raw[pos - 1]
        if f not in raw[pos] and f not in start_inside:
            out.setdefault(pos, []).append(f)
    return out


def _near_boxes(rules: RuleSet, lon0: Floats, lat0: Floats, lon1: Floats, lat1: Floats) -> Bools | None:
    """The segments whose bounding box meets a cross fence's (a grown box: circles by their radius with
    a margin), None when there are too many cross fences to test each. Making a GEOS line of every
    segment costs about a microsecond; most segments are nowhere near a bridge."""
    boxes = _boxes.get(rules)
    if boxes is None:
        boxes = _boxes[rules] = _cross_boxes(rules)
    if len(boxes) > MAX_BOXED:
        return None
    near = np.zeros(len(lon0), dtype=np.bool_)
    west, east = np.minimum(lon0, lon1), np.maximum(lon0, lon1)
    south, north = np.minimum(lat0, lat1), np.maximum(lat0, lat1)
    for b_west, b_south, b_east, b_north in boxes.tolist():
        near |= (west <= b_east) & (east >= b_west) & (south <= b_north) & (north >= b_south)
    return near


def _cross_boxes(rules: RuleSet) -> Floats:
    """(west, south, east, north) of each fence a cross rule watches, grown by a margin."""
    out = []
    for i in np.flatnonzero(rules.cross_mask).tolist():
        fence = rules.fences[i]
        if fence.center_lonlat is not None and fence.radius_m is not None:
            lon, lat = fence.center_lonlat
            reach = (fence.radius_m * 1.05 + 1.0) * 1.1  # beyond the grid's outer polygon of the circle
            dlat = reach / 110_000.0
            cos = math.cos(math.radians(min(abs(lat) + dlat, 90.0)))
            dlon = 360.0 if cos < 1e-3 else reach / (111_000.0 * cos)
            out.append((lon - dlon, lat - dlat, lon + dlon, lat + dlat))
        else:
            west, south, east, north = shapely.bounds(fence.geometry).tolist()
            out.append((west - _BOX_EPS, south - _BOX_EPS, east + _BOX_EPS, north + _BOX_EPS))
    return np.array(out, dtype=np.float64).reshape(-1, 4)


def fence_crossings(
    index: FenceIndex, lon0: Floats, lat0: Floats, lon1: Floats, lat1: Floats, fences: Bools | None = None
) -> tuple[Ints, Ints]:
    """Every (segment index, fence index) pair where the straight segment touches the fence.

    Polygons: the planar segment in lon/lat intersects the polygon. Circles: the segment comes within
    the radius (closest point found in a local plane, its distance measured on the ellipsoid).
    `fences` restricts the answer to a mask of fence indexes.
    """
    tree, chosen = index.tree_of(fences)
    if len(lon0) == 0 or tree is None:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    lines = shapely.linestrings(
        np.stack([np.column_stack([lon0, lat0]), np.column_stack([lon1, lat1])], axis=1)
    )
    seg, fence = tree.query(lines, predicate="intersects")
    seg, fence = seg.astype(np.int64), chosen[fence.astype(np.int64)]
    keep = np.ones(len(seg), dtype=np.bool_)
    for i in np.flatnonzero([index.fences[int(f)].center_lonlat is not None for f in fence]):
        f = index.fences[int(fence[i])]
        s = int(seg[i])
        assert f.center_lonlat is not None and f.radius_m is not None
        lon, lat = _closest_on_segment(f.center_lonlat, lon0[s], lat0[s], lon1[s], lat1[s])
        c_lon, c_lat = f.center_lonlat
        keep[i] = float(distances_from_m(c_lat, c_lon, np.array([lat]), np.array([lon]))[0]) <= f.radius_m
    seg, fence = seg[keep], fence[keep]
    order = np.lexsort((fence, seg))
    return seg[order], fence[order]


def _closest_on_segment(
    center_lonlat: tuple[float, float], lon0: float, lat0: float, lon1: float, lat1: float
) -> tuple[float, float]:
    """The point (lon, lat) of the segment nearest the centre, in a local plane around it (metres)."""
    c_lon, c_lat = center_lonlat
    kx = math.cos(math.radians(c_lat)) * _M_PER_DEG_LAT
    ax, ay = (lon0 - c_lon) * kx, (lat0 - c_lat) * _M_PER_DEG_LAT
    bx, by = (lon1 - c_lon) * kx, (lat1 - c_lat) * _M_PER_DEG_LAT
    dx, dy = bx - ax, by - ay
    length2 = dx * dx + dy * dy
    t = 0.0 if length2 == 0 else max(0.0, min(1.0, -(ax * dx + ay * dy) / length2))
    return lon0 + t * (lon1 - lon0), lat0 + t * (lat1 - lat0)
