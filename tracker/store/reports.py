"""Reads for daily reports: every fix of many devices over one window, and their event and message counts.

Policy: a fleet-day is millions of fixes, so they do not come back as rows of Python objects. Each of a
few connections streams a share of the devices through binary COPY, in (device, time) order straight off
the covering primary key (an index-only scan), and numpy reads the rows in place: a row is the device id,
the time, the WKB point and the speed, and all rows of one device have the same width, so each device is
one strided array. Nothing is computed per row in PostgreSQL beyond the WKB (a hash of the id as a
fixed-width key cost a third of the server's time). Flagged fixes are left out as in every trail, but not
by a filter in that scan (the flag is not in the index, so the scan would visit the table for every fix,
five times slower): the few flagged keys come from their own partial index and are dropped here.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from functools import cache

import numpy as np
import numpy.typing as npt

from tracker.store.database import Database, ms_to_datetime
from tracker.trail import Trail

STREAMS = 2  # connections reading fixes at once: the measured machine has two cores
_EPOCH_2000_MS = 946_684_800_000  # PostgreSQL's binary timestamps count µs from 2000-01-01 UTC
_HEADER = 19  # PGCOPY signature (11), flags (4), header extension length (4, zero)
_FLUSH_BYTES = 2 << 20  # parse what arrived every few MB, not on every network read
_FIXED = 51  # bytes of a row besides its device id: field count, 4 lengths, ts (8), WKB (21), speed (4)

_FIXES = """
SELECT device_id, ts, ST_AsBinary(geom, 'NDR'), coalesce(speed, 'NaN'::real)
FROM fixes WHERE device_id = ANY($1::text[]) AND ts >= $2 AND ts < $3
ORDER BY device_id, ts
"""

_FLAGGED = """
SELECT device_id, (extract(epoch FROM ts) * 1000)::bigint FROM fixes
WHERE device_id = ANY($1::text[]) AND ts >= $2 AND ts < $3 AND flag IS NOT NULL
"""

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


@cache
def _row(id_len: int) -> np.dtype[np.void]:
    """The row of a device whose id is `id_len` bytes: big-endian but for the WKB, asked little-endian."""
    return np.dtype(
        [
            ("head", f"V{6 + id_len}"),  # field count, id length, id
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


@cache
def _id_view(id_len: int) -> np.dtype[np.void]:
    """A row as (field count, id with its length, the rest): the id compared as one opaque value."""
    return np.dtype([("fields", "V2"), ("id", f"V{4 + id_len}"), ("rest", f"V{_FIXED - 6}")])


def _run_length(ids: npt.NDArray[np.void]) -> int:
    """How many of `ids` (the ids of rows of one width, from a device's first row on) are that device's:
    up to the first that differs. Rows past the device may lie at other offsets, but the first of the
    next device starts exactly there and differs, so the first difference is the end. Searched in
    growing blocks: a device's rows are compared about once."""
    k, block = 1, 64
    while k < len(ids):
        hi = min(len(ids), k + block)
        differs = np.flatnonzero(ids[k:hi] != ids[0])
        if differs.size:
            return k + int(differs[0])
        k, block = hi, block * 4
    return len(ids)


class _Splitter:
    """Cuts one COPY stream into whole devices: what arrived is parsed a few MB at a time, device by
    device, and each device handed on (to `queue`) once the next one begins."""

    def __init__(self, queue: asyncio.Queue[tuple[str, Trail] | None]) -> None:
        self._queue = queue
        self._chunks: list[bytes] = []
        self._size = 0
        self._skip = _HEADER
        self._open: tuple[str, list[Trail]] | None = None  # the device the stream may still go on with

    async def feed(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._size += len(chunk)
        if self._size >= _FLUSH_BYTES:
            await self._parse(final=False)

    async def finish(self) -> None:
        await self._parse(final=True)
        await self._close_open()

    async def _close_open(self) -> None:
        if self._open is not None:
            device, parts = self._open
            self._open = None
            await self._queue.put((device, parts[0] if len(parts) == 1 else _joined(parts)))

    async def _parse(self, final: bool) -> None:
        data = b"".join(self._chunks)
        end = len(data) - 2 if final else len(data)  # the trailer (-1 as int16) is left over
        p = self._skip
        while p + 6 <= end:
            id_len = int.from_bytes(data[p + 2 : p + 6], "big")
            width = _FIXED + id_len
            fits = (end - p) // width
            if fits == 0:
                break
            run = _run_length(np.frombuffer(data, dtype=_id_view(id_len), count=fits, offset=p)["id"])
            device = data[p + 6 : p + 6 + id_len].decode()
            part = _trail(np.frombuffer(data, dtype=_row(id_len), count=run, offset=p))
            if self._open is not None and self._open[0] == device:
                self._open[1].append(part)
            else:
                await self._close_open()
                self._open = (device, [part])
            p += run * width
            if run < fits:  # the next device has begun: this one is whole
                await self._close_open()
        rest = data[p:]
        self._chunks, self._size, self._skip = ([rest] if rest else []), len(rest), 0


def _trail(rows: npt.NDArray[np.void]) -> Trail:
    """One device's rows (in time order) as a Trail; heading is not read (NaN)."""
    return Trail(
        rows["ts_us"].astype(np.int64) // 1000 + _EPOCH_2000_MS,
        rows["lat"].astype(np.float64),
        rows["lon"].astype(np.float64),
        rows["speed"].astype(np.float64),
        np.full(len(rows), np.nan),
    )


def _joined(parts: list[Trail]) -> Trail:
    return Trail(
        *(np.concatenate([getattr(t, c) for t in parts]) for c in ("ts", "lat", "lon", "speed", "heading"))
    )


async def tracks(
    db: Database, devices: Sequence[str], from_ms: int, to_ms: int
) -> AsyncIterator[tuple[str, Trail]]:
    """(device, trail) of every device of `devices` with an unflagged fix with from <= ts < to, its
    fixes in time order (speed NaN where not reported, heading not read), in no particular order of
    devices (async generator)."""
    if not devices:
        return
    lo, hi = ms_to_datetime(from_ms), ms_to_datetime(to_ms)
    drop: dict[str, list[int]] = {}
    for device, ts in await db.pool.fetch(_FLAGGED, list(devices), lo, hi):
        drop.setdefault(device, []).append(int(ts))
    ordered = sorted(devices)
    shares = [ordered[i::STREAMS] for i in range(STREAMS)]
    queue: asyncio.Queue[tuple[str, Trail] | None] = asyncio.Queue(maxsize=64)

    async def read(share: list[str]) -> None:
        splitter = _Splitter(queue)
        async with db.pool.acquire() as conn, conn.transaction(readonly=True):
            # The key order is the point: a whole fleet's day may look cheaper to the planner as a
            # sequential scan and a sort, which would sort millions of rows on disk. JIT would compile
            # expressions for a plan that is all index and output.
            await conn.execute("SET LOCAL enable_sort = off; SET LOCAL jit = off")
            await conn.copy_from_query(_FIXES, share, lo, hi, output=splitter.feed, format="binary")
        await splitter.finish()

    async def read_all() -> None:
        try:
            await asyncio.gather(*(read(s) for s in shares if s))
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


Counts = dict[str, dict[str, int]]  # device -> kind -> count


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
