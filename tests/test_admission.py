"""Admission control: what the server cannot take soon is refused at once with `retry` and a wait, and
nothing of it is stored; what it took is still acked once stored."""

from __future__ import annotations

import asyncio
import gc
import time
import weakref
from pathlib import Path

import asyncpg
import pytest
from harness import Client, Server, add_device, device_client, now_ms, start_server, uid, until, web_client

from tracker.admission import RETRY_MAX_S, RETRY_MIN_S, LoopLag
from tracker.errors import Busy
from tracker.gc_policy import GcPolicy

MAX_WAIT_MS = 200


async def _insert_waits(db: asyncpg.Connection) -> bool:
    return bool(
        await db.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND query LIKE '%INSERT INTO fixes %'"
        )
    )


async def _queued(server: Server) -> float:
    async with web_client(base_url=server.url) as http:
        text = (await http.get("/metrics")).text
    return next(
        float(line.split()[1]) for line in text.splitlines() if line.startswith("tracker_ingest_queue_fixes ")
    )


async def test_a_slow_store_refuses_at_once_with_a_wait_and_takes_the_retry(
    database_url: str, db: asyncpg.Connection, tmp_path: Path, clients: list[Client]
) -> None:
    slow = start_server(
        database_url,
        tmp_path,
        {
            "TRACKER_INGEST_WRITERS": "1",
            "TRACKER_INGEST_MAX_WAIT_MS": str(MAX_WAIT_MS),
            "TRACKER_DEVICE_INFLIGHT_MAX": "1",
        },
    )
    blocker = await asyncpg.connect(database_url)
    tx = blocker.transaction()
    try:
        fleet = uid("fleet")
        devices = [await add_device(slow, fleet) for _ in range(3)]
        a, b, c = [await device_client(slow, token, clients) for _, token in devices]
        t = now_ms()
        await tx.start()
        await blocker.execute("LOCK TABLE fixes IN ACCESS EXCLUSIVE MODE")
        first = asyncio.ensure_future(a.call("fix", {"lat": 1.0, "lon": 1.0, "ts": t}))
        await until(lambda: _insert_waits(db))
        # One event in flight is this connection's bound: the next is refused at once.
        ack = await a.call("fix", {"lat": 1.0, "lon": 1.0, "ts": t + 1}, timeout=5)
        assert ack["accepted"] == 0 and ack["retry"] is True and "wait for their acks" in ack["error"]
        assert ack["retry_after_ms"] > 0
        # Another device's fix waits in the lane behind the blocked write...
        second = asyncio.ensure_future(b.call("fix", {"lat": 1.0, "lon": 1.0, "ts": t}))

        async def second_is_queued() -> bool:
            return await _queued(slow) == 1

        await until(second_is_queued)
        # ...and once it has waited longer than the bound (it was queued before we saw it queued), a
        # third device is refused at once.
        await asyncio.sleep(MAX_WAIT_MS / 1000 + 0.1)
        asked = time.monotonic()
        ack = await c.call("fix", [{"lat": 1.0, "lon": 1.0, "ts": t}, {"lat": 1.0, "lon": 1.0, "ts": t + 1}])
        assert time.monotonic() - asked < 5
        assert ack["accepted"] == 0 and ack["retry"] is True and "wait to be stored" in ack["error"]
        assert RETRY_MIN_S * 500 <= ack["retry_after_ms"] <= RETRY_MAX_S * 1500
        # The OsmAnd adapter says the same with 503 and a Retry-After in whole seconds.
        async with web_client(base_url=slow.url) as http:
            r = await http.post("/api/ingest/osmand", data={"id": devices[2][1], "lat": "1", "lon": "1"})
        assert r.status_code == 503 and int(r.headers["Retry-After"]) >= 1 and "wait" in r.json()["error"]
        await tx.rollback()
        # What was taken is acked once stored; the refused batch is taken whole when sent again.
        assert (await first)["accepted"] == 1 and (await second)["accepted"] == 1
        assert await db.fetchval("SELECT count(*) FROM fixes WHERE device_id = $1", devices[2][0]) == 0
        ack = await c.call("fix", [{"lat": 1.0, "lon": 1.0, "ts": t}, {"lat": 1.0, "lon": 1.0, "ts": t + 1}])
        assert ack == {"accepted": 2, "duplicates": 0, "rejected": [], "flagged": []}
    finally:
        await blocker.close()  # rolls back, if the test ended before it did
        slow.stop()


async def test_loop_lag_refuses_while_the_loop_runs_late() -> None:
    lag = LoopLag(limit_s=0.05)
    probe = asyncio.ensure_future(lag.run())
    try:
        await asyncio.sleep(0.2)
        lag.check()  # an idle loop is on time
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while lag.lag_s <= 0.05:
            assert loop.time() < deadline, "the probe never saw the loop run late"
            time.sleep(0.3)  # the loop is blocked: every timer fires late
            await asyncio.sleep(0)
            await asyncio.sleep(0.06)
        with pytest.raises(Busy, match="behind; retry") as refused:
            lag.check()
        assert refused.value.retry_after_s >= RETRY_MIN_S * 0.5
    finally:
        probe.cancel()


def test_retry_after_grows_with_the_delay_within_bounds() -> None:
    lag = LoopLag(limit_s=0.05)
    for delay in (0.0, 0.01, 0.5, 2.0, 100.0):
        wait = lag.retry_after(delay)
        assert RETRY_MIN_S * 0.5 <= wait <= RETRY_MAX_S * 1.5
    assert min(lag.retry_after(3.0) for _ in range(50)) > max(lag.retry_after(0.0) for _ in range(50))


async def test_the_shortest_wait_named_grows_while_the_loop_stays_late_and_comes_back() -> None:
    lag = LoopLag(limit_s=0.02)
    probe = asyncio.ensure_future(lag.run())
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while lag.floor_s < 4 * RETRY_MIN_S:  # about 25 late probes
            assert loop.time() < deadline, f"the floor stayed at {lag.floor_s} s"
            time.sleep(0.1)  # the loop is blocked: every probe comes late
            await asyncio.sleep(0)
        assert min(lag.retry_after() for _ in range(50)) >= 2 * RETRY_MIN_S
        while lag.floor_s > RETRY_MIN_S:  # on time again: back down to the minimum
            assert loop.time() < deadline, f"the floor stayed at {lag.floor_s} s"
            await asyncio.sleep(0.1)
    finally:
        probe.cancel()


def test_the_gc_policy_freezes_survivors_and_the_full_pass_frees_their_cycles() -> None:
    thresholds = gc.get_threshold()
    try:
        GcPolicy().apply()
        assert gc.get_threshold()[0] >= 10_000 and gc.get_freeze_count() > 0

        class Node:
            other: object = None

        cycle = Node()
        cycle.other = cycle
        alive = weakref.ref(cycle)
        gc.freeze()  # frozen while alive, like a connection's objects
        del cycle
        gc.collect()
        assert alive() is not None, "no ordinary collection walks frozen objects"
        GcPolicy.collect_all()
        assert alive() is None, "the full pass thaws and frees frozen cycles"
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
