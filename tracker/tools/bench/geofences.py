"""`tracker bench geofences`: how fast "which fences cover these points" is answered, against baselines.

Why baselines. An absolute figure says little on a small shared machine, so every figure is measured in
the same run, on the same fences and points, next to three other ways of answering the same question:
Shapely's STRtree (`tree.query(points, predicate="intersects")`), a naive loop (`fence.covers(Point)`
for every point and fence, unprepared) and PostGIS (`ST_Intersects` join on a GiST-indexed table). The
report gives their ratios, the process's CPU seconds per phase and PostgreSQL's backend CPU.

Fences. City districts (25 of Munich, 12 of Zurich, repaired with `make_valid` where invalid) are read
at run time from `REALDATA` and translated onto a grid of tiles (one tile = Munich beside Zurich), so
that N fences cover a region without overlapping; about 2 % of the fences are circles of 100 to 1000 m.
Without `REALDATA`, star-shaped polygons are generated instead and `fences_source` says so. Points are
uniform (seeded) over the region's bounding box.

Circles. Ours measures geodesic distance on the WGS84 ellipsoid; the baselines have no circle, so they
get the 128-gon through points at the radius (`tracker.geo.circle_polygon`): it is inscribed, so it
misses slivers near the edge. The correctness check compares polygons across all four answers, and
circles of ours with the exact geodesic distance (and PostGIS geography `ST_DWithin`).

Then the whole state machine: `detect()` on batches of 5,000 fixes of 1,000 moving devices, with
enter, exit and dwell rules on every fence: what the ingest loop pays per batch.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import statistics
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import numpy as np
import numpy.typing as npt
import pyproj
import shapely
from shapely.geometry import Point, Polygon, shape
from shapely.geometry.base import BaseGeometry

from tracker.geo import circle_polygon, distances_from_m
from tracker.geofence.detect import RuleSet, detect
from tracker.geofence.grid import CIRCLE_VERTICES, FenceIndex
from tracker.geofence.polygons import repair
from tracker.model import Fence, FenceState, Fix, Head, Rule, StateKey
from tracker.tools.bench.base import (
    CLK_TCK,
    DEFAULT_BASE_URL,
    BenchError,
    machine_facts,
    machine_jiffies,
    percentile,
    proc_cpu_s,
    progress,
    scratch_database,
)

REALDATA = Path("/work/shared/realdata/geofences")
CITIES = ("munich_stadtbezirke.geojson", "zurich_stadtkreise.geojson")
SEED = 20240611
BATCH = 5_000  # the ingest loop's largest batch
CIRCLE_SHARE = 0.02
OURS_RUNS = 3
NAIVE_COVERS = 500_000  # covers() calls of the naive loop: 500 points at 1,000 fences, 50 at 10,000
PG_SAMPLE = 200_000
PG_RUNS = 2
SUBDIVIDE_VERTICES = 64
CHECK_SAMPLE = 20_000
DEVICES = 1_000
FIX_INTERVAL_S = 5
DETECT_FIXES = 200_000
DWELL_S = 60.0
_GAP_DEG = 0.005  # between neighbouring cities of the tiling

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
T = TypeVar("T")


# --- the command -------------------------------------------------------------------------------------


def bench_geofences(database_url: str | None, fences: str, points: int, out: str | None) -> tuple[str, bool]:
    """Run the benchmark; return its JSON report (also written to `out`) and whether all answers agree."""
    counts = parse_counts(fences)
    if not 1_000 <= points <= 100_000_000:
        raise BenchError(f"--points must be between 1000 and 100000000; got {points}")
    report = run(database_url or DEFAULT_BASE_URL, counts, points)
    text = json.dumps(report, indent=2)
    if out:
        Path(out).write_text(text + "\n")
        progress(f"report written to {out}")
    return text, bool(report["agree"])


def parse_counts(text: str) -> list[int]:
    """`"1000,10000"` -> [1000, 10000]; each count between 10 and 100,000."""
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise BenchError(
            f"--fences must be comma-separated integers such as 1000,10000; got {text!r}"
        ) from None
    if not counts or any(not 10 <= c <= 100_000 for c in counts):
        raise BenchError(f"--fences counts must be between 10 and 100000; got {text!r}")
    return counts


def run(base_url: str, counts: Sequence[int], n_points: int) -> dict[str, Any]:
    """Make a scratch database, measure every fence count, drop the database; the report."""
    started = time.perf_counter()
    cpu_started = time.process_time()
    results = []
    with scratch_database(base_url) as (db_url, pg):
        pg.update(asyncio.run(_enable_postgis(db_url)))
        for n in counts:
            results.append(_measure(db_url, n, n_points))
    agree = all(r["correctness"]["agree"] for r in results)
    return {
        "machine": {
            **machine_facts(),
            "numpy": np.__version__,
            "shapely": shapely.__version__,
            "geos": shapely.geos_version_string,
            "pyproj": pyproj.__version__,
            "loadavg_at_start": list(os.getloadavg()),
            **pg,
        },
        "settings": {
            "fences": list(counts),
            "points": n_points,
            "seed": SEED,
            "batch": BATCH,
            "fences_source": results[0]["fences_source"] if results else None,
            "layout": "each tile is Munich's 25 districts beside Zurich's 12, tiles on a square grid "
            f"{_GAP_DEG} deg apart; {CIRCLE_SHARE:.0%} circles (100-1000 m) at uniform random centres",
            "points_layout": "uniform random over the bounding box of all fences",
            "ours": f"FenceIndex compile, then inside() on all points, best and median of {OURS_RUNS}; "
            f"also on consecutive batches of {BATCH}",
            "strtree": "shapely.STRtree(polygons).query(shapely.points(lon, lat), predicate='intersects'), "
            "one run on all points, shapely.points() included; circles as geodesic 128-gons",
            "strtree_points_tree": "the reverse: STRtree over the points, queried with the (prepared) "
            "fences; one run on all points, tree build included",
            "naive": f"for each point, for each fence, unprepared fence.covers(Point); "
            f"{NAIVE_COVERS} covers() calls per fence count; circles as geodesic 128-gons",
            "postgis": f"first {PG_SAMPLE} points COPYed into a table; SELECT count(*) FROM pts p JOIN "
            f"fences f ON ST_Intersects(f.geom, p.geom), GiST index on fences, best of {PG_RUNS}; "
            "circles as the same 128-gons; default planner settings (parallel workers allowed); "
            f"'subdivided': the same on ST_Subdivide(geom, {SUBDIVIDE_VERTICES}) pieces, distinct pairs",
            "correctness": f"first {CHECK_SAMPLE} points: polygon pairs of ours, STRtree and PostGIS "
            "(and the points tree) must be identical; circle pairs of ours must equal the exact geodesic "
            "distance test (pyproj) and PostGIS geography ST_DWithin",
            "detect": f"{DEVICES} devices in straight lines at 5-30 m/s, a fix every {FIX_INTERVAL_S} s, "
            f"batches of {BATCH} fixes (5 per device), rules enter, exit and dwell ({DWELL_S:g} s) on every "
            "fence; only detect() is timed",
            "cpu": "cpu_s: this process's time.process_time() per phase; PostgreSQL: the backend's "
            "/proc CPU and the whole machine's busy CPU during the query (parallel workers included)",
        },
        "results": results,
        "agree": agree,
        "goals": _goals(results),
        "total_s": round(time.perf_counter() - started, 1),
        "total_cpu_s": round(time.process_time() - cpu_started, 1),
    }


def _goals(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The issue's goals, read off the 1,000-fence result when there is one."""
    r = next((r for r in results if r["fences"] == 1000), None)
    if r is None:
        return {"note": "no 1000-fence result"}
    ratios = r["ratios"]
    return {
        "points_per_s_ge_1M_at_1000_fences": r["ours"]["points_per_s"] >= 1e6,
        "ge_100x_naive": (ratios["ours_vs_naive"] or 0) >= 100,
        "ge_20x_postgis": (ratios["ours_vs_postgis"] or 0) >= 20,
    }


