"""Fixes in PostGIS: the batched write path and the reads that page through a device's stored fixes or
rebuild the live index at start-up.

A batch is written atomically by one of two equivalent routes, chosen by size because each is faster in
its range (measured here: 4 fixes 0.3 vs 1.3 ms, 50 fixes 0.6 vs 1.4 ms, 5000 fixes 31 vs 22 ms):
- small batches: one `INSERT ... SELECT FROM unnest($arrays)` statement, a transaction of its own;
- large batches: COPY into a per-connection staging table, then one `INSERT ... SELECT` from it, in one
  transaction.
Either way `ON CONFLICT (device_id, ts) DO NOTHING RETURNING` tells new fixes from duplicates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg
import orjson

from tracker.model import Fix, Position, Window
from tracker.store.database import DAY_MS, Database, ms_to_datetime
from tracker.store.latest import newest_positions

_STAGE_COLUMNS = (
    "device_id",
    "ts_ms",
    "lon",
    "lat",
    "speed",
    "heading",
    "accuracy",
    "altitude",
    "battery",
    "attrs",
    "cell",
    "flag",
)

COPY_MIN_FIXES = 256  # batches of this size or more go through COPY

_COLUMNS = "device_id, ts, geom, speed, heading, accuracy, altitude, battery, attrs, cell, flag"
_RETURNING = "RETURNING device_id, (extract(epoch FROM ts) * 1000)::bigint AS ts_ms"

INSERT_FROM_ARRAYS = f"""
INSERT INTO fixes ({_COLUMNS})
SELECT device_id, timestamptz 'epoch' + ts_ms * interval '1 millisecond',
       ST_SetSRID(ST_MakePoint(lon, lat), 4326), speed, heading, accuracy, altitude, battery, attrs, cell,
       flag
FROM unnest($1::text[], $2::bigint[], $3::float8[], $4::float8[], $5::real[], $6::real[], $7::real[],
            $8::real[], $9::real[], $10::jsonb[], $11::bigint[], $12::text[])
     AS u(device_id, ts_ms, lon, lat, speed, heading, accuracy, altitude, battery, attrs, cell, flag)
ON CONFLICT (device_id, ts) DO NOTHING
"""
RETURNING_KEYS = _RETURNING
_INSERT_ARRAYS = INSERT_FROM_ARRAYS + _RETURNING + "\n"

# Each connection's staging table for COPY (ON COMMIT DELETE ROWS: empty outside a write).
_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS fix_stage (
    device_id text, ts_ms bigint, lon float8, lat float8, speed real, heading real,
    accuracy real, altitude real, battery real, attrs jsonb, cell bigint, flag text
) ON COMMIT DELETE ROWS
"""

_MOVE_STAGED = f"""
INSERT INTO fixes ({_COLUMNS})
SELECT device_id, timestamptz 'epoch' + ts_ms * interval '1 millisecond',
       ST_SetSRID(ST_MakePoint(lon, lat), 4326), speed, heading, accuracy, altitude, battery, attrs, cell,
       flag
FROM fix_stage
ON CONFLICT (device_id, ts) DO NOTHING
{_RETURNING}
"""


def fix_records(fixes: Sequence[Fix]) -> list[tuple[Any, ...]]:
    """One row per fix in the staging table's column order (`_STAGE_COLUMNS`)."""
    return [
        (
            f.device,
            f.ts,
            f.lon,
            f.lat,
            f.speed,
            f.heading,
            f.accuracy,
            f.altitude,
            f.battery,
            orjson.dumps(f.attrs).decode() if f.attrs is not None else None,
            f.cell,
            f.flag,
        )
        for f in fixes
    ]


def fix_columns(records: Sequence[tuple[Any, ...]]) -> list[list[Any]]:
    """The arrays `INSERT_ARRAYS` takes as $1..$12."""
    return [list(column) for column in zip(*records, strict=True)]


