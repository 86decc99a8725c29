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
import contextlib
import json
import math
import os
import re
import secrets
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import asyncpg
import httpx
import numpy as np

from tracker.api.params import encode_cursor
from tracker.api.responses import JSONResponse
from tracker.auth import Authenticator, hash_token, new_token
from tracker.geo import path_length_m
from tracker.geofence.config import load_folder
from tracker.index import LiveIndex, assign_cells
from tracker.model import Device, Fence, Fix, Position, Viewer
from tracker.parse import Box
from tracker.store import accounts, history
from tracker.store.area import visits_in_bbox, visits_in_fence
from tracker.store.database import DAY_MS, Database
from tracker.store.fixes import days_of, latest_positions, positions_page, write_fixes
from tracker.tools.bench.base import (
    CLK_TCK,
    DEFAULT_BASE_URL,
    BenchError,
    _create_database,
    _database_url,
    _round,
    _Server,
    machine_facts,
    machine_jiffies,
    percentile,
    proc_cpu_s,
    progress,
    scratch_database,
)
from tracker.trail import Trail, to_geojson

CITY: Box = (11.36, 48.06, 11.72, 48.25)  # Munich: west, south, east, north
DISTRICTS = Path("/work/shared/realdata/geofences/munich_stadtbezirke.geojson")
FENCE_FILE_ID = "munich"  # the districts become fences munich:0 .. munich:24
FLEETS = ("fleet-a", "fleet-b", "fleet-c", "fleet-d")
SEED = 20240611
BATCH = 5_000
WRITERS = 2  # the machine has 2 cores; PostgreSQL backends do most of the loading work
H3_RESOLUTION = 9  # the server's default TRACKER_H3_RESOLUTION
SPEED_MS = (5.0, 15.0)
TURN_P = 0.02  # chance per fix of a right-angle turn; otherwise the heading drifts a little
M_PER_DEG = 111_320.0
BOX_M = 2_000.0
HOUR_MS = 3_600_000
NEARBY_RADIUS_M = 1_000.0
PAGE_LIMIT = 1_000
TRAIL_GOAL_P95_MS = 50.0
SLOW_MS = 50.0  # above this HTTP p95, a query's plan goes into the report
LATEST_RUNS = 3


# --- the command -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """Sizes of one run."""

    devices: int = 1_000
    fixes_per_device: int = 10_000
    live_devices: int = 10_000
    requests: int = 200
    warmup: int = 20


def bench_history(database_url: str | None, settings: Settings, keep: bool, out: str | None) -> str:
    """Run the history benchmark; return its JSON report (also written to `out` when given)."""
    if not 1 <= settings.devices <= 100_000:
        raise BenchError(f"--devices must be between 1 and 100000; got {settings.devices}")
    if not 2 <= settings.fixes_per_device <= 100_000:
        raise BenchError(f"--fixes-per-device must be between 2 and 100000; got {settings.fixes_per_device}")
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
    text = json.dumps(report, indent=2)
    if out:
        Path(out).write_text(text + "\n")
        progress(f"report written to {out}")
    return text


def run(base_url: str, settings: Settings, keep: bool) -> dict[str, Any]:
    """Make and fill the database, start the server, time every query, clean up; the report."""
    started = time.perf_counter()
    cpu_started = time.process_time()
    loadavg = list(os.getloadavg())
    plan = Plan.make(settings)
    with _scratch(base_url, keep) as (db_url, pg), tempfile.TemporaryDirectory(prefix="tracker-bh-") as tmp:
        load = asyncio.run(_load(db_url, plan))
        pg.update(load.pop("postgres"))
        fences_folder = Path(tmp) / "geofences"
        fence_source = _write_fences(fences_folder)
        fences = {f.id: f for f in load_folder(fences_folder).fences}
        viewer_token = load.pop("viewer_token")
        startup = asyncio.run(_startup_parts(db_url))
        progress("starting the server")
        t0 = time.perf_counter()
        server = _Server.start(db_url, Path(tmp), {})
        startup["server_ready_s"] = round(time.perf_counter() - t0, 3)
        progress(f"server ready in {startup['server_ready_s']:.1f} s")
        try:
            kinds = _kinds(plan, fences)
            results = _http_series(server, viewer_token, kinds, plan)
            server.check_alive()
        finally:
            server.stop()
        log_errors = server.log_error_lines()
        asyncio.run(_inprocess_series(db_url, kinds, results, plan, viewer_token))
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


