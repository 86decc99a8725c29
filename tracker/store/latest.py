"""The newest stored good fix (no filter flagged it) of each device, read for a scope (one device, some
fleets, every fleet): what the live position and the fence head follow.

Processes of a cluster learn each other's moves through Redis a broadcast interval late (`tracker.livesync`),
but an acked fix is already committed here, so an answer that must be the cluster's reads it from here.
"""

from __future__ import annotations

import asyncpg

from tracker.geo import cell_hex
from tracker.model import Position
from tracker.store.database import Database

_SQL = """
SELECT d.id, d.fleet, f.ts_ms, f.lat, f.lon, f.speed, f.heading, f.cell
FROM devices d
CROSS JOIN LATERAL (
    SELECT (extract(epoch FROM ts) * 1000)::bigint AS ts_ms, ST_Y(geom) AS lat,
           ST_X(geom) AS lon, speed, heading, cell
    FROM fixes WHERE device_id = d.id AND flag IS NULL ORDER BY ts DESC LIMIT 1
) f
WHERE ($1::text IS NULL OR d.id = $1) AND ($2::text[] IS NULL OR d.fleet = ANY($2::text[]))
  AND ($3::text[] IS NULL OR d.id = ANY($3::text[]))
"""


async def newest_positions(
    db: Database,
    *,
    device: str | None = None,
    fleets: list[str] | None = None,
    devices: list[str] | None = None,
) -> list[tuple[Position, int]]:
    """The newest stored fix of `device`, or of every device of `fleets` (None: of every fleet), or of
    `devices`, as (position, integer H3 cell) pairs for `LiveIndex.load` (coroutine)."""
    async with db.pool.acquire() as conn:
        rows: list[asyncpg.Record] = await conn.fetch(_SQL, device, fleets, devices)
    return [
        (Position(d, fl, ts, lat, lon, sp, hd, cell_hex(cell)), cell)
        for d, fl, ts, lat, lon, sp, hd, cell in rows
    ]
