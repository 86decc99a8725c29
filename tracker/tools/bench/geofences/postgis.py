"""The PostGIS answer: the same fences and the first PG_SAMPLE points in tables of the scratch database,
`ST_Intersects` joined on a GiST index, best of PG_RUNS; the same on `ST_Subdivide` pieces, PostGIS's
usual remedy for big polygons; circles by geography `ST_DWithin`.

Policy: default planner settings (parallel workers allowed), so the backend's /proc CPU and the whole
machine's busy CPU are both reported; the plan goes into the report in one line.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import asyncpg
import shapely
from shapely.geometry.base import BaseGeometry

from tracker.model import Fence
from tracker.tools.bench.geofences.answers import Clock
from tracker.tools.bench.geofences.fences import Floats
from tracker.tools.bench.procfs import CLK_TCK, machine_jiffies, proc_cpu_s
from tracker.tools.bench.report import BenchError, progress

PG_SAMPLE = 200_000
PG_RUNS = 2
SUBDIVIDE_VERTICES = 64


async def enable_postgis(db_url: str) -> dict[str, Any]:
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


async def postgis_answer(
    db_url: str, fences: Sequence[Fence], shapes: Sequence[BaseGeometry], lon: Floats, lat: Floats, check: int
) -> tuple[dict[str, Any], set[tuple[int, int]], set[tuple[int, int]]]:
    """Load, time the join, read the check sample's pairs: (figures, polygon pairs, circle pairs)."""
    sample = min(PG_SAMPLE, len(lon))
    conn = await asyncpg.connect(db_url, timeout=10)
    try:
        clock = Clock()
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