def days_of(fixes: Sequence[Fix]) -> set[int]:
    """The UTC days (partitions of `fixes`) that a batch writes into."""
    return {f.ts // DAY_MS for f in fixes}


async def write_fixes(conn: asyncpg.Connection, fixes: Sequence[Fix]) -> set[tuple[str, int]]:
    """Store `fixes` atomically on `conn`; return the (device, ts) keys that were new (coroutine).

    A key missing from the result was already stored (a retry) or repeated within the batch. Either
    every fix of the batch is committed or, on error, none is. The partitions for `days_of(fixes)` must
    exist (`Database.ensure_partitions`).
    """
    records = fix_records(fixes)
    if len(records) < COPY_MIN_FIXES:
        rows = await conn.fetch(_INSERT_ARRAYS, *fix_columns(records))
    else:
        async with conn.transaction():
            # Made here rather than when the pool connects: a read-only database refuses it, and the
            # connection must still work once the database takes writes again.
            await conn.execute(_STAGE)
            await conn.copy_records_to_table("fix_stage", records=records, columns=_STAGE_COLUMNS)
            rows = await conn.fetch(_MOVE_STAGED)
    return {(r[0], r[1]) for r in rows}


async def latest_positions(db: Database) -> list[tuple[Position, int]]:
    """The newest stored fix of every device that has one, as (position, integer H3 cell), for the live
    index and the fence heads at start-up (coroutine): `newest_positions` of every fleet."""
    return await newest_positions(db)


async def positions_page(db: Database, device: str, window: Window) -> list[dict[str, Any]]:
    """Up to `window.limit` + 1 fixes of `device` in the window (`after`: a ts), oldest first (coroutine)."""
    lower = max(window.from_ms, window.after + 1) if window.after is not None else window.from_ms
    async with db.pool.acquire() as conn:
        rows = await conn.fetch(
            """
            SELECT (extract(epoch FROM ts) * 1000)::bigint, ST_X(geom), ST_Y(geom), speed, heading,
                   accuracy, altitude, battery, cell, flag
            FROM fixes WHERE device_id = $1 AND ts >= $2 AND ts < $3
            ORDER BY ts LIMIT $4
            """,
            device,
            ms_to_datetime(lower),
            ms_to_datetime(window.to_ms),
            window.limit + 1,
        )
    keys = ("ts", "lon", "lat", "speed", "heading", "accuracy", "altitude", "battery", "cell", "flag")
    return [dict(zip(keys, r, strict=True)) for r in rows]


async def good_fixes_around(
    db: Database, runs: Mapping[str, tuple[int, int]]
) -> dict[str, list[tuple[int, float, float]]]:
    """Per device of `runs` (device -> (from, to) ms), its stored good (unflagged) fixes with from <= ts <=
    to, with the one before and the one after, as (ts, lat, lon) in time order: the neighbours a late run
    of fixes is tested against. One query for every device (coroutine)."""
    devices = list(runs)
    rows = await db.pool.fetch(
        """
        SELECT k.device_id, (extract(epoch FROM f.ts) * 1000)::bigint AS ts_ms, ST_Y(f.geom), ST_X(f.geom)
        FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[]) AS k(device_id, lo, hi)
        CROSS JOIN LATERAL (
            (SELECT ts, geom FROM fixes WHERE device_id = k.device_id AND ts < k.lo AND flag IS NULL
             ORDER BY ts DESC LIMIT 1)
            UNION ALL
            (SELECT ts, geom FROM fixes
             WHERE device_id = k.device_id AND ts >= k.lo AND ts <= k.hi AND flag IS NULL)
            UNION ALL
            (SELECT ts, geom FROM fixes WHERE device_id = k.device_id AND ts > k.hi AND flag IS NULL
             ORDER BY ts LIMIT 1)
        ) f
        ORDER BY k.device_id, ts_ms
        """,
        devices,
        [ms_to_datetime(runs[d][0]) for d in devices],
        [ms_to_datetime(runs[d][1]) for d in devices],
    )
    out: dict[str, list[tuple[int, float, float]]] = {d: [] for d in devices}
    for device, ts, lat, lon in rows:
        out[device].append((ts, lat, lon))
    return out
