"""Stored fixes of many devices over a long window, read back for re-evaluation (the geofence dry-run).

Policy: the window is read as consecutive time chunks, each one `COPY (SELECT ...) TO STDOUT (FORMAT
binary)` whose rows all have the same width (no NULLs: missing speed and accuracy come as NaN, the device
as its position in the caller's list), so numpy reads a chunk as one structured array instead of asyncpg
making a Python object per value. Chunks are cut by time, not by count, so a device's fixes never come
back out of order across chunks; their length adapts to the density seen so far (about `CHUNK_FIXES`
each), is bounded by the number of devices (`BUSIEST_INTERVAL_MS`), and a silence is skipped to the next
fix. Rows within a chunk are in no particular order: the caller sorts them. Fixes stored with a `flag`
are left out, as live fence evaluation left them out. `fixes_at` makes `Fix` objects of only the rows a
caller needs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import asyncpg
import numpy as np
import numpy.typing as npt

from tracker.model import Fix
from tracker.store.database import Database, ms_to_datetime

CHUNK_FIXES = 250_000  # fixes per chunk aimed at: a few MB of rows, a fraction of a second of detection
FIRST_CHUNK_MS = 10 * 60_000
MIN_CHUNK_MS = 1_000
MAX_CHUNK_MS = 24 * 3_600_000
BUSIEST_INTERVAL_MS = 2_000  # the densest reporting a chunk's length allows for (a fix every 2 s each)

# One binary COPY row: the field count, then each field's length and value, big-endian.
_ROW = np.dtype(
    [
        ("fields", ">i2"),
        ("n_len", ">i4"),
        ("n", ">i4"),
        ("ts_len", ">i4"),
        ("ts_us", ">i8"),  # timestamptz: microseconds since 2000-01-01 UTC
        ("x_len", ">i4"),
        ("lon", ">f8"),
        ("y_len", ">i4"),
        ("lat", ">f8"),
        ("speed_len", ">i4"),
        ("speed", ">f4"),
        ("acc_len", ">i4"),
        ("accuracy", ">f4"),
    ]
)
_LENGTHS = {"n_len": 4, "ts_len": 8, "x_len": 8, "y_len": 8, "speed_len": 4, "acc_len": 4}
_HEADER = 19  # signature (11), flags (4), header extension length (4)
_PG_EPOCH_MS = 946_684_800_000  # 2000-01-01 in ms since 1970

# Devices joined by their position in $1, so a row carries a 4-byte number instead of the id's text.
_CHUNK = """
SELECT d.n::int4, f.ts, ST_X(f.geom), ST_Y(f.geom),
       coalesce(f.speed, 'NaN'::real), coalesce(f.accuracy, 'NaN'::real)
