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


# The replay's read (`thinned_track`): one pass over the window in index order that keeps the first fix of
# each of `buckets` equal slices of time, the first fix after each silence longer than the gap, and the
# window's last fix, so that
# a week at 1 Hz (600k fixes) comes back as some 50k rows rather than 600k Python objects, with no count or
# sort first; the slice is computed once per fix and compared with the one before (the work per fix is what
# this query costs). The last row also says how many fixes were scanned. A long window is read as two
# halves at once, on two connections (the machine has two cores; the query is one backend's CPU), their
# slices aligned on the window's start.
# The scan never reads `flag`, so it stays on the covering primary key (index-only): flagged fixes, left out
# of a trail unless asked for, are found by their own partial index (`_FLAGGED`) and dropped afterwards.
_THINNED = """
SELECT (extract(epoch FROM ts) * 1000)::bigint, ST_Y(geom), ST_X(geom), n
FROM (
    SELECT ts, geom, b, lag(ts) OVER w AS prev, lag(b) OVER w AS prev_b, lead(ts) OVER w AS next,
           row_number() OVER w AS n
    FROM (
        SELECT ts, geom, date_bin($4, ts, $7) AS b FROM fixes
        WHERE device_id = $1 AND ts >= $2 AND ts < $3
        ORDER BY ts LIMIT $6
    ) f
    WINDOW w AS (ORDER BY ts)
) t
WHERE prev IS NULL OR next IS NULL OR b <> prev_b OR ($5 > interval '0' AND ts - prev > $5)
ORDER BY ts
"""
_HALVES_FROM_MS = 86_400_000  # windows of a day or more are read as two halves at once
_FLAGGED = """
SELECT (extract(epoch FROM ts) * 1000)::bigint FROM fixes
WHERE device_id = $1 AND ts >= $2 AND ts < $3 AND flag IS NOT NULL
"""


async def thinned_track(
    db: Database,
    device: str,
    from_ms: int,
    to_ms: int,
    buckets: int,
    gap_s: float,
    limit: int,
    include_flagged: bool = False,
) -> tuple[Trail, int] | None:
    """At most about `buckets` fixes of `device` with from <= ts < to: the first of each equal slice of the
    window, the first of each run (runs break after more than `gap_s` without a fix; 0 never) and the last,
    positions and times only (speed and heading NaN), and how many fixes the window holds; None when it
    holds more than `limit` (coroutine)."""
    slice_ms = max((to_ms - from_ms) // buckets, 1)
    cut = from_ms + (to_ms - from_ms) // 2 // slice_ms * slice_ms
    bounds = [from_ms, cut, to_ms] if to_ms - from_ms >= _HALVES_FROM_MS else [from_ms, to_ms]
    start, end = ms_to_datetime(from_ms), ms_to_datetime(to_ms)

    async def part(a: int, b: int) -> list[asyncpg.Record]:
        async with db.pool.acquire() as conn:
            got: list[asyncpg.Record] = await conn.fetch(
                _THINNED,
                device,
                ms_to_datetime(a),
                ms_to_datetime(b),
                timedelta(milliseconds=slice_ms),
                timedelta(seconds=gap_s),
                limit + 1,
                start,
            )
            return got

    parts = await asyncio.gather(*(part(a, b) for a, b in itertools.pairwise(bounds)))
    scanned = sum(int(p[-1][3]) for p in parts if p)
    if scanned > limit:
        return None
    found = [row for p in parts for row in p]
    async with db.pool.acquire() as conn:
        flagged = [] if include_flagged else [r[0] for r in await conn.fetch(_FLAGGED, device, start, end)]
    if not found:
        return Trail.from_columns([], [], []), 0
    ts, lat, lon, _ = zip(*found, strict=True)
    track = Trail.from_columns(ts, lat, lon)
    if flagged:
        track = track.take(np.flatnonzero(~np.isin(track.ts, np.asarray(flagged, dtype=np.int64))))
    return track, scanned - len(flagged)
