"""The history the bench reads back: its sizes (`Settings`), who exists and when (`Plan`), how the
devices move, and all of it written through the project's own bulk path.

Policy: history devices drive random walks through Munich (5-15 m/s, with turns), a fix every 24 h / M,
so that M fixes span the 24 hours ending now; fixes are written in time order across devices, as live
ingest writes them, so one device's fixes are spread over the table as in production. Live-only devices
get one recent fix each. The seed alone decides every fix.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tracker.auth import hash_token, new_token
from tracker.index import assign_cells
from tracker.model import Device, Fix, Viewer
from tracker.parse import Box
from tracker.store import accounts
from tracker.store.database import DAY_MS, Database
from tracker.store.fixes import days_of, write_fixes
from tracker.tools.bench.procfs import CLK_TCK, machine_jiffies, proc_cpu_s
from tracker.tools.bench.report import progress, rounded

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


@dataclass(frozen=True)
class Settings:
    """Sizes of one run."""

    devices: int = 1_000
    fixes_per_device: int = 10_000
    live_devices: int = 10_000
    requests: int = 200
    warmup: int = 20


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


def batches(steps: Iterator[list[Fix]], size: int) -> Iterator[list[Fix]]:
    """The fixes of consecutive steps cut into batches of `size` (the last one smaller)."""
    pending: list[Fix] = []
    for step in steps:
        pending.extend(step)
        while len(pending) >= size:
            yield pending[:size]
            pending = pending[size:]
    if pending:
        yield pending


async def load_history(db_url: str, plan: Plan) -> dict[str, Any]:
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
                    accounts.insert_device(db, Device(d, plan.fleet(i), None), b, actor="bench")
                    for i, d, b in (
                        (i, ids[i], hash_token(new_token())) for i in range(start, min(start + 500, len(ids)))
                    )
                )
            )
        token = new_token()
        await accounts.insert_viewer(
            db, Viewer("bench-dispatcher", frozenset(FLEETS)), hash_token(token), actor="bench"
        )
        register_s = time.perf_counter() - t0
        progress(f"registered {len(ids)} devices in {register_s:.1f} s")
        rng = np.random.default_rng(SEED)
        total = plan.settings.devices * plan.settings.fixes_per_device
        history_fixes = await _write_all(db, batches(_walk(plan, rng), BATCH), total, "history")
        live = _live_fixes(plan, rng)
        live_fixes = await _write_all(db, batches(iter([live]), BATCH), len(live), "live-only")
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
        "postgres_backends_cpu_s": rounded(_delta(pg_before, _cpu_of(pg_pids)), 1),
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


def write_fences(folder: Path) -> str:
    """A rules file naming the Munich districts, read by the server at run time; what was used."""
    folder.mkdir(parents=True, exist_ok=True)
    if not DISTRICTS.is_file():
        return f"none: {DISTRICTS} is missing, so the district query is skipped (the 2x2 km box remains)"
    (folder / "districts.yaml").write_text(f"fences:\n  - id: {FENCE_FILE_ID}\n    geojson: {DISTRICTS}\n")
    return f"Munich's districts from {DISTRICTS}, as fences {FENCE_FILE_ID}:<n>"