FROM fixes f JOIN unnest($1::text[]) WITH ORDINALITY AS d(id, n) ON d.id = f.device_id
WHERE f.ts >= $2 AND f.ts < $3 AND f.flag IS NULL
"""

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class FixColumns:
    """The fixes of one chunk as parallel arrays: `device` indexes the caller's device list; speed (m/s)
    and accuracy (m) are NaN where none was stored."""

    device: Ints
    ts: Ints
    lon: Floats
    lat: Floats
    speed: Floats
    accuracy: Floats

    def __len__(self) -> int:
        return len(self.ts)


def parse_copy(data: bytes) -> FixColumns:
    """The rows of one binary COPY of `_CHUNK` as columns. Raises ValueError on an unexpected layout."""
    body = len(data) - _HEADER - 2  # the trailer is a field count of -1
    if body < 0 or body % _ROW.itemsize or not data.startswith(b"PGCOPY\n\xff\r\n\x00"):
        raise ValueError(f"unexpected binary COPY layout ({len(data)} bytes)")
    rows = np.frombuffer(data, dtype=_ROW, count=body // _ROW.itemsize, offset=_HEADER)
    if len(rows) and ((rows["fields"] != 6).any() or any((rows[k] != v).any() for k, v in _LENGTHS.items())):
        raise ValueError("unexpected binary COPY row: a field of another width or a NULL")
    return FixColumns(
        device=rows["n"].astype(np.int64) - 1,  # WITH ORDINALITY counts from 1
        ts=rows["ts_us"] // 1000 + _PG_EPOCH_MS,
        lon=rows["lon"].astype(np.float64),
        lat=rows["lat"].astype(np.float64),
        speed=rows["speed"].astype(np.float64),
        accuracy=rows["accuracy"].astype(np.float64),
    )


async def read_chunk(
    conn: asyncpg.Connection, devices: Sequence[str], from_ms: int, to_ms: int
) -> FixColumns:
    """The unflagged fixes of `devices` with from <= ts < to, in no order (coroutine)."""
    parts: list[bytes] = []

    async def collect(chunk: bytes) -> None:
        parts.append(chunk)

    await conn.copy_from_query(
        _CHUNK,
        list(devices),
        ms_to_datetime(from_ms),
        ms_to_datetime(to_ms),
        output=collect,
        format="binary",
    )
    return parse_copy(b"".join(parts))


async def chunks(
    db: Database, devices: Sequence[str], from_ms: int, to_ms: int, target: int = CHUNK_FIXES
) -> AsyncIterator[tuple[int, int, FixColumns]]:
    """(chunk from, chunk to, its fixes) covering [from_ms, to_ms) in time order, each about `target`
    fixes (async generator; one pooled connection while it runs; empty chunks are skipped)."""
    if not devices or from_ms >= to_ms:
        return
    # However quiet the window was so far, a span never holds more than `target` fixes of devices
    # reporting every BUSIEST_INTERVAL_MS: a sparse night must not make the morning one huge chunk.
    longest = max(MIN_CHUNK_MS, min(MAX_CHUNK_MS, target * BUSIEST_INTERVAL_MS // len(devices)))
    span = min(FIRST_CHUNK_MS, longest)
    start = from_ms
    async with db.pool.acquire() as conn:
        while start < to_ms:
            end = min(to_ms, start + span)
            columns = await read_chunk(conn, devices, start, end)
            if not len(columns):  # skip the silence to the next fix, keeping the span
                following = await _next_fix_ms(conn, devices, end, to_ms)
                if following is None:
                    return
                start = following
                continue
            yield start, end, columns
            # The next span from this one's density, at most 4x longer: a quiet hour is no promise.
            per_ms = len(columns) / (end - start)
            span = int(min(max(target / per_ms, MIN_CHUNK_MS), span * 4, longest))
            start = end


async def _next_fix_ms(
    conn: asyncpg.Connection, devices: Sequence[str], from_ms: int, to_ms: int
) -> int | None:
    """The time of the first unflagged fix of `devices` with from <= ts < to, None when there is none: one
    probe of the primary key per device (coroutine)."""
    found: int | None = await conn.fetchval(
        """
        SELECT (extract(epoch FROM min(n.ts)) * 1000)::bigint FROM unnest($1::text[]) AS d(id)
        CROSS JOIN LATERAL (
            SELECT ts FROM fixes WHERE device_id = d.id AND ts >= $2 AND ts < $3 AND flag IS NULL
            ORDER BY ts LIMIT 1
        ) n
        """,
        list(devices),
        ms_to_datetime(from_ms),
        ms_to_datetime(to_ms),
    )
    return found


async def device_fleets(
    db: Database, fleets: Sequence[str] | None, devices: Sequence[str] | None
) -> dict[str, str]:
    """Device id -> fleet of the registered devices among `devices` (None: all) in `fleets` (None: any),
    in id order (coroutine)."""
    rows = await db.pool.fetch(
        """
        SELECT id, fleet FROM devices
        WHERE ($1::text[] IS NULL OR fleet = ANY($1)) AND ($2::text[] IS NULL OR id = ANY($2))
        ORDER BY id
        """,
        None if fleets is None else list(fleets),
        None if devices is None else list(devices),
    )
    return {r[0]: r[1] for r in rows}


def to_fixes(columns: FixColumns, devices: Sequence[str], fleets: Sequence[str]) -> list[Fix]:
    """The chunk's fixes in time order, as the detector takes them (NaN speed or accuracy: None)."""
    return fixes_at(columns, np.argsort(columns.ts, kind="stable"), devices, fleets)


def fixes_at(columns: FixColumns, order: Ints, devices: Sequence[str], fleets: Sequence[str]) -> list[Fix]:
    """The chunk's fixes at `order` (indexes), in that order (NaN speed or accuracy: None)."""
    index = columns.device[order]
    names = np.asarray(devices, dtype=object)[index].tolist()
    fleet = np.asarray(fleets, dtype=object)[index].tolist()
    n = len(order)
    return list(
        map(
            Fix,
            names,
            fleet,
            columns.ts[order].tolist(),
            columns.lat[order].tolist(),
            columns.lon[order].tolist(),
            _none_for_nan(columns.speed[order]),
            [None] * n,
            _none_for_nan(columns.accuracy[order]),
        )
    )


def _none_for_nan(values: np.ndarray) -> list[float | None]:
    if not np.isnan(values).any():  # the common case: every fix has one
        return values.tolist()  # type: ignore[no-any-return]
    out = values.astype(object)
    out[np.isnan(values)] = None
    return out.tolist()  # type: ignore[no-any-return]
