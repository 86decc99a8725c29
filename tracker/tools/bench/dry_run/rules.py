"""The rules file the dry-run bench tries, and the PostGIS baseline on the same fences.

Policy: a realistic city file, seeded: Munich's 25 districts (a GeoJSON collection, copied into the
server's geofences folder and named by plain file name, as a posted file must) with enter, exit (after
two fixes) and speeding rules, so that every fix is inside some fence; 200 depots (circles of 100-300 m)
with arrival, departure and dwell; 20 bridges (20 m x 1 km strips) with crossings. Without the real
districts, a 5 x 5 grid of rectangles over the same box stands in for them.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import shapely

from tracker.geo import circle_polygon
from tracker.geofence.grid import CIRCLE_VERTICES
from tracker.model import Fence
from tracker.store.database import ms_to_datetime
from tracker.tools.bench.history.dataset import CITY, DISTRICTS
from tracker.tools.bench.report import progress

SEED = 20261203
DEPOTS = 200
BRIDGES = 20
GEOJSON_NAME = "munich_districts.geojson"

RULES = """
rules:
  - {id: district-enter, on: enter, fence_tags: [district]}
  - {id: district-exit, on: exit, fence_tags: [district], confirm_fixes: 2}
  - {id: district-speeding, on: speeding, fence_tags: [district], max_speed_kmh: 50}
  - {id: depot-arrival, on: enter, fence_tags: [depot]}
  - {id: depot-departure, on: exit, fence_tags: [depot], confirm_fixes: 2}
  - {id: depot-dwell, on: dwell, fence_tags: [depot], dwell_s: 60}
  - {id: bridge-cross, on: cross, fence_tags: [bridge]}
"""


def rules_text(folder: Path) -> tuple[str, str]:
    """The YAML to post and what its districts are; copies the districts' GeoJSON into `folder` (the
    server's geofences folder), where a posted file may name it."""
    rng = np.random.default_rng(SEED)
    west, south, east, north = CITY
    lines = ["fences:"]
    if DISTRICTS.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(DISTRICTS, folder / GEOJSON_NAME)
        lines += ["  - id: district", "    tags: [district]", f"    geojson: {GEOJSON_NAME}"]
        source = f"Munich's 25 districts ({DISTRICTS.name}, by plain name from the server's folder)"
    else:
        dx, dy = (east - west) / 5, (north - south) / 5
        for i in range(25):
            x, y = west + (i % 5) * dx, south + (i // 5) * dy
            ring = [[x, y], [x + dx, y], [x + dx, y + dy], [x, y + dy]]
            lines += [f"  - id: district-{i}", "    tags: [district]", f"    polygon: {_coords(ring)}"]
        source = f"a 5 x 5 grid of rectangles over {CITY} ({DISTRICTS} is missing)"
    for i in range(DEPOTS):
        lon, lat = rng.uniform(west, east), rng.uniform(south, north)
        radius = round(float(rng.uniform(100, 300)), 1)
        lines += [
            f"  - id: depot-{i}",
            "    tags: [depot]",
            f"    circle: {{center: [{lon:.6f}, {lat:.6f}], radius_m: {radius}}}",
        ]
    for i in range(BRIDGES):
        lon, lat = rng.uniform(west, east - 0.02), rng.uniform(south, north - 0.01)
        ring = [[lon, lat], [lon + 0.0003, lat], [lon + 0.0003, lat + 0.009], [lon, lat + 0.009]]
        lines += [f"  - id: bridge-{i}", "    tags: [bridge]", f"    polygon: {_coords(ring)}"]
    return "\n".join(lines) + "\n" + RULES, source


def _coords(ring: list[list[float]]) -> str:
    return "[" + ", ".join(f"[{x:.6f}, {y:.6f}]" for x, y in ring) + "]"


async def postgis_covers(db_url: str, fences: list[Fence], from_ms: int, to_ms: int) -> dict[str, Any]:
    """PostGIS answering the spatial half of the same question on the same fixes: how many (fix, fence)
    pairs with the fence covering the fix (ST_Covers, circles as their 128-gons, GiST on both sides),
    over [from_ms, to_ms); its time and the fixes it read."""
    shapes = [
        circle_polygon(f.center_lonlat[1], f.center_lonlat[0], f.radius_m, CIRCLE_VERTICES)
        if f.center_lonlat is not None and f.radius_m is not None
        else f.geometry
        for f in fences
    ]
    conn = await asyncpg.connect(db_url, timeout=10)
    try:
        await conn.execute(
            "DROP TABLE IF EXISTS bench_fences; "
            "CREATE TABLE bench_fences (id int PRIMARY KEY, geom geometry(Geometry, 4326) NOT NULL)"
        )
        await conn.executemany(
            "INSERT INTO bench_fences VALUES ($1, ST_SetSRID(ST_GeomFromWKB($2), 4326))",
            list(enumerate(shapely.to_wkb(shapes).tolist())),
        )
        await conn.execute("CREATE INDEX ON bench_fences USING gist (geom); ANALYZE bench_fences")
        window = (ms_to_datetime(from_ms), ms_to_datetime(to_ms))
        fixes = await conn.fetchval(
            "SELECT count(*) FROM fixes WHERE ts >= $1 AND ts < $2 AND flag IS NULL", *window
        )
        query = (
            "SELECT count(*) FROM fixes f JOIN bench_fences g ON ST_Covers(g.geom, f.geom) "
            "WHERE f.ts >= $1 AND f.ts < $2 AND f.flag IS NULL"
        )
        plan = await conn.fetchval("EXPLAIN (FORMAT JSON) " + query, *window)
        t0 = time.perf_counter()
        pairs = await conn.fetchval(query, *window, timeout=3600)
        seconds = time.perf_counter() - t0
    finally:
        await conn.close()
    progress(f"postgis: {fixes:,} fixes in {seconds:.1f} s, {fixes / seconds:,.0f} fixes/s")
    return {
        "query": query,
        "plan_top": _plan_line(plan),
        "fixes": int(fixes),
        "pairs": int(pairs),
        "seconds": round(seconds, 2),
        "fixes_per_s": round(fixes / seconds) if seconds > 0 else None,
    }


def _plan_line(plan: Any) -> str:
    """The plan's node types, outermost first, in one line."""
    import json

    node = (json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]
    names: list[str] = []
    todo = [node]
    while todo:
        n = todo.pop(0)
        names.append(n["Node Type"] + (f" on {n['Relation Name']}" if "Relation Name" in n else ""))
        todo.extend(n.get("Plans", []))
    return " > ".join(names[:8])