@contextlib.contextmanager
def _scratch(base_url: str, keep: bool) -> Iterator[tuple[str, dict[str, Any]]]:
    """The scratch database of `bench ingest`, or with `keep` one that is left in place for inspection."""
    if not keep:
        with scratch_database(base_url) as made:
            yield made
        return
    name = f"tracker_bench_{secrets.token_hex(4)}"
    progress(f"creating database {name} (kept afterwards)")
    info = asyncio.run(_create_database(base_url, name))
    yield _database_url(base_url, name), info


# --- the data ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """Who exists and when: history devices with a day of fixes each, live-only devices with one fix."""

    settings: Settings
    end_ms: int  # the newest fix time; every history fix lies in (end_ms - 24 h, end_ms]
    interval_ms: int

    @classmethod
    def make(cls, settings: Settings) -> Plan:
        return cls(settings, int(time.time() * 1000), DAY_MS // settings.fixes_per_device)

    @property
    def history_ids(self) -> list[str]:
        return [f"h-{i:05d}" for i in range(self.settings.devices)]

    @property
    def live_ids(self) -> list[str]:
        return [f"l-{i:06d}" for i in range(self.settings.live_devices - self.settings.devices)]

    @staticmethod
    def fleet(i: int) -> str:
        return FLEETS[i % len(FLEETS)]


def _walk(plan: Plan, rng: np.random.Generator) -> Iterator[list[Fix]]:
    """Every history device's fixes, one time step (a fix of each device) at a time, oldest first.

    Each device drives a random walk in the city box: speed 5-15 m/s changing a little per fix, heading
    drifting with an occasional right-angle turn, bouncing off the box's edges.
    """
    ids = plan.history_ids
    fleets = [plan.fleet(i) for i in range(len(ids))]
    n, steps = len(ids), plan.settings.fixes_per_device
    west, south, east, north = CITY
    lat, lon = rng.uniform(south, north, n), rng.uniform(west, east, n)
    heading, speed = rng.uniform(0.0, 2 * math.pi, n), rng.uniform(*SPEED_MS, n)
    offset = rng.integers(0, plan.interval_ms, n)
    dt = plan.interval_ms / 1000
    for k in range(steps):
        ts = (plan.end_ms - (steps - 1 - k) * plan.interval_ms - offset).tolist()
        yield [
            Fix(d, f, t, la, lo, sp, hd, 5.0)
            for d, f, t, la, lo, sp, hd in zip(
                ids,
                fleets,
                ts,
                lat.tolist(),
                lon.tolist(),
                np.round(speed, 2).tolist(),
                np.round(np.degrees(heading), 1).tolist(),
                strict=True,
            )
        ]
        turn = np.where(
            rng.random(n) < TURN_P, rng.choice([-math.pi / 2, math.pi / 2], n), rng.normal(0.0, 0.15, n)
        )
        heading = (heading + turn) % (2 * math.pi)
        speed = np.clip(speed + rng.normal(0.0, 1.0, n), *SPEED_MS)
        lat = lat + speed * dt * np.cos(heading) / M_PER_DEG
        lon = lon + speed * dt * np.sin(heading) / (M_PER_DEG * np.cos(np.radians(lat)))
        off_ns = (lat < south) | (lat > north)
        off_ew = (lon < west) | (lon > east)
        lat = np.where(lat < south, 2 * south - lat, np.where(lat > north, 2 * north - lat, lat))
        lon = np.where(lon < west, 2 * west - lon, np.where(lon > east, 2 * east - lon, lon))
        heading = np.where(off_ns, math.pi - heading, heading)
        heading = np.where(off_ew, -heading, heading) % (2 * math.pi)


def _live_fixes(plan: Plan, rng: np.random.Generator) -> list[Fix]:
    """One fix in the last five minutes for each live-only device, uniform over the city box."""
    ids = plan.live_ids
    west, south, east, north = CITY
    n = len(ids)
    ts = (plan.end_ms - rng.integers(0, 300_000, n)).tolist()
    lat, lon = rng.uniform(south, north, n).tolist(), rng.uniform(west, east, n).tolist()
    speed = np.round(rng.uniform(0.0, 15.0, n), 2).tolist()
    heading = np.round(rng.uniform(0.0, 360.0, n), 1).tolist()
    return [
        Fix(d, plan.fleet(i), t, la, lo, sp, hd, 5.0)
        for i, (d, t, la, lo, sp, hd) in enumerate(zip(ids, ts, lat, lon, speed, heading, strict=True))
    ]


def _batches(steps: Iterator[list[Fix]], size: int) -> Iterator[list[Fix]]:
    """The fixes of consecutive steps cut into batches of `size` (the last one smaller)."""
    pending: list[Fix] = []
    for step in steps:
        pending.extend(step)
        while len(pending) >= size:
            yield pending[:size]
            pending = pending[size:]
    if pending:
        yield pending


async def _load(db_url: str, plan: Plan) -> dict[str, Any]:
    """Register devices and a viewer, write every fix, vacuum and analyse; the load figures."""
    db = await Database.connect(db_url, min_size=WRITERS + 1, max_size=WRITERS + 1)
    try:
        async with db.pool.acquire() as conn:
            facts = {
                "postgis": await conn.fetchval("SELECT postgis_lib_version()"),
                "shared_buffers": await conn.fetchval("SHOW shared_buffers"),
                "work_mem": await conn.fetchval("SHOW work_mem"),
                "jit": await conn.fetchval("SHOW jit"),
            }
        t0 = time.perf_counter()
        ids = plan.history_ids + plan.live_ids
        for start in range(0, len(ids), 500):
            await asyncio.gather(
                *(
                    accounts.insert_device(db, Device(d, plan.fleet(i), None), b)
                    for i, d, b in (
                        (i, ids[i], hash_token(new_token())) for i in range(start, min(start + 500, len(ids)))
                    )
                )
            )
        token = new_token()
        await accounts.insert_viewer(db, Viewer("bench-dispatcher", frozenset(FLEETS)), hash_token(token))
        register_s = time.perf_counter() - t0
        progress(f"registered {len(ids)} devices in {register_s:.1f} s")
        rng = np.random.default_rng(SEED)
        total = plan.settings.devices * plan.settings.fixes_per_device
        history_fixes = await _write_all(db, _batches(_walk(plan, rng), BATCH), total, "history")
        live = _live_fixes(plan, rng)
        live_fixes = await _write_all(db, _batches(iter([live]), BATCH), len(live), "live-only")
        t0 = time.perf_counter()
        async with db.pool.acquire() as conn:
            await conn.execute("VACUUM (ANALYZE) fixes", timeout=3600)
            await conn.execute("ANALYZE devices")
            vacuum_s = time.perf_counter() - t0
            await conn.execute("CHECKPOINT", timeout=3600)
            checkpoint_s = time.perf_counter() - t0 - vacuum_s
            sizes = await conn.fetchrow(
                "SELECT sum(pg_table_size(c.oid)), sum(pg_indexes_size(c.oid)), count(*) "
                "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = 'fixes'::regclass"
            )
        progress(f"VACUUM (ANALYZE) {vacuum_s:.1f} s, CHECKPOINT {checkpoint_s:.1f} s")
    finally:
        await db.close()
    return {
        "postgres": facts,
        "viewer_token": token,
        "register_devices": {"devices": len(ids), "seconds": round(register_s, 2)},
        "history_fixes": history_fixes,
        "live_only_fixes": live_fixes,
        "vacuum_analyze_s": round(vacuum_s, 1),
        "checkpoint_s": round(checkpoint_s, 1),
        "fixes_table_mb": round(int(sizes[0]) / 2**20),
        "fixes_indexes_mb": round(int(sizes[1]) / 2**20),
        "partitions": int(sizes[2]),
    }


async def _write_all(db: Database, batches: Iterator[list[Fix]], total: int, label: str) -> dict[str, Any]:
    """Write `batches` through `write_fixes` on WRITERS pooled connections at once; figures of the load.

    This process makes the batches (H3 cells included) while the writers wait on PostgreSQL."""
    queue: asyncio.Queue[list[Fix] | None] = asyncio.Queue(maxsize=WRITERS * 2)
    stored = 0
    written = 0
    next_note = total / 10

    async def writer() -> None:
        nonlocal stored, written, next_note
        while (batch := await queue.get()) is not None:
            async with db.pool.acquire() as conn:
                new = await write_fixes(conn, batch)
            stored += len(new)
            written += len(batch)
            if written >= next_note:
                rate = written / (time.perf_counter() - t0)
                progress(f"{label}: {written:,} of {total:,} fixes, {rate:,.0f}/s")
                next_note += total / 10

    pg_pids = await _backend_pids(db)
    pg_before = _cpu_of(pg_pids)
    jiffies_before = machine_jiffies()
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    tasks = [asyncio.create_task(writer()) for _ in range(WRITERS)]
    batch_count = 0
    try:
        for batch in batches:
            assign_cells(batch, H3_RESOLUTION)
            await db.ensure_partitions(days_of(batch))
            await queue.put(batch)
            batch_count += 1
            if any(t.done() for t in tasks):
                break  # a writer failed: its exception is raised below
        for _ in tasks:
            await queue.put(None)
        await asyncio.gather(*tasks)
    finally:
        for t in tasks:
            t.cancel()
    wall = time.perf_counter() - t0
    jiffies_after = machine_jiffies()
    busy = (
        round((jiffies_after[0] - jiffies_before[0]) / CLK_TCK / wall, 2)
        if jiffies_before and jiffies_after
        else None
    )
    progress(f"{label}: {written:,} fixes in {wall:.1f} s, {written / wall:,.0f}/s")
    return {
        "fixes": written,
        "stored": stored,
        "batches": batch_count,
        "seconds": round(wall, 1),
        "fixes_per_s": round(written / wall),
        "bench_cpu_s": round(time.process_time() - cpu0, 1),
        "postgres_backends_cpu_s": _round(_delta(pg_before, _cpu_of(pg_pids)), 1),
        "machine_busy_cores": busy,
    }


async def _backend_pids(db: Database) -> list[int]:
    rows = await db.pool.fetch(
        "SELECT pid FROM pg_stat_activity "
        "WHERE datname = current_database() AND backend_type = 'client backend'"
    )
    return [int(r[0]) for r in rows]


def _cpu_of(pids: Sequence[int]) -> float | None:
    values = [proc_cpu_s(p) for p in pids]
    return None if any(v is None for v in values) else sum(v for v in values if v is not None)


def _delta(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


def _write_fences(folder: Path) -> str:
    """A rules file naming the Munich districts, read by the server at run time; what was used."""
    folder.mkdir(parents=True, exist_ok=True)
    if not DISTRICTS.is_file():
        return f"none: {DISTRICTS} is missing, so the district query is skipped (the 2x2 km box remains)"
    (folder / "districts.yaml").write_text(f"fences:\n  - id: {FENCE_FILE_ID}\n    geojson: {DISTRICTS}\n")
    return f"Munich's districts from {DISTRICTS}, as fences {FENCE_FILE_ID}:<n>"


async def _startup_parts(db_url: str) -> dict[str, Any]:
    """`latest_positions` (the server's start-up read) timed on its own, its plan, and the index load."""
    db = await Database.connect(db_url, min_size=1, max_size=1)
    try:
        runs = []
        rows: list[tuple[Position, int]] = []
        for _ in range(LATEST_RUNS):
            t0 = time.perf_counter()
            rows = await latest_positions(db)
            runs.append(round(time.perf_counter() - t0, 6))
        t0 = time.perf_counter()
        LiveIndex(H3_RESOLUTION).load(rows)
        index_s = time.perf_counter() - t0
        sql, args = await _capture(lambda d, _: latest_positions(d), Sample())
        async with db.pool.acquire() as conn:
            plan = await _explain(conn, sql, args)
    finally:
        await db.close()
    progress(f"latest_positions: {len(rows)} rows in {runs} s")
    return {
        "latest_fixes_rows": len(rows),
        "latest_fixes_s": runs,
        "live_index_load_s": round(index_s, 3),
        "latest_fixes_explain": plan,
    }


# --- the queries -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """Random parameters of one request; which fields count depends on the query."""

    device: str = ""
    from_ms: int = 0
    to_ms: int = 0
    after_ms: int | None = None
    box: Box | None = None
    fence: str = ""
    lat: float = 0.0
    lon: float = 0.0


StoreCall = Callable[[Database, Sample], Awaitable[object]]


@dataclass(frozen=True)
class Kind:
    """One query of the report: how to draw its parameters, its URL, and the store function behind it."""

    name: str
    what: str
    draw: Callable[[np.random.Generator], Sample]
    url: Callable[[Sample], tuple[str, dict[str, str]]]
    store: StoreCall | None
    items: Callable[[Any], int]
    goal_p95_ms: float | None = None


def _kinds(plan: Plan, fences: dict[str, Fence]) -> list[Kind]:
    fence_ids = sorted(fences)
    ids = plan.history_ids
    day_from, day_to = plan.end_ms - DAY_MS, plan.end_ms + 1
    granted = sorted(FLEETS)
    west, south, east, north = CITY
    half_lat = BOX_M / 2 / M_PER_DEG
    half_lon = BOX_M / 2 / (M_PER_DEG * math.cos(math.radians((south + north) / 2)))

    def device(rng: np.random.Generator) -> str:
        return ids[int(rng.integers(len(ids)))]

    def hour(rng: np.random.Generator) -> tuple[int, int]:
        start = day_from + int(rng.integers(0, DAY_MS - HOUR_MS))
        return start, start + HOUR_MS

    def window(s: Sample) -> dict[str, str]:
        return {"from": str(s.from_ms), "to": str(s.to_ms)}

    def trail(rng: np.random.Generator) -> Sample:
        return Sample(device=device(rng), from_ms=day_from, to_ms=day_to)

    def page_after(rng: np.random.Generator) -> Sample:
        # a cursor at a random time of the day, as a client paging through it would hold
        return Sample(device(rng), day_from, day_to, after_ms=day_from + int(rng.integers(0, DAY_MS)))

    def box(rng: np.random.Generator) -> Sample:
        lat = float(rng.uniform(south + half_lat, north - half_lat))
        lon = float(rng.uniform(west + half_lon, east - half_lon))
        start, end = hour(rng)
        return Sample(
            from_ms=start, to_ms=end, box=(lon - half_lon, lat - half_lat, lon + half_lon, lat + half_lat)
        )

    def district(rng: np.random.Generator) -> Sample:
        start, end = hour(rng)
        return Sample(from_ms=start, to_ms=end, fence=fence_ids[int(rng.integers(len(fence_ids)))])

    def point(rng: np.random.Generator) -> Sample:
        return Sample(lat=float(rng.uniform(south, north)), lon=float(rng.uniform(west, east)))

    def positions_url(s: Sample) -> tuple[str, dict[str, str]]:
        query = {**window(s), "limit": str(PAGE_LIMIT)}
        if s.after_ms is not None:
            query["cursor"] = encode_cursor(s.after_ms)
        return f"/api/devices/{s.device}/positions", query

    async def positions_store(db: Database, s: Sample) -> object:
        return await positions_page(db, s.device, s.from_ms, s.to_ms, s.after_ms, PAGE_LIMIT + 1)

    def box_text(s: Sample) -> str:
        assert s.box is not None
        return ",".join(f"{v:.6f}" for v in s.box)

    kinds = [
        Kind(
            "trail_24h",
            "GET /api/devices/{id}/trail?from&to: one device's 24 hours as GeoJSON",
            trail,
            lambda s: (f"/api/devices/{s.device}/trail", window(s)),
            lambda db, s: history.track(db, s.device, s.from_ms, s.to_ms, _MAX_TRAIL),
            lambda body: int(body["properties"]["points"]),
            TRAIL_GOAL_P95_MS,
        ),
        Kind(
            "positions_first_page",
            f"GET /api/devices/{{id}}/positions?from&to&limit={PAGE_LIMIT} (24 h window, no cursor)",
            trail,
            positions_url,
            positions_store,
            lambda body: len(body["features"]),
        ),
        Kind(
            "positions_cursor_page",
            f"GET /api/devices/{{id}}/positions?from&to&limit={PAGE_LIMIT}&cursor (cursor at a random time "
            "of the 24 h, as encode_cursor makes it)",
            page_after,
            positions_url,
            positions_store,
            lambda body: len(body["features"]),
        ),
        Kind(
            "area_bbox_1h",
            f"GET /api/area?bbox&from&to: a {BOX_M / 1000:g}x{BOX_M / 1000:g} km box, one random hour",
            box,
            lambda s: ("/api/area", {**window(s), "bbox": box_text(s)}),
            lambda db, s: visits_in_bbox(db, s.box or CITY, s.from_ms, s.to_ms, granted),
            lambda body: len(body["devices"]),
        ),
    ]
    if fence_ids:
        kinds.append(
            Kind(
                "area_district_1h",
                "GET /api/area?fence&from&to: a random Munich district (a loaded fence), one random hour",
                district,
                lambda s: ("/api/area", {**window(s), "fence": s.fence}),
                lambda db, s: visits_in_fence(db, fences[s.fence], s.from_ms, s.to_ms, granted),
                lambda body: len(body["devices"]),
            )
        )
    kinds.append(
        Kind(
            "nearby_live",
            f"GET /api/nearby?lat&lon&radius_m={NEARBY_RADIUS_M:g}: over {plan.settings.live_devices} live "
            "devices, a random point in the city",
            point,
            lambda s: (
                "/api/nearby",
                {"lat": f"{s.lat:.6f}", "lon": f"{s.lon:.6f}", "radius_m": f"{NEARBY_RADIUS_M:g}"},
            ),
            None,
            lambda body: len(body["devices"]),
        )
    )
    return kinds


_MAX_TRAIL = 200_000  # the route's MAX_TRAIL_FIXES


def _summary(values_ms: Sequence[float]) -> dict[str, Any]:
    ordered = sorted(values_ms)
    return {
        "n": len(ordered),
        "p50_ms": _round(percentile(ordered, 50)),
        "p95_ms": _round(percentile(ordered, 95)),
        "p99_ms": _round(percentile(ordered, 99)),
        "mean_ms": _round(statistics.fmean(ordered) if ordered else None),
        "max_ms": _round(ordered[-1] if ordered else None),
    }


def _http_series(server: _Server, token: str, kinds: Sequence[Kind], plan: Plan) -> dict[str, dict[str, Any]]:
    """Each query over HTTP, sequentially: a warm-up, then the timed requests; figures by query name."""
    rng = np.random.default_rng(SEED + 1)
    n, warmup = plan.settings.requests, plan.settings.warmup
    results: dict[str, dict[str, Any]] = {}
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=60) as http:
        for kind in kinds:
            times: list[float] = []
            sizes: list[int] = []
            items: list[int] = []
            cpu0 = 0.0
            for i in range(warmup + n):
                if i == warmup:
                    cpu0 = proc_cpu_s(server.pid) or 0.0
                path, query = kind.url(kind.draw(rng))
                t0 = time.perf_counter()
                r = http.get(path, params=query)
                elapsed = (time.perf_counter() - t0) * 1000
                if r.status_code != 200:
                    raise BenchError(f"{kind.name}: {path} answered {r.status_code}: {r.text:.300}")
                if i >= warmup:
                    times.append(elapsed)
                    sizes.append(len(r.content))
                    items.append(kind.items(r.json()))
            server_cpu = (proc_cpu_s(server.pid) or 0.0) - cpu0
            figures = _summary(times)
            results[kind.name] = {
                "name": kind.name,
                "request": kind.what,
                "http": figures,
                "response_bytes": {
                    "mean": round(statistics.fmean(sizes)),
                    "min": min(sizes),
                    "max": max(sizes),
                },
                "items": {"mean": round(statistics.fmean(items), 1), "min": min(items), "max": max(items)},
                "server_cpu_ms_per_request": round(server_cpu / n * 1000, 3),
            }
            if kind.goal_p95_ms is not None:
                results[kind.name]["goal_p95_ms"] = kind.goal_p95_ms
                results[kind.name]["goal_met"] = figures["p95_ms"] <= kind.goal_p95_ms
            progress(
                f"{kind.name}: p50 {figures['p50_ms']:.1f} ms, p95 {figures['p95_ms']:.1f} ms, "
                f"{statistics.fmean(sizes) / 1000:.0f} kB"
            )
    return results


# --- in-process: the store functions, their bare SQL, and the trail's steps ---------------------------


class _Captured(Exception):
    """Raised by the capturing connection with the statement a store function sent."""

    def __init__(self, sql: str, args: tuple[Any, ...]) -> None:
        super().__init__(sql)
        self.sql = sql
        self.args = args


class _CapturingConnection:
    async def fetch(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        raise _Captured(sql, args)

    fetchrow = fetch


class _CapturingPool:
    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[_CapturingConnection]:
        yield _CapturingConnection()


async def _capture(store: StoreCall, sample: Sample) -> tuple[str, tuple[Any, ...]]:
    """The SQL and arguments the store function sends for `sample`, without running it."""
    try:
        await store(Database(cast(asyncpg.Pool, _CapturingPool())), sample)
    except _Captured as sent:
        return sent.sql, sent.args
    raise BenchError("the store function sent no query")


_WKB = re.compile(r"'([0-9A-F]{200,})'")


async def _explain(conn: asyncpg.Connection, sql: str, args: Sequence[Any]) -> list[str]:
    """The plan's lines, a district's WKB literal (thousands of hex digits) shortened to its size."""
    rows = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + sql, *args)
    return [_WKB.sub(lambda m: f"'<WKB, {len(m[1]) // 2} bytes>'", str(r[0])) for r in rows]


@dataclass
class _Timer:
    laps: dict[str, list[float]] = field(default_factory=dict)

    @contextlib.contextmanager
    def lap(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        yield
        self.laps.setdefault(name, []).append((time.perf_counter() - t0) * 1000)


async def _inprocess_series(
    db_url: str,
    kinds: Sequence[Kind],
    results: dict[str, dict[str, Any]],
    plan: Plan,
    token: str,
) -> None:
    """Add, per query, the store function's and the bare SQL's latency (and plans, and the trail's steps)."""
    rng = np.random.default_rng(SEED + 2)
    n, warmup = plan.settings.requests, plan.settings.warmup
    db = await Database.connect(db_url, min_size=1, max_size=1)
    try:
        for kind in kinds:
            result = results[kind.name]
            if kind.store is None:
                result["in_process"] = await _nearby_in_process(db, kind, plan, rng)
                continue
            store = kind.store
            timer = _Timer()
            for i in range(warmup + n):
                sample = kind.draw(rng)
                t0 = time.perf_counter()
                await store(db, sample)
                if i >= warmup:
                    timer.laps.setdefault("store", []).append((time.perf_counter() - t0) * 1000)
            for i in range(warmup + n):
                sample = kind.draw(rng)
                sql, args = await _capture(store, sample)
                async with db.pool.acquire() as conn:
                    t0 = time.perf_counter()
                    await conn.fetch(sql, *args)
                    if i >= warmup:
                        timer.laps.setdefault("sql", []).append((time.perf_counter() - t0) * 1000)
            result["store_function"] = _summary(timer.laps["store"])
            result["sql_only"] = _summary(timer.laps["sql"])
            progress(
                f"{kind.name} in-process: store p50 {result['store_function']['p50_ms']:.1f} ms, "
                f"SQL p50 {result['sql_only']['p50_ms']:.1f} ms"
            )
            if result["http"]["p95_ms"] > SLOW_MS:
                sql, args = await _capture(store, kind.draw(rng))
                async with db.pool.acquire() as conn:
                    result["explain_analyze"] = await _explain(conn, sql, args)
            if kind.name == "trail_24h":
                result["breakdown"] = await _trail_steps(db, kind, plan, rng, token, result["http"])
    finally:
        await db.close()


async def _trail_steps(
    db: Database, kind: Kind, plan: Plan, rng: np.random.Generator, token: str, http: dict[str, Any]
) -> dict[str, Any]:
    """The trail route's steps, timed one by one in this process on the same random devices.

    The steps are the route's: token and device look-ups, the SQL (its row of arrays decoded by asyncpg),
    Trail.from_columns, the geodesic length, the GeoJSON dict, orjson encoding. The server runs the last
    three in a worker thread.
    """
    auth = Authenticator(db, None)
    timer = _Timer()
    for i in range(plan.settings.warmup + plan.settings.requests):
        if i == plan.settings.warmup:
            timer.laps.clear()
        sample = kind.draw(rng)
        with timer.lap("token_and_device_lookups"):
            await auth.viewer(token)
            await accounts.get_device(db, sample.device)
        assert kind.store is not None
        sql, args = await _capture(kind.store, sample)
        async with db.pool.acquire() as conn:
            with timer.lap("sql_fetch"):
                row = await conn.fetchrow(sql, *args)
        assert row is not None
        with timer.lap("numpy_columns"):
            track = Trail.from_columns(row[1], row[2], row[3], row[4], row[5])
        with timer.lap("geodesic_length"):
            distance = path_length_m(track.lat, track.lon)
        with timer.lap("geojson_dict"):
            feature = to_geojson(sample.device, sample.from_ms, sample.to_ms, track, distance)
        with timer.lap("json_encode"):
            body = JSONResponse(feature, media_type="application/geo+json").body
    steps = {name: _summary(values) for name, values in timer.laps.items()}
    medians = sum(statistics.median(v) for v in timer.laps.values())
    return {
        "steps": steps,
        "sum_of_step_p50_ms": round(medians, 3),
        "http_p50_ms": http["p50_ms"],
        "http_minus_steps_p50_ms": round(http["p50_ms"] - medians, 3),
        "body_bytes_last": len(body),
        "note": "http_minus_steps is what the HTTP round trip, Starlette, the worker-thread hop and the "
        "client add (on 2 cores shared by client, server and PostgreSQL)",
    }


async def _nearby_in_process(
    db: Database, kind: Kind, plan: Plan, rng: np.random.Generator
) -> dict[str, Any]:
    """LiveIndex.nearby on an index loaded as the server loads it: the route's work minus HTTP/JSON."""
    index = LiveIndex(H3_RESOLUTION)
    index.load(await latest_positions(db))
    fleets = frozenset(FLEETS)
    times = []
    for i in range(plan.settings.warmup + plan.settings.requests):
        s = kind.draw(rng)
        t0 = time.perf_counter()
        index.nearby(s.lat, s.lon, NEARBY_RADIUS_M, fleets, 100)
        if i >= plan.settings.warmup:
            times.append((time.perf_counter() - t0) * 1000)
    return {"live_index_devices": len(index), "live_index_nearby": _summary(times)}
