"""Reads of one device's stored history for trails, stops and trips.

Each read is a range scan of the `fixes` primary key (device_id, ts) with from <= ts < to, in time order.
Whole tracks come back as one row of column arrays (fast to turn into numpy), capped at a number of fixes
(over the cap only the count is sent);
CSV export instead reads rows through a server-side cursor in chunks, so any window streams in bounded
memory.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import numpy as np

from tracker.store.database import Database, ms_to_datetime
from tracker.trail import Trail

# The flagged fixes' times of the window, found by their partial index (migration 0012) in one InitPlan:
# the scans below never read `flag`, so they stay index-only on the covering primary key (a `flag IS NULL`
# test would visit the heap for every fix: a 24-hour trail 14 -> 40 ms, migration 0003).
_FLAGGED_TS = """ARRAY(
    SELECT ts FROM fixes WHERE device_id = $1 AND ts >= $2 AND ts < $3 AND flag IS NOT NULL)"""

_TRACK = f"""
SELECT count(*),
       CASE WHEN count(*) < $4 THEN array_agg(ts_ms) END, CASE WHEN count(*) < $4 THEN array_agg(lat) END,
       CASE WHEN count(*) < $4 THEN array_agg(lon) END, CASE WHEN count(*) < $4 THEN array_agg(speed) END,
       CASE WHEN count(*) < $4 THEN array_agg(heading) END
FROM (
    SELECT (extract(epoch FROM ts) * 1000)::bigint AS ts_ms, ST_Y(geom) AS lat, ST_X(geom) AS lon,
           coalesce(speed::float8, 'NaN') AS speed, coalesce(heading::float8, 'NaN') AS heading
    FROM fixes WHERE device_id = $1 AND ts >= $2 AND ts < $3 AND ($5 OR ts <> ALL ({_FLAGGED_TS}))
    ORDER BY ts LIMIT $4
) t
"""

# speed and heading as PostgreSQL's shortest text of the stored real: 4.2, not 4.199999809265137.
_ROWS = f"""
SELECT (extract(epoch FROM ts) * 1000)::bigint, ST_Y(geom), ST_X(geom), speed::text, heading::text
FROM fixes WHERE device_id = $1 AND ts >= $2 AND ts < $3 AND ($4 OR ts <> ALL ({_FLAGGED_TS}))
ORDER BY ts
"""


async def track(
    db: Database, device: str, from_ms: int, to_ms: int, limit: int, include_flagged: bool = False
) -> Trail | None:
    """The fixes of `device` with from <= ts < to in time order, or None when there are more than
    `limit` (coroutine). Fixes a filter flagged are left out unless `include_flagged`."""
    async with db.pool.acquire() as conn:
        row = await conn.fetchrow(
            _TRACK, device, ms_to_datetime(from_ms), ms_to_datetime(to_ms), limit + 1, include_flagged
        )
    assert row is not None
    if row[0] > limit:
        return None
    if row[0] == 0:
        return Trail.from_columns([], [], [])
    # The rows were aggregated in the order of the sorted subquery; from_columns re-sorts if not.
    return Trail.from_columns(row[1], row[2], row[3], row[4], row[5])


async def rows(
    db: Database, device: str, from_ms: int, to_ms: int, chunk: int = 5000, include_flagged: bool = False
) -> AsyncIterator[list[asyncpg.Record]]:
    """Chunks of rows (ts ms, lat, lon, speed text or None, heading text or None) of `device` with
    from <= ts < to, oldest first, read through a server-side cursor (async generator); flagged fixes
    only with `include_flagged`."""
    async with db.pool.acquire() as conn, conn.transaction(readonly=True):
        cursor = await conn.cursor(
            _ROWS, device, ms_to_datetime(from_ms), ms_to_datetime(to_ms), include_flagged
        )
        while True:
            batch: list[asyncpg.Record] = await cursor.fetch(chunk)
            if not batch:
                return
            yield batch


# The replay's read (`thinned_track`): the first fix of each equal slice of time and the last fix of the
# window (of each half of it), so that a week at 1 Hz (600k fixes) comes back as a few 10k fixes. Each part
# of the window is counted first, off the covering key in index order (ORDER BY keeps a single device's
# table from being read whole, heap and all), then read one of two ways that keep the same fixes:
# - dense (more than _SKIP_FROM fixes a slice): a skip-scan, one index probe per slice for its first fix,
#   however many fixes the slice holds;
# - sparse: one pass in index order comparing each fix's slice with the one before, cheaper than probing
#   mostly empty slices (an hour at 1 Hz cut into 25k slices).
# A week at 1 Hz in 25,600 slices, one backend at load 6 on two cores: count 0.15 s, probes 0.13-0.18 s,
# the pass 0.27-0.41 s (a probe costs about what the pass spends on 8-10 fixes); the pass it replaces, with
# a gap test and the count in window functions, took 0.85-1.0 s. A window of a day or more is read as two
# halves at once on two connections (the machine has two cores; a query is one backend's CPU), their
# slices aligned on the window's start.
# Nothing here reads `flag`, so the scans stay index-only: flagged fixes, left out of a trail unless asked
# for, are found by their own partial index (`_FLAGGED`) and dropped afterwards.
_COUNT = """
SELECT count(*) FROM (
    SELECT 1 FROM fixes WHERE device_id = $1 AND ts >= $2 AND ts < $3 ORDER BY ts LIMIT $4) c
