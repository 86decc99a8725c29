"""`tracker bench history`: how fast stored history is read back over HTTP, on 10 million stored fixes.

What it measures. A scratch database is filled through the project's own bulk path (`ensure_partitions`
then `write_fixes`, COPY batches of 5,000 on two connections): N devices each drive a random walk through
Munich (5-15 m/s, with turns) and report a fix every 24 h / M, so M fixes span the 24 hours ending now.
Fixes are written in time order across devices, as live ingest writes them, so one device's fixes are
spread over the table as they would be in production. More devices then get one recent fix each, so the
live index holds `--live-devices`. After VACUUM (ANALYZE) and a CHECKPOINT, the real `tracker serve` starts
on the database (its start-up is timed, and `latest_positions`, the start-up load of the live index, on its
own). Then, one after the other with fresh random parameters each time, sequential HTTP requests over
localhost: a device's 24-hour trail, a positions page with and without a cursor, who was in a 2x2 km
box or in a Munich district during one hour, and live devices within 1 km of a point.

Where the time goes. The same queries are also timed in this process: the store function the route
calls (SQL plus its row conversion), and the bare SQL through asyncpg (the statement is captured from
the store function, so it is the route's SQL, not a copy). A query whose HTTP p95 is over SLOW_MS gets
`EXPLAIN (ANALYZE, BUFFERS)` in the report, and the trail is split into its steps in-process: the token
and device look-ups, the SQL fetch, the numpy columns, the geodesic length, the GeoJSON dict, the JSON
encoding.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import numpy as np

from tracker.geofence.config import load_folder
from tracker.tools.bench.flags import check_range
from tracker.tools.bench.history.dataset import (
    BATCH,
    CITY,
    FLEETS,
    SEED,
    WRITERS,
    Plan,
    Settings,
    load_history,
    write_fences,
)
from tracker.tools.bench.history.inprocess import inprocess_series, startup_parts
from tracker.tools.bench.history.queries import TRAIL_GOAL_P95_MS, http_series, kinds_of
from tracker.tools.bench.report import DEFAULT_BASE_URL, BenchError, machine_facts, progress, write_report
from tracker.tools.bench.scratch import scratch_database
from tracker.tools.bench.server import start_server

__all__ = ["Settings", "bench_history"]


def bench_history(database_url: str | None, settings: Settings, keep: bool, out: str | None) -> str:
    """Run the history benchmark; return its JSON report (also written to `out` when given)."""
    check_range("--devices", settings.devices, 1, 100_000)
    check_range("--fixes-per-device", settings.fixes_per_device, 2, 100_000)
    if not settings.devices <= settings.live_devices <= 1_000_000:
        raise BenchError(
            f"--live-devices must be between --devices ({settings.devices}) and 1000000; "
            f"got {settings.live_devices}"
        )
    if not 1 <= settings.requests <= 100_000 or not 0 <= settings.warmup <= 10_000:
        raise BenchError(
            f"--requests must be 1-100000 and --warmup 0-10000; got {settings.requests}, {settings.warmup}"
        )
    report = run(database_url or DEFAULT_BASE_URL, settings, keep)
    return write_report(report, out)


def run(base_url: str, settings: Settings, keep: bool) -> dict[str, Any]:
    """Make and fill the database, start the server, time every query, clean up; the report."""
    started = time.perf_counter()
    cpu_started = time.process_time()
    loadavg = list(os.getloadavg())
    plan = Plan.make(settings)
    with (
        scratch_database(base_url, keep) as (db_url, pg),
        tempfile.TemporaryDirectory(prefix="tracker-bh-") as tmp,
    ):
        load = asyncio.run(load_history(db_url, plan))
        pg.update(load.pop("postgres"))
        fences_folder = Path(tmp) / "geofences"
        fence_source = write_fences(fences_folder)
        fences = {f.id: f for f in load_folder(fences_folder).fences}
        viewer_token = load.pop("viewer_token")
        startup = asyncio.run(startup_parts(db_url))
        progress("starting the server")
        t0 = time.perf_counter()
        server = start_server(db_url, Path(tmp))
        startup["server_ready_s"] = round(time.perf_counter() - t0, 3)
        progress(f"server ready in {startup['server_ready_s']:.1f} s")
        try:
            kinds = kinds_of(plan, fences)
            results = http_series(server, viewer_token, kinds, plan)
            server.check_alive()
        finally:
            server.stop()
        log_errors = server.log_error_lines()
        asyncio.run(inprocess_series(db_url, kinds, results, plan, viewer_token))
        if keep:
            progress(f"database kept: {db_url}")
    trail = results["trail_24h"]
    return {
        "machine": {
            **machine_facts(),
            "numpy": np.__version__,
            "asyncpg": asyncpg.__version__,
            "httpx": httpx.__version__,
            "loadavg_at_start": loadavg,
            "loadavg_at_end": list(os.getloadavg()),
            **pg,
        },
        "settings": {
            **vars(settings),
            "fixes": settings.devices * settings.fixes_per_device,
            "fix_interval_ms": plan.interval_ms,
            "city_bbox": list(CITY),
            "fleets": list(FLEETS),
            "seed": SEED,
            "batch": BATCH,
            "writers": WRITERS,
            "layout": "fixes written in time order across devices (as live ingest writes them), so one "
            "device's fixes are spread over the table",
            "viewer": f"a viewer token granting the {len(FLEETS)} fleets (one token look-up per request)",
            "client": "httpx.Client, keep-alive, sequential requests, fresh random parameters each",
            "fences": fence_source,
            "database_kept": db_url if keep else None,
        },
        "load": load,
        "startup": startup,
        "queries": list(results.values()),
        "goals": {
            "trail_24h_p95_ms": TRAIL_GOAL_P95_MS,
            "trail_24h_p95_measured_ms": trail["http"]["p95_ms"],
            "trail_24h_met": trail["goal_met"],
        },
        "server_log_error_lines": log_errors,
        "total_s": round(time.perf_counter() - started, 1),
        "bench_cpu_s": round(time.process_time() - cpu_started, 1),
    }
