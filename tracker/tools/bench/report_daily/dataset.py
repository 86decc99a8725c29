"""The fleet-day the report bench reads: its sizes (`Settings`), the day, how each device spends it, and
all of it written through the project's own bulk path.

Policy: one fleet of N devices, a fix every `interval_s` through one whole local day (00:00 to 24:00 in
TZ). A device's day is a courier's: parked over night (GPS jitter of a few metres), then from about 7:00
to 19:00 drives of 5-40 minutes at 5-15 m/s through Munich, with turns, between stops of 5-60 minutes;
then parked again. So a day has real stops and trips for the stop logic to find. Fixes are written in
time order across devices, as live ingest writes them, through `write_fixes` on two connections; one fix
in a thousand is then flagged (left out of the report) so that path is timed too. The seed alone decides
every fix.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from tracker.auth import hash_token, new_token
from tracker.index import assign_cells
from tracker.model import Device, Fix
from tracker.reports import LocalDay, local_day
from tracker.store import accounts
from tracker.store.database import Database
from tracker.store.fixes import days_of, write_fixes
from tracker.tools.bench.history.dataset import batches
from tracker.tools.bench.report import progress

FLEET = "fleet-r"
TZ = "Europe/Berlin"
CITY = (11.36, 48.06, 11.72, 48.25)  # Munich: west, south, east, north
SEED = 20261203
BATCH = 5_000
WRITERS = 2
H3_RESOLUTION = 9
M_PER_DEG = 111_320.0
FLAG_EVERY = 1_000  # one fix in this many is flagged after the load


@dataclass(frozen=True)
class Settings:
    """Sizes of one run."""

    devices: int = 1_000
    interval_s: float = 5.0
    runs: int = 3
    use_database: str | None = None  # a database a --keep run left: skip loading


def bench_day() -> LocalDay:
    """The day to report: the newest full day in TZ that is 24 hours long (not a DST change), at least
    two days back so that no clock edge is near."""
    day = datetime.now(ZoneInfo(TZ)).date() - timedelta(days=2)
    while (d := local_day(day.isoformat(), TZ)).hours != 24:
        day -= timedelta(days=1)
    return d


def device_ids(n: int) -> list[str]:
    return [f"r-{i:05d}" for i in range(n)]


def _courier(rng: np.random.Generator, steps: int, dt_s: float) -> tuple[npt.NDArray[np.float64], ...]:
    """One device's day as (lat, lon, speed) arrays of `steps` fixes `dt_s` apart."""
    west, south, east, north = CITY
    lat, lon, speed = np.empty(steps), np.empty(steps), np.zeros(steps)
    y, x = rng.uniform(south, north), rng.uniform(west, east)
    heading = rng.uniform(0, 2 * math.pi)
    start = min(steps, int(rng.uniform(6.5, 8.0) * 3600 / dt_s))
    end = min(steps, max(start, int(rng.uniform(18.0, 20.0) * 3600 / dt_s)))

    def park(a: int, b: int) -> None:
        n = b - a
        lat[a:b] = y + rng.normal(0, 4, n) / M_PER_DEG  # metres of GPS jitter
        lon[a:b] = x + rng.normal(0, 4, n) / (M_PER_DEG * math.cos(math.radians(y)))

    park(0, start)
    k, driving = start, True
    while k < end:
        minutes = rng.uniform(5, 40) if driving else rng.uniform(5, 60)
        b = min(end, k + max(1, int(minutes * 60 / dt_s)))
        if driving:
            n = b - k
            v = np.clip(rng.uniform(5, 15) + rng.normal(0, 1, n).cumsum() * 0.2, 3, 20)
            turns = np.where(rng.random(n) < 0.02, rng.choice([-1, 1], n) * math.pi / 2, 0.0)
            h = heading + np.cumsum(turns + rng.normal(0, 0.05, n))
            ys = y + np.cumsum(v * dt_s * np.cos(h) / M_PER_DEG)
            xs = x + np.cumsum(v * dt_s * np.sin(h) / (M_PER_DEG * math.cos(math.radians(y))))
            # Fold the path back into the city box, as a driver turns at its edge.
            ys = south + np.abs((ys - south + (north - south)) % (2 * (north - south)) - (north - south))
            xs = west + np.abs((xs - west + (east - west)) % (2 * (east - west)) - (east - west))
            lat[k:b], lon[k:b], speed[k:b] = ys, xs, np.round(v, 2)
            y, x, heading = float(ys[-1]), float(xs[-1]), float(h[-1])
        else:
            park(k, b)
        k, driving = b, not driving
    park(end, steps)
    return lat, lon, speed


