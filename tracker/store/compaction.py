"""Compaction of closed days of `fixes`: once a UTC day's partition gets no more of its usual fixes, its
primary key is rebuilt, once.

Policy: live ingest writes fixes in time order across devices, so every device's range of the (device_id,
ts) key grows in the middle of the B-tree, and page splits leave a day's key about half full (2.4 GB where
a rebuild holds the same keys in 1.35 GB). A daily report reads a whole fleet-day off that key, so a
compacted day reads about half the pages. Only that key is rebuilt: the GiST of positions shrank 3 % when
rebuilt (measured), which would not pay for doubling the work. A daily partition is due `after_s` after
its day ended (late fixes are rare by then), and only within `WINDOW_DAYS` (a first start on years of
history does not rebuild them all; reports read recent days) and never one that retention drops within a
day (DROP would queue behind the rebuild). The table is vacuumed (an index-only scan needs its visibility
map) and its key rebuilt with REINDEX INDEX CONCURRENTLY: writers and readers never wait.
`compacted_partitions` records each day done. One process of a cluster works at a time (a session
advisory lock, tried, never waited for: the others skip the round). A late fix into a compacted day only
splits a page again.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

import asyncpg

from tracker.errors import Busy
from tracker.store.partitions import EPOCH

log = logging.getLogger("tracker.store.compaction")

DAY_MS = 86_400_000
WINDOW_DAYS = 7  # closed days looked at, newest first
ADVISORY_LOCK = 7_214_003  # beside database.py's migration (…001) and partition (…002) locks
_DAILY = re.compile(r"fixes_p(\d{8})")
_CHECK_EVERY_S = 3600.0  # the longest sleep between rounds, whatever is due

_PARTITIONS = (
    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
    "WHERE i.inhparent = 'fixes'::regclass"
)
_PRIMARY_KEY = (
    "SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = $1::regclass AND indisprimary"
)
# What an interrupted REINDEX CONCURRENTLY leaves behind: invalid copies named *_ccnew or *_ccold.
_LEFTOVERS = r"""
SELECT i.relname FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
WHERE x.indrelid = $1::regclass AND NOT x.indisvalid AND i.relname ~ '_cc(new|old)[0-9]*$'
"""
_RECORD = """
INSERT INTO compacted_partitions (partition, key_bytes_before, key_bytes_after, seconds)
VALUES ($1, $2, $3, $4)
ON CONFLICT (partition) DO UPDATE SET compacted = now(), key_bytes_before = $2, key_bytes_after = $3,
    seconds = $4
"""


@dataclass(frozen=True)
class Compacted:
    """One partition compacted: its primary key's bytes before and after, and how long it took."""

    partition: str
    key_bytes_before: int
    key_bytes_after: int
    seconds: float


def partition_day(name: str) -> int | None:
    """The day (since the epoch, UTC) of a daily partition's name; None for any other table."""
    m = _DAILY.fullmatch(name)
    if m is None:
        return None
    try:
        return (date(int(m[1][:4]), int(m[1][4:6]), int(m[1][6:])) - EPOCH).days
    except ValueError:
        return None


def due(
    names: Iterable[str],
    done: Iterable[str],
    now_ms: int,
    after_s: float,
    window_days: int = WINDOW_DAYS,
    retention_days: int | None = None,
) -> list[str]:
    """The daily partitions of `names` to compact at `now_ms`, newest first (pure; see the policy)."""
    today = now_ms // DAY_MS
    oldest = today - window_days
    if retention_days is not None:
        oldest = max(oldest, today - retention_days + 1)  # drop_expired(today - days) takes day < that
    skip = set(done)
    out = []
    for name in names:
        day = partition_day(name)
        if day is None or name in skip or day < oldest:
            continue
        if (day + 1) * DAY_MS + after_s * 1000 <= now_ms:
            out.append((day, name))
    return [name for _, name in sorted(out, reverse=True)]


def seconds_to_next(now_ms: int, after_s: float) -> float:
    """Seconds from `now_ms` until the next day becomes due (`after_s` past a UTC midnight), at most an
    hour: rounds that failed or were skipped are tried again."""
    until = (DAY_MS - (now_ms - round(after_s * 1000)) % DAY_MS) / 1000
    return min(_CHECK_EVERY_S, until + 1.0)


async def compact(
    url: str,
    now_ms: int,
    after_s: float,
    window_days: int = WINDOW_DAYS,
    retention_days: int | None = None,
) -> list[Compacted]:
    """Compact every partition due at `now_ms` on the database at `url`, on a connection of its own (a
    rebuild takes minutes; the pool's connections serve requests); what it did (coroutine). Busy when
    another process is compacting."""
    conn = await asyncpg.connect(url)
    try:
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", ADVISORY_LOCK):
            raise Busy("another process is compacting the closed days of fixes", retry_after_s=_CHECK_EVERY_S)
        # Records of partitions that retention dropped go too, so a name made again starts afresh.
        await conn.execute(
            "DELETE FROM compacted_partitions WHERE to_regclass(quote_ident(partition)) IS NULL"
        )
        names = [r[0] for r in await conn.fetch(_PARTITIONS)]
        done = [r[0] for r in await conn.fetch("SELECT partition FROM compacted_partitions")]
        return [
            await _compact_one(conn, name)
            for name in due(names, done, now_ms, after_s, window_days, retention_days)
        ]
    finally:
        await conn.close()  # also releases the advisory lock


async def _compact_one(conn: asyncpg.Connection, name: str) -> Compacted:
    """Vacuum `name` and rebuild its primary key, without blocking writers or readers; record it."""
    started = time.perf_counter()
    table = f'"{name}"'  # our own name (fixes_pYYYYMMDD), quoted all the same
    for (leftover,) in await conn.fetch(_LEFTOVERS, table):
        log.info("compaction: dropping %s, left by an interrupted rebuild", leftover)
        await conn.execute(f'DROP INDEX CONCURRENTLY IF EXISTS "{leftover}"')
    key = await conn.fetchval(_PRIMARY_KEY, table)  # as regclass text: quoted where it must be
    before = int(await conn.fetchval("SELECT pg_relation_size($1::regclass)", key))
    await conn.execute(f"VACUUM (ANALYZE) {table}")
    await conn.execute(f"REINDEX INDEX CONCURRENTLY {key}")
    after = int(await conn.fetchval("SELECT pg_relation_size($1::regclass)", key))
    seconds = time.perf_counter() - started
    await conn.execute(_RECORD, name, before, after, seconds)
    log.info("compaction: %s key %d -> %d MB in %.1f s", name, before >> 20, after >> 20, seconds)
    return Compacted(name, before, after, round(seconds, 3))


async def run(url: str, after_s: float, retention_days: int | None) -> None:
    """The server's background task: compact what is due, then sleep until the next day is due (at most
    an hour); forever (coroutine). A failed round is logged and tried again."""
    while True:
        try:
            await compact(url, int(time.time() * 1000), after_s, retention_days=retention_days)
        except Busy:
            log.debug("compaction: another process is at it; skipping this round")
        except Exception:  # the database's or ours: logged, and the task lives on (it owns no request)
            log.exception("compaction failed; trying again within the hour")
        await asyncio.sleep(seconds_to_next(int(time.time() * 1000), after_s))
