"""Reads for daily reports: every fix of many devices over one window, and their event and message counts.

Policy: a fleet-day is millions of fixes, so they do not come back as rows. Each of a few connections
streams a share of the devices through binary COPY, rows of fixed width (device key, time, WKB point,
speed) that numpy reads in place, in (device, time) order straight off the covering primary key (an
index-only scan). Flagged fixes are left out as in every trail, but not by a filter in that scan (the
flag is not in the index, so the scan would visit the heap for every fix): the few flagged keys come from
their own partial index and are dropped here. The device key is PostgreSQL's 64-bit hash of the id, so
that rows stay fixed-width; ids that hash alike are read one by one instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from tracker.store.database import Database, ms_to_datetime
from tracker.trail import Trail

STREAMS = 2  # connections reading fixes at once: the measured machine has two cores
_EPOCH_2000_MS = 946_684_800_000  # PostgreSQL's binary timestamps count µs from 2000-01-01 UTC
_HEADER = 19  # PGCOPY signature (11), flags (4), header extension length (4, zero)
_FLUSH_BYTES = 2 << 20  # parse what arrived every few MB, not on every network read

# One row: field count, then length + value for key (int8), ts (timestamptz), point (WKB, 21 bytes),
# speed (float4, NaN when not reported). Big-endian but for the WKB, which is asked for little-endian.
_ROW = np.dtype(
    [
        ("fields", ">i2"),
        ("key_len", ">i4"),
        ("key", ">i8"),
        ("ts_len", ">i4"),
        ("ts_us", ">i8"),
        ("wkb_len", ">i4"),
        ("wkb_order", "u1"),
        ("wkb_type", "<u4"),
        ("lon", "<f8"),
        ("lat", "<f8"),
        ("speed_len", ">i4"),
        ("speed", ">f4"),
    ]
)

_FIXES = """
SELECT hashtextextended(device_id, 0), ts, ST_AsBinary(geom, 'NDR'), coalesce(speed, 'NaN'::real)
FROM fixes WHERE device_id = ANY($1::text[]) AND ts >= $2 AND ts < $3
ORDER BY device_id, ts
"""

_FLAGGED = """
SELECT device_id, (extract(epoch FROM ts) * 1000)::bigint FROM fixes
WHERE device_id = ANY($1::text[]) AND ts >= $2 AND ts < $3 AND flag IS NOT NULL
"""

_KEYS = "SELECT id, hashtextextended(id, 0) FROM unnest($1::text[]) AS id"

_EVENTS = """
SELECT device_id, type, count(*) FROM events
WHERE ts >= $2 AND ts < $3 AND device_id = ANY($1::text[])
GROUP BY device_id, type
"""

_MESSAGES = """
SELECT device_id, direction, count(*) FROM messages
WHERE created_ts >= $2 AND created_ts < $3 AND device_id = ANY($1::text[])
GROUP BY device_id, direction
"""

Counts = dict[str, dict[str, int]]  # device -> kind -> count
_Columns = tuple[npt.NDArray[Any], ...]  # key, ts (ms), lat, lon, speed of consecutive rows


class _Splitter:
    """Cuts one COPY stream into whole devices: rows are parsed a few MB at a time, their columns
    converted for all of them at once, and each device handed on (to `queue`) once the next one begins."""

    def __init__(self, names: dict[int, str], queue: asyncio.Queue[tuple[str, Trail] | None]) -> None:
        self._names = names
        self._queue = queue
        self._chunks: list[bytes] = []
        self._size = 0
        self._skip = _HEADER
        self._carry: _Columns | None = None  # the columns of the unfinished device

    async def feed(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._size += len(chunk)
        if self._size >= _FLUSH_BYTES:
            await self._parse(final=False)

    async def finish(self) -> None:
        await self._parse(final=True)

    async def _parse(self, final: bool) -> None:
        data = b"".join(self._chunks)
        end = len(data) - 2 if final else len(data)  # the trailer (-1 as int16) is left over
        whole = max(0, (end - self._skip) // _ROW.itemsize)
        rows = np.frombuffer(data, dtype=_ROW, count=whole, offset=self._skip) if whole else None
        rest = data[self._skip + whole * _ROW.itemsize :]
        self._chunks, self._size, self._skip = ([rest] if rest else []), len(rest), 0
        columns = self._carry
        if rows is not None:
            parsed: _Columns = (
                rows["key"].astype(np.int64),
                rows["ts_us"].astype(np.int64) // 1000 + _EPOCH_2000_MS,
                rows["lat"].astype(np.float64),
                rows["lon"].astype(np.float64),
                rows["speed"].astype(np.float64),
            )
            columns = (
                parsed
                if columns is None
                else tuple(np.concatenate(p) for p in zip(columns, parsed, strict=True))
            )
        if columns is None:
            return
        keys = columns[0]
        bounds = [0, *(np.flatnonzero(keys[1:] != keys[:-1]) + 1).tolist(), len(keys)]
        done = len(bounds) - 1 if final else len(bounds) - 2  # the last device may go on
        for a, b in zip(bounds[:done], bounds[1 : done + 1], strict=True):
            ts, lat, lon, speed = (c[a:b] for c in columns[1:])
            await self._queue.put(
                (self._names[int(keys[a])], Trail(ts, lat, lon, speed, np.full(b - a, np.nan)))
            )
        last = bounds[done]
        self._carry = None if final or last == len(keys) else tuple(c[last:] for c in columns)


async def tracks(
    db: Database, devices: Sequence[str], from_ms: int, to_ms: int
) -> AsyncIterator[tuple[str, Trail]]:
    """(device, trail) of every device of `devices` with an unflagged fix with from <= ts < to, its
    fixes in time order (speed NaN where not reported, heading not read), in no particular order of
    devices (async generator)."""
    if not devices:
        return
    lo, hi = ms_to_datetime(from_ms), ms_to_datetime(to_ms)
    async with db.pool.acquire() as conn:
        keyed = await conn.fetch(_KEYS, list(devices))
        flagged = await conn.fetch(_FLAGGED, list(devices), lo, hi)
    by_key: dict[int, list[str]] = {}
    for device, key in keyed:
        by_key.setdefault(int(key), []).append(device)
    names = {k: ids[0] for k, ids in by_key.items() if len(ids) == 1}
    alike = sorted(d for ids in by_key.values() if len(ids) > 1 for d in ids)
    drop: dict[str, list[int]] = {}
    for device, ts in flagged:
        drop.setdefault(device, []).append(int(ts))
    streamed = sorted(names.values())
    shares = [streamed[i::STREAMS] for i in range(STREAMS)] + [[d] for d in alike]
    queue: asyncio.Queue[tuple[str, Trail] | None] = asyncio.Queue(maxsize=64)

    async def read(share: list[str]) -> None:
        splitter = _Splitter({int(k): d for d, k in keyed if d in share} if len(share) == 1 else names, queue)
        async with db.pool.acquire() as conn:
            await conn.copy_from_query(_FIXES, share, lo, hi, output=splitter.feed, format="binary")
        await splitter.finish()

    async def read_all() -> None:
        try:
            # The streams run at once; devices whose keys collide are read one at a time after them.
            await asyncio.gather(*(read(s) for s in shares[:STREAMS] if s))
            for s in shares[STREAMS:]:
                await read(s)
        finally:
            await queue.put(None)

    reader = asyncio.create_task(read_all())
    try:
        while (item := await queue.get()) is not None:
            device, trail = item
            if device in drop:
                keep = ~np.isin(trail.ts, np.asarray(drop[device], dtype=np.int64))
                trail = trail.take(np.flatnonzero(keep))
            if len(trail):
                yield device, trail
        await reader  # raises what a stream raised
    finally:
        reader.cancel()


async def event_counts(db: Database, devices: Sequence[str], from_ms: int, to_ms: int) -> Counts:
    """Per device, its geofence events with from <= ts < to (fix time) by type (coroutine)."""
    return _counts(await db.pool.fetch(_EVENTS, list(devices), from_ms, to_ms))


async def message_counts(db: Database, devices: Sequence[str], from_ms: int, to_ms: int) -> Counts:
    """Per device, its messages stored with from <= created_ts < to, by direction (to_device,
    from_device) (coroutine)."""
    return _counts(await db.pool.fetch(_MESSAGES, list(devices), from_ms, to_ms))


def _counts(rows: Sequence[Sequence[object]]) -> Counts:
    out: Counts = {}
    for device, kind, n in rows:
        assert isinstance(device, str) and isinstance(kind, str) and isinstance(n, int)
        out.setdefault(device, {})[kind] = n
    return out
