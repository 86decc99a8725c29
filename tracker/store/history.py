"""Reads of one device's stored history for trails, stops and trips.

Each read is a range scan of the `fixes` primary key (device_id, ts) with from <= ts < to, in time order.
Whole tracks come back as one row of column arrays (fast to turn into numpy), capped at a number of fixes
(over the cap only the count is sent);
CSV export instead reads rows through a server-side cursor in chunks, so any window streams in bounded
memory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg

from tracker.store.database import Database, ms_to_datetime
from tracker.trail import Trail

_TRACK = """
SELECT count(*),
       CASE WHEN count(*) < $4 THEN array_agg(ts_ms) END, CASE WHEN count(*) < $4 THEN array_agg(lat) END,
       CASE WHEN count(*) < $4 THEN array_agg(lon) END, CASE WHEN count(*) < $4 THEN array_agg(speed) END,
       CASE WHEN count(*) < $4 THEN array_agg(heading) END
FROM (
    SELECT (extract(epoch FROM ts) * 1000)::bigint AS ts_ms, ST_Y(geom) AS lat, ST_X(geom) AS lon,
           coalesce(speed::float8, 'NaN') AS speed, coalesce(heading::float8, 'NaN') AS heading
    FROM fixes WHERE device_id = $1 AND ts >= $2 AND ts < $3 AND ($5 OR flag IS NULL)
    ORDER BY ts LIMIT $4
) t
"""

# speed and heading as PostgreSQL's shortest text of the stored real: 4.2, not 4.199999809265137.
_ROWS = """
SELECT (extract(epoch FROM ts) * 1000)::bigint, ST_Y(geom), ST_X(geom), speed::text, heading::text
FROM fixes WHERE device_id = $1 AND ts >= $2 AND ts < $3 AND ($4 OR flag IS NULL)
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
