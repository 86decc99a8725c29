"""The replay bench's history: devices that drove around Munich for a week at 1 Hz, written through the
project's bulk path (`write_fixes`, COPY for batches of this size) on two connections.

Policy: each device drives a random walk (5-15 m/s, heading drifting, an occasional right-angle turn,
and a stop of a few minutes now and then, so a replay has stops to keep), one fix per `interval_ms`
ending now; the seed alone decides every fix. The walk is made in numpy a device at a time, and the
`Fix` objects a batch at a time, so a week of 1 Hz fixes (604,800 per device) fits in memory easily.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from tracker.index import assign_cells
from tracker.model import Fix
from tracker.store.database import Database
from tracker.store.fixes import days_of, write_fixes
from tracker.tools.bench.report import progress

CENTER = (11.575, 48.137)  # lon, lat: Munich
BOX_M = 12_000.0  # the walk stays within this many metres of the centre
M_PER_DEG = 111_320.0
BATCH = 5_000
WRITERS = 2
H3_RESOLUTION = 9
STOP_P = 1 / 1800  # chance per fix of starting a stop (about one every half hour of driving)
STOP_S = (60, 600)


@dataclass(frozen=True)
class Walk:
    """One device's week: times (ms) and positions, oldest first."""

    device: str
    ts: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    speed: np.ndarray
    heading: np.ndarray


def walk(device: str, end_ms: int, fixes: int, interval_ms: int, seed: int) -> Walk:
    """A random walk of `fixes` fixes, one every `interval_ms`, the last at `end_ms` (vectorised)."""
    rng = np.random.default_rng(seed)
    dt = interval_ms / 1000
    turn = np.where(rng.random(fixes) < 0.01, rng.choice([-math.pi / 2, math.pi / 2], fixes), 0.0)
    heading = (rng.uniform(0, 2 * math.pi) + np.cumsum(turn + rng.normal(0.0, 0.05, fixes))) % (2 * math.pi)
    speed = 10.0 + 5.0 * np.sin(np.cumsum(rng.normal(0.0, 0.02, fixes)))
    stopped = np.zeros(fixes, dtype=bool)
    for start in np.flatnonzero(rng.random(fixes) < STOP_P * dt).tolist():
        stopped[start : start + int(rng.integers(*STOP_S) / dt)] = True
    speed = np.where(stopped, 0.0, speed)
    north = np.cumsum(speed * dt * np.cos(heading))
    east = np.cumsum(speed * dt * np.sin(heading))
    # Fold the walk back into the box (a reflection at each edge), as a driver turns back at the city limits.
    north = BOX_M - np.abs((north + BOX_M) % (4 * BOX_M) - 2 * BOX_M)
    east = BOX_M - np.abs((east + BOX_M) % (4 * BOX_M) - 2 * BOX_M)
    lat = CENTER[1] + north / M_PER_DEG
    lon = CENTER[0] + east / (M_PER_DEG * math.cos(math.radians(CENTER[1])))
    ts = end_ms - (fixes - 1 - np.arange(fixes, dtype=np.int64)) * interval_ms
    return Walk(device, ts, lat, lon, np.round(speed, 2), np.round(np.degrees(heading), 1))


def batches(w: Walk, fleet: str) -> Iterator[list[Fix]]:
    """The walk's fixes as `Fix` batches of BATCH, oldest first."""
    for a in range(0, len(w.ts), BATCH):
        b = a + BATCH
        yield [
            Fix(w.device, fleet, t, la, lo, sp, hd, 5.0)
            for t, la, lo, sp, hd in zip(
                w.ts[a:b].tolist(),
                w.lat[a:b].tolist(),
                w.lon[a:b].tolist(),
                w.speed[a:b].tolist(),
                w.heading[a:b].tolist(),
                strict=True,
            )
        ]


async def write_walks(db_url: str, walks: list[Walk], fleet: str) -> dict[str, Any]:
    """Write every walk through `write_fixes` on WRITERS connections, then VACUUM (ANALYZE); figures."""
    db = await Database.connect(db_url, min_size=WRITERS, max_size=WRITERS)
    total = sum(len(w.ts) for w in walks)
    queue: asyncio.Queue[list[Fix] | None] = asyncio.Queue(maxsize=WRITERS * 2)
    written = 0

    async def writer() -> None:
        nonlocal written
        while (batch := await queue.get()) is not None:
            async with db.pool.acquire() as conn:
                await write_fixes(conn, batch)
            written += len(batch)

    try:
        t0 = time.perf_counter()
        tasks = [asyncio.create_task(writer()) for _ in range(WRITERS)]
        try:
            note = total / 5
            for w in walks:
                for batch in batches(w, fleet):
                    assign_cells(batch, H3_RESOLUTION)
                    await db.ensure_partitions(days_of(batch))
                    await queue.put(batch)
                    if written >= note:
                        progress(f"written {written:,} of {total:,} fixes")
                        note += total / 5
                    if any(t.done() for t in tasks):
                        break
            for _ in tasks:
                await queue.put(None)
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
        wall = time.perf_counter() - t0
        progress(f"{written:,} fixes written in {wall:.1f} s; VACUUM (ANALYZE)")
        async with db.pool.acquire() as conn:
            await conn.execute("VACUUM (ANALYZE) fixes", timeout=3600)
    finally:
        await db.close()
    return {"fixes": written, "seconds": round(wall, 1), "fixes_per_s": round(written / wall)}
