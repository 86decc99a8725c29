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

The pieces: `fences` (fences and points), `answers` (ours, STRtree both ways, the naive loop, exact
circles), `postgis` (the PostGIS join), `detect` (the state machine).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Sequence
from typing import Any

import asyncpg
import numpy as np
import pyproj
import shapely

from tracker.tools.bench.flags import check_range, int_list
from tracker.tools.bench.geofences.answers import (
    BATCH,
    NAIVE_COVERS,
    OURS_RUNS,
    exact_circles,
    naive,
    ours,
    points_tree,
    strtree,
)
from tracker.tools.bench.geofences.detect import (
    DETECT_FIXES,
    DEVICES,
    DWELL_S,
    FIX_INTERVAL_S,
    detect_batches,
)
from tracker.tools.bench.geofences.fences import (
    CIRCLE_SHARE,
    GAP_DEG,
    SEED,
    baseline_shapes,
    build_fences,
    random_points,
    region,
)
from tracker.tools.bench.geofences.postgis import (
    PG_RUNS,
    PG_SAMPLE,
    SUBDIVIDE_VERTICES,
    enable_postgis,
    postgis_answer,
)
from tracker.tools.bench.report import DEFAULT_BASE_URL, BenchError, machine_facts, progress, write_report
from tracker.tools.bench.scratch import scratch_database

__all__ = ["bench_geofences", "build_fences", "parse_counts"]

CHECK_SAMPLE = 20_000


def bench_geofences(database_url: str | None, fences: str, points: int, out: str | None) -> tuple[str, bool]:
    """Run the benchmark; return its JSON report (also written to `out`) and whether all answers agree."""
    counts = parse_counts(fences)
    check_range("--points", points, 1_000, 100_000_000)
    report = run(database_url or DEFAULT_BASE_URL, counts, points)
    return write_report(report, out), bool(report["agree"])


def parse_counts(text: str) -> list[int]:
    """`"1000,10000"` -> [1000, 10000]; each count between 10 and 100,000."""
    return int_list("--fences", text, 10, 100_000, "1000,10000", "counts")


def run(base_url: str, counts: Sequence[int], n_points: int) -> dict[str, Any]:
    """Make a scratch database, measure every fence count, drop the database; the report."""
    started = time.perf_counter()
    cpu_started = time.process_time()
    results = []
    with scratch_database(base_url) as (db_url, pg):
        pg.update(asyncio.run(enable_postgis(db_url)))
        for n in counts:
            results.append(measure_count(db_url, n, n_points))
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
            f"{GAP_DEG} deg apart; {CIRCLE_SHARE:.0%} circles (100-1000 m) at uniform random centres",
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
        "goals": goals(results),
        "total_s": round(time.perf_counter() - started, 1),
        "total_cpu_s": round(time.process_time() - cpu_started, 1),
    }


def goals(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
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


def measure_count(db_url: str, n: int, n_points: int) -> dict[str, Any]:
    """Every answer for `n` fences and `n_points` points, their agreement and ratios."""
    progress(f"{n} fences: building fences and {n_points} points")
    fences, source = build_fences(n)
    shapes = baseline_shapes(fences)
    circle = np.array([f.center_lonlat is not None for f in fences], dtype=np.bool_)
    bbox = region(fences)
    lon, lat = random_points(bbox, n_points)
    check = min(CHECK_SAMPLE, n_points)

    mine, ours_pairs = ours(fences, lon, lat, check)
    tree, tree_pairs = strtree(shapes, lon, lat, check)
    reverse, reverse_pairs = points_tree(shapes, lon, lat, check)
    loop = naive(shapes, lon, lat)
    try:
        postgis, pg_pairs, pg_circle_pairs = asyncio.run(
            postgis_answer(db_url, fences, shapes, lon, lat, check)
        )
    except (OSError, asyncpg.PostgresError) as exc:
        raise BenchError(f"the PostGIS baseline failed on {db_url}: {exc}") from exc
    exact = exact_circles(fences, lon[:check], lat[:check])

    def polygons_only(pairs: set[tuple[int, int]]) -> set[tuple[int, int]]:
        return {p for p in pairs if not circle[p[1]]}

    ours_poly, ours_circ = polygons_only(ours_pairs), ours_pairs - polygons_only(ours_pairs)
    agree_polygons = ours_poly == polygons_only(tree_pairs) == polygons_only(reverse_pairs) == pg_pairs
    agree_circles = ours_circ == exact == pg_circle_pairs
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
            "exact_geodesic": len(exact),
            "postgis_geography": len(pg_circle_pairs),
            "strtree_128gon": len(tree_pairs) - len(polygons_only(tree_pairs)),
        },
    }
    if not correctness["agree"]:
        progress(f"{n} fences: DISAGREEMENT {json.dumps(correctness)}")
    detected = detect_batches(fences, bbox, min(DETECT_FIXES, n_points))

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 2) if a and b else None

    rate = mine["points_per_s"]
    ratios = {
        "ours_vs_naive": ratio(rate, loop["points_per_s"]),
        "ours_vs_postgis": ratio(rate, postgis["points_per_s"]),
        "ours_vs_strtree": ratio(rate, tree["points_per_s"]),
        "ours_vs_strtree_points_tree": ratio(rate, reverse["points_per_s"]),
        "ours_vs_postgis_subdivided": ratio(rate, postgis["subdivided"]["points_per_s"]),
        "ours_batches_vs_postgis": ratio(mine["batches"]["points_per_s"], postgis["points_per_s"]),
        "ours_batches_vs_postgis_subdivided": ratio(
            mine["batches"]["points_per_s"], postgis["subdivided"]["points_per_s"]
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
        "inside_fraction": mine.pop("inside_fraction"),
        "ours": mine,
        "strtree": tree,
        "strtree_points_tree": reverse,
        "naive": loop,
        "postgis": postgis,
        "correctness": correctness,
        "detect": detected,
        "ratios": ratios,
    }