# --- fences and points -------------------------------------------------------------------------------


def build_fences(n: int, realdata: Path = REALDATA, seed: int = SEED) -> tuple[list[Fence], str]:
    """`n` fences (about 2 % circles) tiled over a region, and where the polygons came from."""
    rng = np.random.default_rng(seed)
    n_circles = max(1, round(n * CIRCLE_SHARE))
    cities = _real_cities(realdata)
    if cities is not None:
        polygons = _tile(cities, n - n_circles)
        source = f"real: {', '.join(CITIES)} from {realdata}, tiled"
    else:
        polygons = _stars(n - n_circles, rng)
        source = f"generated: star polygons (64-512 vertices, 1-5 km); {realdata} is missing"
    fences = [Fence(f"p{i}", None, (), geometry=g, source="bench") for i, g in enumerate(polygons)]
    xmin, ymin, xmax, ymax = shapely.total_bounds(polygons)
    for i in range(n_circles):
        center = (float(rng.uniform(xmin, xmax)), float(rng.uniform(ymin, ymax)))
        fences.append(Fence(f"c{i}", None, (), center_lonlat=center, radius_m=float(rng.uniform(100, 1000))))
    return fences, source


def _real_cities(folder: Path) -> list[list[BaseGeometry]] | None:
    """The district polygons of each city file, invalid ones repaired; None when a file is missing."""
    cities = []
    for name in CITIES:
        path = folder / name
        if not path.is_file():
            return None
        doc = json.loads(path.read_text())
        shapes = [shape(f["geometry"]) for f in doc["features"]]
        cities.append([g if g.is_valid else repair(g) for g in shapes])  # as the loader does
    return cities


