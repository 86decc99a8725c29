"""Retention: TRACKER_RETENTION_DAYS drops whole expired partitions (and older events, acked messages,
devices' own messages and ended trips), and refuses fixes that retention would drop. On a database of
its own, since it deletes old data."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from harness import (
    Client,
    add_device,
    create_database,
    device_client,
    drop_database,
    now_ms,
    start_server,
    uid,
)

from tracker.store.partitions import PartitionMap

DAY = 86_400_000


@pytest.fixture(scope="module")
async def database_url(pg_base: str) -> AsyncIterator[str]:
    url = await create_database(pg_base, "retention")
    yield url
    await drop_database(pg_base, url)


def test_expired_partitions_are_whole_days_and_months() -> None:
    m = PartitionMap()
    for name in ["fixes_p20261101", "fixes_p20261102", "fixes_p20261103", "fixes_m202609", "fixes_m202610"]:
        m.add_name(name)
    cutoff = (datetime(2026, 11, 2, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)).days
    # Nov 1 ends at the cutoff; October's month ends Nov 1; Nov 2 holds fixes newer than the cutoff.
    assert m.expired(cutoff) == ["fixes_p20261101", "fixes_m202609", "fixes_m202610"]
    m.forget("fixes_p20261101")
    m.forget("fixes_m202609")
    assert m.expired(cutoff) == ["fixes_m202610"]


async def partitions(conn: asyncpg.Connection) -> set[str]:
    rows = await conn.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'fixes'::regclass"
    )
    return {r[0] for r in rows}


async def test_retention_drops_expired_partitions_and_refuses_old_fixes(
    database_url: str, tmp_path: Path, clients: list[Client]
) -> None:
    now = now_ms()
    old, recent = now - 100 * DAY, now - 2 * DAY
    server = start_server(database_url, tmp_path / "keep-all")
    try:
        device, token = await add_device(server, uid("fleet"))
        d = await device_client(server, token, clients)
        ack = await d.call(
            "fix", [{"lat": 1.0, "lon": 2.0, "ts": old}, {"lat": 1.0, "lon": 2.0, "ts": recent}]
        )
        assert ack["accepted"] == 2
        await d.close()
    finally:
        server.stop()
    conn = await asyncpg.connect(database_url)
    try:
        month = f"fixes_m{datetime.fromtimestamp(old / 1000, UTC):%Y%m}"
        assert month in await partitions(conn)
        insert = (
            "INSERT INTO messages (device_id, body, sender, created_ts, sent_ts, acked_ts) "
            "VALUES ($1, $2, 'test', $3, $3, $4)"
        )
        await conn.execute(insert, device, '"old, acked"', old, old)
        await conn.execute(insert, device, '"old, never acked"', old, None)
        await conn.execute(insert, device, '"recent, acked"', recent, recent)
        from_device = (
            "INSERT INTO messages (device_id, body, sender, created_ts, direction) "
            "VALUES ($1, $2, $1, $3, 'from_device')"
        )
        await conn.execute(from_device, device, '"old, from the device"', old)
        await conn.execute(from_device, device, '"recent, from the device"', recent)
        server = start_server(database_url, tmp_path / "retain", {"TRACKER_RETENTION_DAYS": "30"})
        try:
            # The first retention run happens at start-up (bounded wait for it).
            for _ in range(200):
                if month not in await partitions(conn):
                    break
                await conn.execute("SELECT pg_sleep(0.05)")
            assert month not in await partitions(conn)
            stored = [
                r[0] for r in await conn.fetch("SELECT device_id FROM fixes WHERE device_id = $1", device)
            ]
            assert stored == [device]  # the recent fix stays
            kept = await conn.fetch(
                "SELECT body::text FROM messages WHERE device_id = $1 ORDER BY id", device
            )
            assert [r[0] for r in kept] == [
                '"old, never acked"',
                '"recent, acked"',
                '"recent, from the device"',
            ]
            d = await device_client(server, token, clients)
            ack = await d.call(
                "fix", [{"lat": 1.0, "lon": 2.0, "ts": now - 40 * DAY}, {"lat": 1.0, "lon": 2.0, "ts": now}]
            )
            assert ack["accepted"] == 1
            assert ack["rejected"][0]["index"] == 0 and "30 days" in ack["rejected"][0]["error"]
            assert month not in await partitions(conn)  # a refused fix re-creates nothing
        finally:
            server.stop()
    finally:
        await conn.close()


async def test_retention_drops_ended_trips_with_their_events_and_keeps_open_ones(
    database_url: str, tmp_path: Path
) -> None:
    now = now_ms()
    old, recent = now - 100 * DAY, now - 2 * DAY
    server = start_server(database_url, tmp_path / "keep-all")
    try:
        device, _ = await add_device(server, uid("fleet"))
    finally:
        server.stop()
    conn = await asyncpg.connect(database_url)

    async def trip(ref: str, status: str, created: int, ended: int | None, ttl: int = DAY) -> int:
        """A stored trip with an event per status so far and a delivered webhook row of its last one;
        a trip not arrived `ttl` after it was created expires (so an open one is given a long ttl)."""
        trip_id: int = await conn.fetchval(
            "INSERT INTO trips (device_id, fleet, status, dest_lat, dest_lon, radius_m, approach_m, ref, "
            "created_by, created_ts, expires_ts, ended_ts) "
            "VALUES ($1, 'f', $2, 52.5, 13.4, 50, 1000, $3, 'test', $4::bigint, $4::bigint + $6::bigint, $5) "
            "RETURNING id",
            device,
            status,
            ref,
            created,
            ended,
            ttl,
        )
        event = None
        for s, ts in [("started", created), (status, ended)]:
            if ts is not None and (s == "started" or status != "started"):
                event = await conn.fetchval(
                    "INSERT INTO trip_events (trip_id, device_id, fleet, status, ts, ref) "
                    "VALUES ($1, $2, 'f', $3, $4, $5) RETURNING id",
                    trip_id,
                    device,
                    s,
                    ts,
                    ref,
                )
        await conn.execute(
            "INSERT INTO webhook_outbox (trip_event_id, url, state) "
            "VALUES ($1, 'http://127.0.0.1:9/', 'delivered')",
            event,
        )
        return trip_id

    try:
        gone = [
            await trip("old, completed", "completed", old, old + 3_600_000),
            await trip("old, cancelled", "cancelled", old, old + 60_000),
            await trip("old, expired", "expired", old, old + DAY),
        ]
        kept = [
            await trip("old, arrived, still open", "arrived", old, None),
            # Without its long ttl the expiry would end it at start-up, and retention could then drop it.
            await trip("old, started, still open", "started", old, None, ttl=200 * DAY),
            await trip("ended within the limit", "completed", old, recent),
            await trip("recent", "completed", recent, recent + 60_000),
        ]
        server = start_server(database_url, tmp_path / "retain", {"TRACKER_RETENTION_DAYS": "30"})
        try:
            count = "SELECT count(*) FROM trips WHERE id = ANY($1::bigint[])"
            for _ in range(200):  # the first retention run happens at start-up
                if await conn.fetchval(count, gone) == 0:
                    break
                await conn.execute("SELECT pg_sleep(0.05)")
            assert await conn.fetchval(count, gone) == 0
            left = await conn.fetch("SELECT id FROM trips WHERE device_id = $1 ORDER BY id", device)
            assert [r[0] for r in left] == kept
            events = await conn.fetch(
                "SELECT DISTINCT trip_id FROM trip_events WHERE device_id = $1 ORDER BY trip_id", device
            )
            assert [r[0] for r in events] == kept
            hooks = await conn.fetchval(
                "SELECT count(*) FROM webhook_outbox o JOIN trip_events e ON e.id = o.trip_event_id "
                "WHERE e.device_id = $1",
                device,
            )
            orphans = await conn.fetchval(
                "SELECT count(*) FROM webhook_outbox WHERE event_id IS NULL AND trip_event_id IS NULL"
            )
            assert (hooks, orphans) == (len(kept), 0)
        finally:
            server.stop()
    finally:
        await conn.close()
