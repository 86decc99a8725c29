"""Reads for daily reports: every fix of many devices over one window, and their event and message counts.

Policy: a fleet-day is millions of fixes, so they do not come back as rows of Python objects. Each of a
few connections streams a share of the devices through binary COPY, device after device (a nested loop
over the share's ids, each device's fixes in time order straight off the covering primary key: an
index-only scan, partition after partition, with no merge of partitions), and numpy reads the rows in
place. A row is the device's position in the share (int4, not its id: every row has the same width, so
a whole chunk is one strided array, and PostgreSQL sends and compares no text per row), the time, the
WKB point and the speed. Nothing else is computed per row in PostgreSQL. Flagged fixes are left out as
in every trail, but not by a filter in that scan (the flag is not in the index, so the scan would visit
the table for every fix, five times slower): the few flagged keys come from their own partial index and
are dropped here.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import numpy as np
import numpy.typing as npt

from tracker.errors import TrackerError
from tracker.store.database import Database, ms_to_datetime
from tracker.trail import Trail

STREAMS = 2  # connections reading fixes at once: the measured machine has two cores
_EPOCH_2000_MS = 946_684_800_000  # PostgreSQL's binary timestamps count µs from 2000-01-01 UTC
_HEADER = 19  # PGCOPY signature (11), flags (4), header extension length (4, zero)
_FLUSH_BYTES = 2 << 20  # parse what arrived every few MB, not on every network read
_WKB_POINT = 21  # byte order (1), type (4), x and y (8 each)

# Device after device in the order of $1 (the nested loop keeps it; the parser checks it).
_FIXES = """
SELECT d.i::int4, f.ts, ST_AsBinary(f.geom, 'NDR'), coalesce(f.speed, 'NaN'::real)
FROM unnest($1::text[]) WITH ORDINALITY AS d(id, i)
CROSS JOIN LATERAL (
    SELECT ts, geom, speed FROM fixes WHERE device_id = d.id AND ts >= $2 AND ts < $3 ORDER BY ts
) AS f
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

# A row: big-endian but for the WKB, asked little-endian.
_ROW = np.dtype(
    [
        ("fields", ">i2"),
        ("device_len", ">i4"),
        ("device", ">i4"),  # 1-based position in the share's ids
        ("ts_len", ">i4"),
        ("ts_us", ">i8"),
        ("wkb_len", ">i4"),
        ("wkb_head", "V5"),  # byte order and type
        ("lon", "<f8"),
        ("lat", "<f8"),
        ("speed_len", ">i4"),
        ("speed", ">f4"),
    ]
)


class CopyFormatError(TrackerError, RuntimeError):
    """The fixes' COPY stream is not what the query asks for (a row of another width, devices out of
    order): a bug or a schema this version does not know, never silently a wrong report."""


class _Splitter:
    """Cuts one COPY stream into whole devices: what arrived is parsed a few MB at a time, and each
    device handed on (to `queue`, with its id from `ids`) once the next one begins."""

    def __init__(self, queue: asyncio.Queue[tuple[str, Trail] | None], ids: Sequence[str]) -> None:
        self._queue = queue
        self._ids = ids
        self._chunks: list[bytes] = []
        self._size = 0
        self._skip = _HEADER
        self._last = 0  # the position of the last device seen
        self._open: tuple[int, list[Trail]] | None = None  # the device the stream may still go on with

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
            trail = parts[0] if len(parts) == 1 else _joined(parts)
            await self._queue.put((self._ids[device - 1], trail))

    async def _parse(self, final: bool) -> None:
        data = b"".join(self._chunks)
        end = len(data) - 2 if final else len(data)  # the trailer (-1 as int16) is left over
        p = self._skip
        n = max(0, (end - p) // _ROW.itemsize)
        if final and p + n * _ROW.itemsize != end:
            raise CopyFormatError(f"the fixes' COPY stream ends in a partial row ({end - p} bytes)")
        rows = np.frombuffer(data, dtype=_ROW, count=n, offset=p)
        for part, device, whole in _devices(rows, self._last):
            self._last = device
            if self._open is not None and self._open[0] == device:
                self._open[1].append(part)
            else:
                await self._close_open()
                self._open = (device, [part])
            if whole:
                await self._close_open()
        p += n * _ROW.itemsize
        rest = data[p:]
        self._chunks, self._size, self._skip = ([rest] if rest else []), len(rest), 0


def _devices(rows: npt.NDArray[np.void], last: int) -> list[tuple[Trail, int, bool]]:
    """The rows (of one parse) cut at each change of device: (its fixes, its position, whether the next
    device begins after them). Checks the shape and order the query promises, all rows at once."""
    if not len(rows):
        return []
    device = rows["device"].astype(np.int32)
    shape = (rows["fields"] != 4) | (rows["device_len"] != 4) | (rows["wkb_len"] != _WKB_POINT)
    if bool(shape.any()):
        raise CopyFormatError("a row of the fixes' COPY stream is not (int4, timestamptz, WKB point, real)")
    ts = rows["ts_us"].astype(np.int64)
    if int(device[0]) < last or bool(np.any(device[1:] < device[:-1])):
        raise CopyFormatError("the fixes' COPY stream has its devices out of order")
    cuts = np.flatnonzero(device[1:] != device[:-1]) + 1
    same = np.ones(len(ts) - 1, dtype=np.bool_)
    same[cuts - 1] = False
    if bool(np.any(ts[1:][same] <= ts[:-1][same])):
        raise CopyFormatError("the fixes' COPY stream has a device's fixes out of time order")
    ts //= 1000
    ts += _EPOCH_2000_MS
    lat, lon = rows["lat"].astype(np.float64), rows["lon"].astype(np.float64)
    speed, heading = rows["speed"].astype(np.float64), np.full(len(ts), np.nan)
    bounds = [0, *cuts.tolist(), len(ts)]
    return [
        (Trail(ts[a:b], lat[a:b], lon[a:b], speed[a:b], heading[a:b]), int(device[a]), b < len(ts))
        for a, b in zip(bounds[:-1], bounds[1:], strict=False)
    ]


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
        splitter = _Splitter(queue, share)
        async with db.pool.acquire() as conn, conn.transaction(readonly=True):
            # Each device's fixes come off the key in its order, partition after partition; a sort
            # would only cost. JIT would compile expressions for a plan that is all index and output.
            await conn.execute("SET LOCAL enable_sort = off; SET LOCAL jit = off")
            await conn.copy_from_query(_FIXES, share, lo, hi, output=splitter.feed, format="binary")
        await splitter.finish()

    async def read_all() -> None:
        streams = [asyncio.create_task(read(s)) for s in shares if s]
        try:
            await asyncio.gather(*streams)
        finally:
            # A failed stream stops the other, which would otherwise wait for good on a full queue that
            # nobody reads, holding its connection; both have let go of their connections after this.
            for stream in streams:
                stream.cancel()
            await asyncio.gather(*streams, return_exceptions=True)
            task = asyncio.current_task()
            if task is None or not task.cancelling():  # else the reader is gone: nobody waits for the end
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
