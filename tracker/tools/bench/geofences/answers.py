"""Which fences cover which points, answered in this process four ways: ours (`FenceIndex`), Shapely's
STRtree over the fences and over the points, a naive loop of unprepared `covers()`; and the exact
geodesic answer for circles, the reference of the correctness check.

Policy: each answer is timed on its own with its process CPU seconds (`Clock`); ours is the best and the
median of OURS_RUNS, and also timed on consecutive batches of BATCH points, the ingest loop's size. The
(point, fence) pairs of the first `check` points are returned for the correctness check.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import shapely
from shapely.geometry import Point
from shapely.geometry.base import BaseGeometry

from tracker.geo import circle_polygon, distances_from_m
from tracker.geofence.grid import CIRCLE_VERTICES, FenceIndex
from tracker.model import Fence
from tracker.tools.bench.geofences.fences import Floats
from tracker.tools.bench.report import BenchError, percentile, progress

BATCH = 5_000  # the ingest loop's largest batch
OURS_RUNS = 3
NAIVE_COVERS = 500_000  # covers() calls of the naive loop: 500 points at 1,000 fences, 50 at 10,000

Ints = npt.NDArray[np.int64]
T = TypeVar("T")


class Clock:
    """Wall and process CPU seconds of one phase."""

    def __init__(self) -> None:
        self.wall0 = time.perf_counter()
        self.cpu0 = time.process_time()

    def wall(self) -> float:
        return time.perf_counter() - self.wall0

    def cpu(self) -> float:
        return round(time.process_time() - self.cpu0, 3)


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    t = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - t


def _pairs(points: Ints, fences: Ints, limit: int) -> set[tuple[int, int]]:
    keep = points < limit
    return set(zip(points[keep].tolist(), fences[keep].tolist(), strict=True))


def ours(fences: Sequence[Fence], lon: Floats, lat: Floats, check: int) -> tuple[dict[str, Any], set[Any]]:
    clock = Clock()
    index, compile_s = timed(lambda: FenceIndex(fences))
    compile_cpu = clock.cpu()
    runs = []
    pairs: tuple[Ints, Ints] = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    for _ in range(OURS_RUNS):
        pairs, wall = timed(lambda: index.inside(lon, lat))
        runs.append(wall)
    n = len(lon)
    batch_ms = []
    for start in range(0, n, BATCH):
        _, wall = timed(partial(index.inside, lon[start : start + BATCH], lat[start : start + BATCH]))
        batch_ms.append(wall * 1000)
    ordered = sorted(batch_ms)
    best, median = min(runs), statistics.median(runs)
    progress(f"ours: compile {compile_s:.2f} s, {n / best:,.0f} points/s (best of {OURS_RUNS})")
    result = {
        "compile_s": round(compile_s, 3),
        "compile_cpu_s": compile_cpu,
        "squares": index.squares,
        "points_per_s": round(n / best),
        "points_per_s_median": round(n / median),
        "runs_s": [round(r, 4) for r in runs],
        "pairs": len(pairs[0]),
        "inside_fraction": round(len(np.unique(pairs[0])) / n, 4),
        "batches": {
            "size": BATCH,
            "count": len(batch_ms),
            "points_per_s": round(n / (sum(batch_ms) / 1000)),
            "p50_ms": round(percentile(ordered, 50) or 0.0, 3),
            "p99_ms": round(percentile(ordered, 99) or 0.0, 3),
            "max_ms": round(ordered[-1], 3),
        },
        "cpu_s": clock.cpu(),
    }
    return result, _pairs(pairs[0], pairs[1], check)


def strtree(
    shapes: Sequence[BaseGeometry], lon: Floats, lat: Floats, check: int
) -> tuple[dict[str, Any], set[Any]]:
    clock = Clock()
    tree, build_s = timed(lambda: shapely.STRtree(shapes))
    found, wall = timed(lambda: tree.query(shapely.points(lon, lat), predicate="intersects"))
    progress(f"strtree: {len(lon) / wall:,.0f} points/s")
    result = {
        "build_s": round(build_s, 4),
        "points_per_s": round(len(lon) / wall),
        "query_s": round(wall, 3),
        "pairs": int(found.shape[1]),
        "cpu_s": clock.cpu(),
    }
    return result, _pairs(found[0].astype(np.int64), found[1].astype(np.int64), check)


def points_tree(
    shapes: Sequence[BaseGeometry], lon: Floats, lat: Floats, check: int
) -> tuple[dict[str, Any], set[Any]]:
    """The other way round: index the points, query with each fence (Shapely prepares the query side)."""
    clock = Clock()

    def query() -> Any:
        tree = shapely.STRtree(shapely.points(lon, lat))
        return tree.query(shapes, predicate="intersects")

    found, wall = timed(query)
    progress(f"strtree over points: {len(lon) / wall:,.0f} points/s")
    result = {
        "points_per_s": round(len(lon) / wall),
        "build_and_query_s": round(wall, 3),
        "pairs": int(found.shape[1]),
        "cpu_s": clock.cpu(),
    }
    return result, _pairs(found[1].astype(np.int64), found[0].astype(np.int64), check)


def naive(shapes: Sequence[BaseGeometry], lon: Floats, lat: Floats) -> dict[str, Any]:
    clock = Clock()
    sample = min(len(lon), max(10, NAIVE_COVERS // len(shapes)))
    if any(shapely.is_prepared(shapes)):
        raise BenchError("the naive baseline's fences are prepared; it would not be naive")
    hits = 0
    start = time.perf_counter()
    for i in range(sample):
        point = Point(float(lon[i]), float(lat[i]))
        for fence in shapes:
            if fence.covers(point):
                hits += 1
    wall = time.perf_counter() - start
    progress(f"naive: {sample / wall:,.0f} points/s on {sample} points")
    return {
        "sample_points": sample,
        "points_per_s": round(sample / wall, 1),
        "covers_calls_per_s": round(sample * len(shapes) / wall),
        "pairs": hits,
        "cpu_s": clock.cpu(),
    }


def exact_circles(fences: Sequence[Fence], lon: Floats, lat: Floats) -> set[tuple[int, int]]:
    """(point, fence) pairs of the circles by geodesic distance, candidates from a generous box."""
    out: set[tuple[int, int]] = set()
    for j, f in enumerate(fences):
        if f.center_lonlat is None or f.radius_m is None:
            continue
        c_lon, c_lat = f.center_lonlat
        xmin, ymin, xmax, ymax = circle_polygon(c_lat, c_lon, f.radius_m * 1.2 + 10, CIRCLE_VERTICES).bounds
        near = np.flatnonzero((lon >= xmin) & (lon <= xmax) & (lat >= ymin) & (lat <= ymax))
        hit = near[distances_from_m(c_lat, c_lon, lat[near], lon[near]) <= f.radius_m]
        out.update((int(i), j) for i in hit)
    return out
