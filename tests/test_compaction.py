"""Compaction of closed days of fixes: which days are due (pure), then on real PostGIS that a closed day's
bloated key is rebuilt once and keeps every fix, that one process works at a time, that an interrupted
rebuild's leftovers go, and that both the server's background task and `tracker db compact` do it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from harness import create_database, drop_database, now_ms, own_server, until

from tracker.errors import Busy
from tracker.store import Database, compaction
from tracker.store.compaction import DAY_MS, due, partition_day, seconds_to_next

DAY = 20_000  # 2024-10-04, days since the epoch
NOON = DAY * DAY_MS + DAY_MS // 2


def name(day: int) -> str:
    return f"fixes_p{datetime.fromtimestamp(day * 86_400, UTC):%Y%m%d}"


def test_a_day_is_due_its_grace_after_it_ended_newest_first() -> None:
    names = [name(DAY - d) for d in range(4)] + [name(DAY + 1), "fixes_m202001", "fixes_stage"]
    assert partition_day(name(DAY)) == DAY and partition_day("fixes_m202001") is None
    assert due(names, [], NOON, 3600) == [name(DAY - 1), name(DAY - 2), name(DAY - 3)]
    assert due(names, [], DAY * DAY_MS + 3_599_999, 3600) == [name(DAY - 2), name(DAY - 3)]
    assert due(names, [], DAY * DAY_MS + 3_600_000, 3600)[0] == name(DAY - 1)
    assert due(names, [name(DAY - 2)], NOON, 3600) == [name(DAY - 1), name(DAY - 3)]  # done once


def test_old_days_and_days_retention_drops_soon_are_left_alone() -> None:
    names = [name(DAY - d) for d in range(1, 12)]
    assert len(due(names, [], NOON, 0)) == 7  # WINDOW_DAYS
    assert due(names, [], NOON, 0, window_days=2) == [name(DAY - 1), name(DAY - 2)]
    # drop_expired(today - 3) drops days before DAY - 3; DAY - 3 goes tomorrow: not worth rebuilding
    assert due(names, [], NOON, 0, retention_days=3) == [name(DAY - 1), name(DAY - 2)]


def test_the_next_round_waits_for_the_next_due_day_at_most_an_hour() -> None:
    assert seconds_to_next(DAY * DAY_MS + 3_000_000, 3600) == 601.0
    assert seconds_to_next(NOON, 3600) == 3600.0
    assert seconds_to_next(DAY * DAY_MS + 3_600_000, 3600) == 3600.0


@pytest.fixture
async def own_db(pg_base: str) -> AsyncIterator[str]:
    """A migrated database of this test's own, with yesterday's partition filled the way live ingest fills
    it: 300 devices' fixes in time order across devices (the key's pages end about half full)."""
    url = await create_database(pg_base, "compact")
    db = await Database.connect(url, min_size=1, max_size=1)
    today = now_ms() // DAY_MS
    await db.ensure_partitions({today - 1, today})
    await db.pool.execute(
        """
        INSERT INTO fixes (device_id, ts, geom, speed, cell)
        SELECT 'd-' || d, to_timestamp($1 / 1000.0) + s * interval '5 s',
               ST_SetSRID(ST_MakePoint(11.5 + d * 1e-4, 48.1 + s * 1e-6), 4326), 3.0, 0
        FROM generate_series(0, 299) s, generate_series(0, 299) d ORDER BY s, d
        """,
        (today - 1) * DAY_MS,
    )
    await db.close()
    yield url
    await drop_database(pg_base, url)


async def test_a_closed_day_is_rebuilt_once_and_keeps_every_fix(own_db: str) -> None:
    yesterday = name(now_ms() // DAY_MS - 1)
    [done] = await compaction.compact(own_db, now_ms(), 0)
    assert done.partition == yesterday
    assert done.key_bytes_after < 0.8 * done.key_bytes_before, done
    tomorrow = now_ms() + DAY_MS  # today's is due then, yesterday's done already
    assert [c.partition for c in await compaction.compact(own_db, tomorrow, 0)] == [name(now_ms() // DAY_MS)]
    assert await compaction.compact(own_db, tomorrow, 0) == []  # each once
    conn = await asyncpg.connect(own_db)
    try:
        assert await conn.fetchval(f"SELECT count(*) FROM {yesterday}") == 90_000
        recorded = await conn.fetchrow("SELECT * FROM compacted_partitions WHERE partition = $1", yesterday)
        assert recorded["key_bytes_after"] == done.key_bytes_after
        invalid = await conn.fetchval("SELECT count(*) FROM pg_index WHERE NOT indisvalid")
        assert invalid == 0
        # the daily report's read is still an index-only scan of the rebuilt key, and reads no heap page
        plan = await conn.fetchval(
            f"EXPLAIN (ANALYZE, FORMAT JSON) SELECT device_id, ts, geom, speed FROM {yesterday} "
            "ORDER BY device_id, ts"
        )
        assert '"Index Only Scan"' in plan and '"Heap Fetches": 0' in plan, plan
    finally:
        await conn.close()


async def test_one_process_compacts_at_a_time(own_db: str) -> None:
    holder = await asyncpg.connect(own_db)
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", compaction.ADVISORY_LOCK)
        with pytest.raises(Busy, match="another process is compacting"):
            await compaction.compact(own_db, now_ms(), 0)
    finally:
        await holder.close()
    assert len(await compaction.compact(own_db, now_ms(), 0)) == 1


async def test_an_interrupted_rebuild_leaves_nothing_behind(own_db: str) -> None:
    yesterday = name(now_ms() // DAY_MS - 1)
    conn = await asyncpg.connect(own_db)
    try:
        # What a cancelled REINDEX CONCURRENTLY leaves: an invalid index named *_ccnew (here one that
        # failed to build: ts repeats across devices).
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(f"CREATE UNIQUE INDEX CONCURRENTLY {yesterday}_pkey_ccnew ON {yesterday} (ts)")
        assert await conn.fetchval("SELECT count(*) FROM pg_index WHERE NOT indisvalid") == 1
        await compaction.compact(own_db, now_ms(), 0)
        assert await conn.fetchval("SELECT count(*) FROM pg_index WHERE NOT indisvalid") == 0
    finally:
        await conn.close()


async def test_the_server_compacts_in_the_background(own_db: str, tmp_path: Path) -> None:
    with own_server(own_db, tmp_path, {"TRACKER_COMPACT_AFTER_S": "1"}):
        conn = await asyncpg.connect(own_db)
        try:
            yesterday = name(now_ms() // DAY_MS - 1)
            sql = "SELECT 1 FROM compacted_partitions WHERE partition = $1"
            await until(lambda: conn.fetchval(sql, yesterday), timeout=60)
        finally:
            await conn.close()


def test_db_compact_for_cron(own_db: str) -> None:
    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tracker", "db", "compact", "--database-url", own_db],
            capture_output=True,
            text=True,
            timeout=120,
            env=os.environ,
        )

    first = run()
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith(name(now_ms() // DAY_MS - 1) + ": key "), first.stdout
    again = run()
    assert (again.returncode, again.stdout.strip()) == (0, "nothing to compact")