def _tile(cities: Sequence[Sequence[BaseGeometry]], n: int) -> list[BaseGeometry]:
    """The first `n` polygons of a square grid of tiles, each tile the cities side by side."""
    tile: list[BaseGeometry] = []
    x = 0.0
    height = 0.0
    for districts in cities:
        xmin, ymin, xmax, ymax = shapely.total_bounds(districts)
        dx, dy = x - xmin, -ymin
        tile.extend(shapely.transform(g, lambda c, dx=dx, dy=dy: c + [dx, dy]) for g in districts)
        x += xmax - xmin + _GAP_DEG
        height = max(height, ymax - ymin + _GAP_DEG)
    tiles = math.ceil(n / len(tile))
    cols = math.ceil(math.sqrt(tiles))
    # Munich's south-west corner: the region starts where the real districts are.
    x0, y0 = 11.36, 48.06
    out: list[BaseGeometry] = []
    for t in range(tiles):
        ox, oy = x0 + (t % cols) * x, y0 + (t // cols) * height
        for g in tile:
            if len(out) == n:
                break
            out.append(shapely.transform(g, lambda c, ox=ox, oy=oy: c + [ox, oy]))
    return out


def _stars(n: int, rng: np.random.Generator) -> list[BaseGeometry]:
    """`n` star-shaped polygons (64-512 vertices, 1-5 km), one per cell of a square grid."""
    cell = 2 * 5_000 / 111_320 * 1.6  # degrees; wide enough for a 5 km star in longitude at 50°N
    cols = math.ceil(math.sqrt(n))
    out: list[BaseGeometry] = []
    for i in range(n):
        cx, cy = 11.0 + (i % cols + 0.5) * cell, 48.0 + (i // cols + 0.5) * cell / 1.6
        k = int(rng.integers(32, 257)) * 2
        radius = rng.uniform(1_000, 5_000)
        r = radius * np.where(np.arange(k) % 2 == 0, 1.0, rng.uniform(0.4, 0.9, k))
        a = np.linspace(0, 2 * math.pi, k, endpoint=False)
        lat = cy + r * np.sin(a) / 111_320
        lon = cx + r * np.cos(a) / (111_320 * math.cos(math.radians(cy)))
        out.append(Polygon(np.column_stack([lon, lat])))
    return out


def baseline_shapes(fences: Sequence[Fence]) -> list[BaseGeometry]:
    """Fresh, unprepared geometries for the baselines: polygons as they are, circles as 128-gons.

    Fresh because `FenceIndex` prepares the fences' own geometries, which would speed up the naive loop.
    """
    shapes = [
        circle_polygon(f.center_lonlat[1], f.center_lonlat[0], f.radius_m, CIRCLE_VERTICES)
        if f.center_lonlat is not None and f.radius_m is not None
        else f.geometry
        for f in fences
    ]
    return list(shapely.from_wkb(shapely.to_wkb(shapes)))


def region(fences: Sequence[Fence]) -> tuple[float, float, float, float]:
    """The bounding box of all fences (circles by their 128-gons)."""
    xmin, ymin, xmax, ymax = shapely.total_bounds(baseline_shapes(fences))
    return float(xmin), float(ymin), float(xmax), float(ymax)


def random_points(bbox: tuple[float, float, float, float], n: int, seed: int = SEED) -> tuple[Floats, Floats]:
    """`n` uniform points over `bbox`: (lon, lat)."""
    rng = np.random.default_rng(seed + 1)
    return rng.uniform(bbox[0], bbox[2], n), rng.uniform(bbox[1], bbox[3], n)


# --- one fence count ---------------------------------------------------------------------------------


class _Clock:
    """Wall and process CPU seconds of one phase."""

    def __init__(self) -> None:
        self.wall0 = time.perf_counter()
        self.cpu0 = time.process_time()

    def wall(self) -> float:
        return time.perf_counter() - self.wall0

    def cpu(self) -> float:
        return round(time.process_time() - self.cpu0, 3)


def _timed(fn: Callable[[], T]) -> tuple[T, float]:
    t = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - t


def _measure(db_url: str, n: int, n_points: int) -> dict[str, Any]:
    progress(f"{n} fences: building fences and {n_points} points")
    fences, source = build_fences(n)
    shapes = baseline_shapes(fences)
    circle = np.array([f.center_lonlat is not None for f in fences], dtype=np.bool_)
    bbox = region(fences)
    lon, lat = random_points(bbox, n_points)
    check = min(CHECK_SAMPLE, n_points)

    ours, ours_pairs = _ours(fences, lon, lat, check)
    strtree, tree_pairs = _strtree(shapes, lon, lat, check)
    reverse, reverse_pairs = _points_tree(shapes, lon, lat, check)
    naive = _naive(shapes, lon, lat)
    try:
        postgis, pg_pairs, pg_circle_pairs = asyncio.run(_postgis(db_url, fences, shapes, lon, lat, check))
    except (OSError, asyncpg.PostgresError) as exc:
        raise BenchError(f"the PostGIS baseline failed on {db_url}: {exc}") from exc
    exact_circles = _exact_circles(fences, lon[:check], lat[:check])

    def polygons_only(pairs: set[tuple[int, int]]) -> set[tuple[int, int]]:
        return {p for p in pairs if not circle[p[1]]}

    ours_poly, ours_circ = polygons_only(ours_pairs), ours_pairs - polygons_only(ours_pairs)
    agree_polygons = ours_poly == polygons_only(tree_pairs) == polygons_only(reverse_pairs) == pg_pairs
    agree_circles = ours_circ == exact_circles == pg_circle_pairs
    correctness = {
        "points": check,
        "agree": agree_polygons and agree_circles,
        "polygons_agree": agree_polygons,
        "circles_agree": agree_circles,
        "polygon_pairs": {
            "ours": len(ours_poly),
            "strtree": len(polygons_only(tree_pairs)),
            "strtree_points_tree": len(polygons_only(reverse_pairs)),
            "postgis": len(pg_pairs),
            "ours_not_postgis": len(ours_poly - pg_pairs),
            "postgis_not_ours": len(pg_pairs - ours_poly),
        },
        "circle_pairs": {
            "ours": len(ours_circ),
            "exact_geodesic": len(exact_circles),
            "postgis_geography": len(pg_circle_pairs),
            "strtree_128gon": len(tree_pairs) - len(polygons_only(tree_pairs)),
        },
    }
    if not correctness["agree"]:
        progress(f"{n} fences: DISAGREEMENT {json.dumps(correctness)}")
    detected = _detect(fences, bbox, min(DETECT_FIXES, n_points))

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 2) if a and b else None

    rate = ours["points_per_s"]
    ratios = {
        "ours_vs_naive": ratio(rate, naive["points_per_s"]),
        "ours_vs_postgis": ratio(rate, postgis["points_per_s"]),
        "ours_vs_strtree": ratio(rate, strtree["points_per_s"]),
        "ours_vs_strtree_points_tree": ratio(rate, reverse["points_per_s"]),
        "ours_vs_postgis_subdivided": ratio(rate, postgis["subdivided"]["points_per_s"]),
        "ours_batches_vs_postgis": ratio(ours["batches"]["points_per_s"], postgis["points_per_s"]),
        "ours_batches_vs_postgis_subdivided": ratio(
            ours["batches"]["points_per_s"], postgis["subdivided"]["points_per_s"]
        ),
    }
    progress(f"{n} fences: ratios {ratios}")
    return {
        "fences": n,
        "polygons": int((~circle).sum()),
        "circles": int(circle.sum()),
        "vertices": int(
            shapely.get_num_coordinates([f.geometry for f in fences if f.geometry is not None]).sum()
        ),
        "fences_source": source,
        "region_lonlat": [round(v, 4) for v in bbox],
        "points": n_points,
        "inside_fraction": ours.pop("inside_fraction"),
        "ours": ours,
        "strtree": strtree,
        "strtree_points_tree": reverse,
        "naive": naive,
        "postgis": postgis,
        "correctness": correctness,
        "detect": detected,
        "ratios": ratios,
    }


def _pairs(points: Ints, fences: Ints, limit: int) -> set[tuple[int, int]]:
    keep = points < limit
    return set(zip(points[keep].tolist(), fences[keep].tolist(), strict=True))


def _ours(fences: Sequence[Fence], lon: Floats, lat: Floats, check: int) -> tuple[dict[str, Any], set[Any]]:
    clock = _Clock()
    index, compile_s = _timed(lambda: FenceIndex(fences))
    compile_cpu = clock.cpu()
    runs = []
    pairs: tuple[Ints, Ints] = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    for _ in range(OURS_RUNS):
        pairs, wall = _timed(lambda: index.inside(lon, lat))
        runs.append(wall)
    n = len(lon)
    batch_ms = []
    for start in range(0, n, BATCH):
        _, wall = _timed(partial(index.inside, lon[start : start + BATCH], lat[start : start + BATCH]))
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


def _strtree(
    shapes: Sequence[BaseGeometry], lon: Floats, lat: Floats, check: int
) -> tuple[dict[str, Any], set[Any]]:
    clock = _Clock()
    tree, build_s = _timed(lambda: shapely.STRtree(shapes))
    found, wall = _timed(lambda: tree.query(shapely.points(lon, lat), predicate="intersects"))
    progress(f"strtree: {len(lon) / wall:,.0f} points/s")
    result = {
        "build_s": round(build_s, 4),
        "points_per_s": round(len(lon) / wall),
        "query_s": round(wall, 3),
        "pairs": int(found.shape[1]),
        "cpu_s": clock.cpu(),
    }
    return result, _pairs(found[0].astype(np.int64), found[1].astype(np.int64), check)


def _points_tree(
    shapes: Sequence[BaseGeometry], lon: Floats, lat: Floats, check: int
) -> tuple[dict[str, Any], set[Any]]:
    """The other way round: index the points, query with each fence (Shapely prepares the query side)."""
    clock = _Clock()

    def query() -> Any:
        tree = shapely.STRtree(shapely.points(lon, lat))
        return tree.query(shapes, predicate="intersects")

    found, wall = _timed(query)
    progress(f"strtree over points: {len(lon) / wall:,.0f} points/s")
    result = {
        "points_per_s": round(len(lon) / wall),
        "build_and_query_s": round(wall, 3),
        "pairs": int(found.shape[1]),
        "cpu_s": clock.cpu(),
    }
    return result, _pairs(found[1].astype(np.int64), found[0].astype(np.int64), check)


def _naive(shapes: Sequence[BaseGeometry], lon: Floats, lat: Floats) -> dict[str, Any]:
    clock = _Clock()
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


def _exact_circles(fences: Sequence[Fence], lon: Floats, lat: Floats) -> set[tuple[int, int]]:
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


# --- PostGIS -----------------------------------------------------------------------------------------


async def _enable_postgis(db_url: str) -> dict[str, Any]:
    conn = await asyncpg.connect(db_url, timeout=10)
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")
        return {
            "postgis": await conn.fetchval("SELECT postgis_lib_version()"),
            "max_parallel_workers_per_gather": await conn.fetchval("SHOW max_parallel_workers_per_gather"),
        }
    finally:
        await conn.close()


_FENCES_TABLE = """
DROP TABLE IF EXISTS fences, fences_sub, pts, pts_raw;
CREATE TABLE fences (id int PRIMARY KEY, circle bool NOT NULL, geom geometry(Geometry, 4326) NOT NULL,
                     center geography(Point, 4326), radius_m float8);
"""


async def _postgis(
    db_url: str, fences: Sequence[Fence], shapes: Sequence[BaseGeometry], lon: Floats, lat: Floats, check: int
) -> tuple[dict[str, Any], set[tuple[int, int]], set[tuple[int, int]]]:
    """Load, time the join, read the check sample's pairs: (figures, polygon pairs, circle pairs)."""
    sample = min(PG_SAMPLE, len(lon))
    conn = await asyncpg.connect(db_url, timeout=10)
    try:
        clock = _Clock()
        load = time.perf_counter()
        await conn.execute(_FENCES_TABLE)
        wkb = shapely.to_wkb(shapes)
        await conn.executemany(
            "INSERT INTO fences VALUES ($1, $2, ST_SetSRID(ST_GeomFromWKB($3), 4326), "
            "CASE WHEN $2 THEN ST_MakePoint($4, $5)::geography END, $6)",
            [
                (
                    i,
                    f.center_lonlat is not None,
                    wkb[i],
                    f.center_lonlat[0] if f.center_lonlat else None,
                    f.center_lonlat[1] if f.center_lonlat else None,
                    f.radius_m,
                )
                for i, f in enumerate(fences)
            ],
        )
        await conn.execute("CREATE INDEX ON fences USING gist (geom); ANALYZE fences")
        fences_load_s = time.perf_counter() - load
        await conn.execute("CREATE TABLE pts_raw (id int, lon float8, lat float8)")
        await conn.copy_records_to_table(
            "pts_raw",
            records=zip(range(sample), lon[:sample].tolist(), lat[:sample].tolist(), strict=True),
        )
        await conn.execute(
            "CREATE TABLE pts AS SELECT id, ST_SetSRID(ST_MakePoint(lon, lat), 4326)::geometry(Point, 4326) "
            "AS geom FROM pts_raw; ANALYZE pts"
        )
        load_s = time.perf_counter() - load
        progress(f"postgis: loaded {len(fences)} fences and {sample} points in {load_s:.1f} s")
        query = "SELECT count(*) FROM pts p JOIN fences f ON ST_Intersects(f.geom, p.geom)"
        plan = await conn.fetchval("EXPLAIN (FORMAT JSON) " + query)
        backend = int(await conn.fetchval("SELECT pg_backend_pid()"))
        runs = []
        backend_cpu = []
        machine_busy = []
        count = 0
        for _ in range(PG_RUNS):
            cpu0, jiffies0 = proc_cpu_s(backend), machine_jiffies()
            count, wall = await _timed_async(conn.fetchval(query))
            cpu1, jiffies1 = proc_cpu_s(backend), machine_jiffies()
            runs.append(wall)
            backend_cpu.append(round(cpu1 - cpu0, 2) if cpu0 is not None and cpu1 is not None else None)
            machine_busy.append(
                round((jiffies1[0] - jiffies0[0]) / CLK_TCK, 2) if jiffies0 and jiffies1 else None
            )
        best = min(runs)
        progress(f"postgis: {sample / best:,.0f} points/s (best of {PG_RUNS})")
        subdivided = await _postgis_subdivided(conn, sample, int(count))
        rows = await conn.fetch(
            "SELECT p.id, f.id FROM pts p JOIN fences f ON ST_Intersects(f.geom, p.geom) "
            "WHERE p.id < $1 AND NOT f.circle",
            check,
        )
        circle_rows = await conn.fetch(
            "SELECT p.id, f.id FROM pts p JOIN fences f ON f.circle "
            "AND ST_DWithin(f.center, p.geom::geography, f.radius_m) WHERE p.id < $1",
            check,
        )
        figures = {
            "sample_points": sample,
            "points_per_s": round(sample / best),
            "runs_s": [round(r, 3) for r in runs],
            "pairs": int(count),
            "load_s": round(load_s, 2),
            "fences_load_and_index_s": round(fences_load_s, 2),
            "plan": _plan_summary(json.loads(plan)[0]["Plan"]),
            "backend_cpu_s": backend_cpu,
            "machine_busy_cpu_s": machine_busy,
            "client_cpu_s": clock.cpu(),
            "subdivided": subdivided,
        }
        return (
            figures,
            {(int(r[0]), int(r[1])) for r in rows},
            {(int(r[0]), int(r[1])) for r in circle_rows},
        )
    finally:
        await conn.close()


async def _postgis_subdivided(conn: Any, sample: int, expected: int) -> dict[str, Any]:
    """The usual PostGIS remedy for big polygons: the same join on `ST_Subdivide` pieces (distinct pairs)."""
    made = time.perf_counter()
    await conn.execute(
        f"CREATE TABLE fences_sub AS SELECT id, ST_Subdivide(geom, {SUBDIVIDE_VERTICES}) AS geom "
        "FROM fences; "
        "CREATE INDEX ON fences_sub USING gist (geom); ANALYZE fences_sub"
    )
    made_s = time.perf_counter() - made
    query = (
        "SELECT count(*) FROM (SELECT DISTINCT p.id, f.id FROM pts p "
        "JOIN fences_sub f ON ST_Intersects(f.geom, p.geom)) AS pairs"
    )
    runs = []
    count = 0
    for _ in range(PG_RUNS):
        count, wall = await _timed_async(conn.fetchval(query))
        runs.append(wall)
    if int(count) != expected:
        raise BenchError(f"subdivided fences give {count} pairs, whole fences {expected}")
    progress(f"postgis subdivided: {sample / min(runs):,.0f} points/s (best of {PG_RUNS})")
    return {
        "max_vertices": SUBDIVIDE_VERTICES,
        "pieces": int(await conn.fetchval("SELECT count(*) FROM fences_sub")),
        "points_per_s": round(sample / min(runs)),
        "runs_s": [round(r, 3) for r in runs],
        "subdivide_and_index_s": round(made_s, 2),
        "plan": _plan_summary(json.loads(await conn.fetchval("EXPLAIN (FORMAT JSON) " + query))[0]["Plan"]),
    }


async def _timed_async(awaitable: Any) -> tuple[Any, float]:
    t = time.perf_counter()
    result = await awaitable
    return result, time.perf_counter() - t


def _plan_summary(node: dict[str, Any]) -> str:
    """`Aggregate > Gather(2) > Nested Loop[Seq Scan pts, Index Scan fences]`: the plan in one line."""
    label = str(node["Node Type"])
    if "Relation Name" in node:
        label += f" {node['Relation Name']}"
    if "Workers Planned" in node:
        label += f"({node['Workers Planned']})"
    children = [_plan_summary(c) for c in node.get("Plans", [])]
    if len(children) == 1:
        return f"{label} > {children[0]}"
    if children:
        return f"{label}[{', '.join(children)}]"
    return label


# --- the state machine -------------------------------------------------------------------------------


def _detect(fences: Sequence[Fence], bbox: tuple[float, float, float, float], n_fixes: int) -> dict[str, Any]:
    """`detect()` on batches of fixes of moving devices; state carried from batch to batch."""
    clock = _Clock()
    ids = tuple(f.id for f in fences)
    rules = [
        Rule("enter", "enter", ids),
        Rule("exit", "exit", ids),
        Rule("dwell", "dwell", ids, dwell_s=DWELL_S),
    ]
    ruleset, compile_s = _timed(lambda: RuleSet(fences, rules))
    rng = np.random.default_rng(SEED + 2)
    lon0 = rng.uniform(bbox[0], bbox[2], DEVICES)
    lat0 = rng.uniform(bbox[1], bbox[3], DEVICES)
    heading = rng.uniform(0, 2 * math.pi, DEVICES)
    speed = rng.uniform(5, 30, DEVICES)
    per_batch = BATCH // DEVICES
    batches = max(1, n_fixes // BATCH)
    t0 = 1_700_000_000_000
    devices = [f"dev-{i:04d}" for i in range(DEVICES)]
    tracks: dict[str, dict[StateKey, FenceState]] = {}
    heads: dict[str, Head] = {}
    events: dict[str, int] = {}
    batch_ms = []
    for b in range(batches):
        fixes: list[Fix] = []
        for k in range(b * per_batch, (b + 1) * per_batch):
            metres = speed * k * FIX_INTERVAL_S
            lat = lat0 + metres * np.cos(heading) / 111_320
            lon = lon0 + metres * np.sin(heading) / (111_320 * np.cos(np.radians(lat)))
            ts = t0 + k * FIX_INTERVAL_S * 1000
            fixes.extend(
                Fix(device=d, fleet="bench", ts=ts, lat=float(y), lon=float(x), speed=float(s))
                for d, x, y, s in zip(devices, lon, lat, speed, strict=True)
            )
        found, wall = _timed(partial(detect, ruleset, tracks, heads, fixes))
        batch_ms.append(wall * 1000)
        heads.update(found.heads)
        for device, changed in found.state_changes.items():
            mine = tracks.setdefault(device, {})
            for key, track in changed.items():
                if track is None:
                    mine.pop(key, None)
                else:
                    mine[key] = track
            if not mine:
                del tracks[device]
        for event in found.events:
            events[event.type] = events.get(event.type, 0) + 1
    ordered = sorted(batch_ms)
    total = len(batch_ms) * per_batch * DEVICES
    rate = total / (sum(batch_ms) / 1000)
    progress(f"detect: {rate:,.0f} fixes/s, {sum(events.values())} events")
    return {
        "ruleset_compile_s": round(compile_s, 3),
        "rules": len(rules),
        "devices": DEVICES,
        "batch": per_batch * DEVICES,
        "batches": len(batch_ms),
        "fixes_per_s": round(rate),
        "p50_batch_ms": round(percentile(ordered, 50) or 0.0, 2),
        "p99_batch_ms": round(percentile(ordered, 99) or 0.0, 2),
        "max_batch_ms": round(ordered[-1], 2),
        "events": events,
        "devices_with_tracks_at_end": len(tracks),
        "cpu_s": clock.cpu(),
    }