def _steps(ids: list[str], day: LocalDay, settings: Settings) -> Iterator[list[Fix]]:
    """Every fix of the day, one time step (a fix of each device) at a time, oldest first."""
    rng = np.random.default_rng(SEED)
    dt_ms = round(settings.interval_s * 1000)
    steps = (day.to_ms - day.from_ms) // dt_ms
    days = [_courier(rng, steps, settings.interval_s) for _ in ids]
    offsets = rng.integers(0, dt_ms, len(ids)).tolist()
    for k in range(steps):
        yield [
            Fix(d, FLEET, day.from_ms + k * dt_ms + off, float(la[k]), float(lo[k]), float(sp[k]), None, 5.0)
            for d, off, (la, lo, sp) in zip(ids, offsets, days, strict=True)
        ]


async def load_day(db_url: str, day: LocalDay, settings: Settings) -> dict[str, Any]:
    """Register the fleet, write its day, flag a few fixes, vacuum and analyse; the load figures."""
    db = await Database.connect(db_url, min_size=WRITERS + 1, max_size=WRITERS + 1)
    try:
        ids = device_ids(settings.devices)
        for i in range(0, len(ids), 500):
            await asyncio.gather(
                *(
                    accounts.insert_device(db, Device(d, FLEET, None), hash_token(new_token()), actor="bench")
                    for d in ids[i : i + 500]
                )
            )
        t0 = time.perf_counter()
        written = await _write_all(db, batches(_steps(ids, day, settings), BATCH))
        load_s = time.perf_counter() - t0
        async with db.pool.acquire() as conn:
            flagged = await conn.execute(
                "UPDATE fixes SET flag = 'jump' "
                "WHERE (extract(epoch FROM ts) * 1000)::bigint % ($1 * 1000) < 1000",
                FLAG_EVERY,
            )
            t1 = time.perf_counter()
            await conn.execute("VACUUM (ANALYZE) fixes", timeout=3600)
            await conn.execute("ANALYZE devices")
            await conn.execute("CHECKPOINT", timeout=3600)
            vacuum_s = time.perf_counter() - t1
            facts = {
                "postgis": await conn.fetchval("SELECT postgis_lib_version()"),
                "shared_buffers": await conn.fetchval("SHOW shared_buffers"),
                "work_mem": await conn.fetchval("SHOW work_mem"),
                "max_parallel_workers_per_gather": await conn.fetchval(
                    "SHOW max_parallel_workers_per_gather"
                ),
                "jit": await conn.fetchval("SHOW jit"),
            }
    finally:
        await db.close()
    progress(f"loaded {written:,} fixes in {load_s:.0f} s; vacuum and checkpoint {vacuum_s:.0f} s")
    return {
        "postgres": facts,
        "fixes": written,
        "flagged": int(flagged.split()[-1]),
        "seconds": round(load_s, 1),
        "fixes_per_s": round(written / load_s) if load_s > 0 else None,
        "vacuum_checkpoint_s": round(vacuum_s, 1),
    }


async def _write_all(db: Database, batches: Iterator[list[Fix]]) -> int:
    """Write `batches` through `write_fixes` on WRITERS connections at once; the fixes written."""
    queue: asyncio.Queue[list[Fix] | None] = asyncio.Queue(maxsize=WRITERS * 2)
    written = 0
    t0 = time.perf_counter()
    next_note = 30.0

    async def writer() -> None:
        nonlocal written, next_note
        while (batch := await queue.get()) is not None:
            async with db.pool.acquire() as conn:
                await write_fixes(conn, batch)
            written += len(batch)
            if time.perf_counter() - t0 >= next_note:
                progress(f"{written:,} fixes written, {written / (time.perf_counter() - t0):,.0f}/s")
                next_note += 30.0

    tasks = [asyncio.create_task(writer()) for _ in range(WRITERS)]
    try:
        for batch in batches:
            assign_cells(batch, H3_RESOLUTION)
            await db.ensure_partitions(days_of(batch))
            await queue.put(batch)
            if any(t.done() for t in tasks):
                break  # a writer failed: its exception is raised below
        for _ in tasks:
            await queue.put(None)
        await asyncio.gather(*tasks)
    finally:
        for t in tasks:
            t.cancel()
    return written