"""
_FIRSTS = """
SELECT array_agg((extract(epoch FROM ts) * 1000)::bigint ORDER BY ts), array_agg(ST_Y(geom) ORDER BY ts),
       array_agg(ST_X(geom) ORDER BY ts)
FROM ({firsts}
      UNION ALL
      (SELECT ts, geom FROM fixes WHERE device_id = $1 AND ts >= $2 AND ts < $3 ORDER BY ts DESC LIMIT 1)
) k
"""
_SKIP = """SELECT f.ts, f.geom FROM generate_series($6::bigint, $7::bigint) i, LATERAL (
          SELECT ts, geom FROM fixes
          WHERE device_id = $1 AND ts >= $4::timestamptz + i * $5::interval
            AND ts < least($4::timestamptz + (i + 1) * $5::interval, $3)
          ORDER BY ts LIMIT 1) f"""
_SCAN = """SELECT ts, geom FROM (
          SELECT ts, geom, b, lag(b) OVER (ORDER BY ts) AS prev_b
          FROM (SELECT ts, geom, date_bin($5::interval, ts, $4::timestamptz) AS b FROM fixes
                WHERE device_id = $1 AND ts >= $2 AND ts < $3) f) t
      WHERE prev_b IS NULL OR b <> prev_b"""
_SKIP_FIRSTS = _FIRSTS.format(firsts=_SKIP)
_SCAN_FIRSTS = _FIRSTS.format(firsts=_SCAN)
_SKIP_FROM = 10  # fixes a slice over which a probe per slice beats reading every fix
_HALVES_FROM_MS = 86_400_000  # windows of a day or more are read as two halves at once
# Read beside the count, so bounded as it is: a window of more than `limit` flagged fixes (a parked device
# whose every fix a filter flags) is over the limit anyway, and is not read whole into the server.
_FLAGGED = """
SELECT (extract(epoch FROM ts) * 1000)::bigint FROM fixes
WHERE device_id = $1 AND ts >= $2 AND ts < $3 AND flag IS NOT NULL
LIMIT $4
"""


async def thinned_track(
    db: Database,
    device: str,
    from_ms: int,
    to_ms: int,
    buckets: int,
    limit: int,
    include_flagged: bool = False,
) -> tuple[Trail, int] | None:
    """The first fix of `device` in each of about `buckets` equal slices of from <= ts < to, and the last,
    positions and times only (speed and heading NaN), and how many fixes the window holds; None when it
    holds more than `limit` (coroutine). Every fix that follows a silence longer than a slice is the first of
    its slice, so runs broken by a gap of at least a slice keep their first fixes."""
    slice_ms = max((to_ms - from_ms) // buckets, 1)
    slices = -(-(to_ms - from_ms) // slice_ms)
    halves = [0, slices // 2, slices] if to_ms - from_ms >= _HALVES_FROM_MS else [0, slices]
    origin, step = ms_to_datetime(from_ms), timedelta(milliseconds=slice_ms)

    async def part(i: int, j: int) -> tuple[int, asyncpg.Record | None]:
        """The count of fixes in slices i..j-1 and, unless over the limit, their firsts and their last."""
        a, b = ms_to_datetime(from_ms + i * slice_ms), ms_to_datetime(min(from_ms + j * slice_ms, to_ms))
        async with db.pool.acquire() as conn, conn.transaction(readonly=True):
            # A probe per slice looks costly to the planner, whose JIT would then spend 60 ms compiling it.
            # A slice of a day or more is an interval with days, which timestamptz + interval adds in the
            # session's time zone (23 or 25 hours across DST) where date_bin counts 24: cut in UTC.
            await conn.execute("SET LOCAL jit = off; SET LOCAL TimeZone = 'UTC'")
            count: int = await conn.fetchval(_COUNT, device, a, b, limit + 1)
            if count > limit or count == 0:
                return count, None
            args: tuple[object, ...] = (device, a, b, origin, step)
            if count > _SKIP_FROM * (j - i):
                return count, await conn.fetchrow(_SKIP_FIRSTS, *args, i, j - 1)
            return count, await conn.fetchrow(_SCAN_FIRSTS, *args)

    async def flagged() -> list[int]:
        if include_flagged:
            return []
        async with db.pool.acquire() as conn:
            rows = await conn.fetch(_FLAGGED, device, origin, ms_to_datetime(to_ms), limit + 1)
            return [r[0] for r in rows]

    parts, dropped = await asyncio.gather(
        asyncio.gather(*(part(i, j) for i, j in itertools.pairwise(halves))), flagged()
    )
    scanned = sum(count for count, _ in parts)
    if scanned > limit or len(dropped) > limit:
        return None
    found = [row for _, row in parts if row is not None]
    if not found:
        return Trail.from_columns([], [], []), 0
    ts = np.concatenate([np.asarray(r[0], dtype=np.int64) for r in found])
    keep = np.flatnonzero(np.diff(ts, append=ts[-1] + 1) != 0)  # a part's last fix may be its slice's first
    if dropped:
        keep = keep[~np.isin(ts[keep], np.asarray(dropped, dtype=np.int64))]
    lat = np.concatenate([np.asarray(r[1], dtype=np.float64) for r in found])
    lon = np.concatenate([np.asarray(r[2], dtype=np.float64) for r in found])
    unknown = np.full(len(keep), np.nan)
    return Trail(ts[keep], lat[keep], lon[keep], unknown, unknown.copy()), scanned - len(dropped)
