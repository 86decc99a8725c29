"""End to end: devices stream fixes through a real server into a real PostGIS database."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from harness import (
    ADMIN_TOKEN,
    Client,
    Server,
    add_device,
    connected_device,
    device_client,
    now_ms,
    own_server,
    refusal,
    start_server,
    uid,
    web_client,
)


async def stored(db: asyncpg.Connection, device: str) -> list[tuple[int, float, float]]:
    rows = await db.fetch(
        "SELECT (extract(epoch FROM ts) * 1000)::bigint, ST_Y(geom), ST_X(geom) FROM fixes "
        "WHERE device_id = $1 ORDER BY ts",
        device,
    )
    return [(r[0], r[1], r[2]) for r in rows]


async def test_an_acked_fix_is_already_committed(
    server: Server, db: asyncpg.Connection, clients: list[Client]
) -> None:
    device, d = await connected_device(server, clients)
    ts = now_ms()
    ack = await d.call("fix", {"lat": 47.37, "lon": 8.54, "ts": ts, "speed": 4.2, "attrs": {"job": 17}})
    assert ack == {"accepted": 1, "duplicates": 0, "rejected": [], "flagged": []}
    # Read from another connection the moment the ack arrives: only committed rows are visible.
    row = await db.fetchrow(
        "SELECT ST_Y(geom), ST_X(geom), speed, attrs, cell, received FROM fixes WHERE device_id = $1", device
    )
    assert row is not None
    assert (row[0], row[1]) == (47.37, 8.54)
    assert row[2] == pytest.approx(4.2)
    assert row[3] == '{"job": 17}'
    import h3

    assert format(row[4], "x") == h3.latlng_to_cell(47.37, 8.54, 9)


@pytest.mark.parametrize(
    ("fixes", "rejected"),
    [
        (
            [
                {"lat": 1.0, "lon": 2.0, "ts": -3000},
                {"lat": 91.0, "lon": 2.0, "ts": -2000},
                {"lon": 2.0, "ts": -1500},
                {"lat": 1.0, "lon": 2.0, "ts": -1000, "battery": 150},
                {"lat": 1.5, "lon": 2.5, "ts": 0},
            ],
            {1: "lat ", 2: "lat is required", 3: "battery "},
        ),
        (  # NaN, infinity and a huge integer, which Python clients can send and JSON cannot hold
            [
                {"lat": float("nan"), "lon": 1.0, "ts": -2},
                {"lat": 1.0, "lon": float("inf"), "ts": -1},
                {"lat": 1.0, "lon": 1.0, "ts": 0, "attrs": {"big": 10**30}},
                {"lat": 1.0, "lon": 1.0, "ts": 0, "speed": 2.0},
            ],
            {0: "lat ", 1: "lon ", 2: "attrs "},
        ),
    ],
    ids=["range-missing-battery", "nan-infinity-huge"],
)
async def test_bad_fixes_are_rejected_one_by_one_by_field_and_good_ones_kept(
    server: Server,
    db: asyncpg.Connection,
    clients: list[Client],
    fixes: list[dict[str, Any]],
    rejected: dict[int, str],
) -> None:
    """Each fix's `ts` here is an offset from now; `rejected` maps an index to how its error starts."""
    device, d = await connected_device(server, clients)
    t = now_ms()
    ack = await d.call("fix", [fix | {"ts": t + fix["ts"]} for fix in fixes])
    assert ack["accepted"] == len(fixes) - len(rejected) and ack["duplicates"] == 0
    assert [r["index"] for r in ack["rejected"]] == list(rejected)
    for r in ack["rejected"]:
        assert r["error"].startswith(rejected[r["index"]]), r
    kept = [(t + fix["ts"], fix["lat"], fix["lon"]) for i, fix in enumerate(fixes) if i not in rejected]
    assert await stored(db, device) == kept


@pytest.mark.parametrize("size", [50, 300])  # the two write routes: one INSERT from arrays, and COPY
async def test_a_retried_batch_counts_duplicates_and_stores_nothing_twice(
    server: Server, db: asyncpg.Connection, clients: list[Client], size: int
) -> None:
    from tracker.store.fixes import COPY_MIN_FIXES

    assert (size < COPY_MIN_FIXES) == (size == 50)
    device, d = await connected_device(server, clients)
    t = now_ms()
    batch = [
        {"lat": 10 + i / 1000, "lon": 20.0, "ts": t - 1000 * (size - i), "attrs": {"i": i}}
        for i in range(size)
    ]
    assert await d.call("fix", batch) == {"accepted": size, "duplicates": 0, "rejected": [], "flagged": []}
    assert await d.call("fix", batch) == {"accepted": 0, "duplicates": size, "rejected": [], "flagged": []}
    # The same key twice within a batch: one is stored, one counts as a duplicate.
    again = {"lat": 11.0, "lon": 21.0, "ts": t + 1}
    fresh = [{"lat": 12.0, "lon": 22.0, "ts": t + 2 + i} for i in range(size - 2)]
    assert await d.call("fix", [again, *fresh, again]) == {
        "accepted": size - 1,
        "duplicates": 1,
        "rejected": [],
        "flagged": [],
    }
    rows = await stored(db, device)
    assert len(rows) == 2 * size - 1
    assert rows[0] == (t - 1000 * size, 10.0, 20.0)
    assert await db.fetchval(
        "SELECT attrs->>'i' FROM fixes "
        "WHERE device_id = $1 AND ts = timestamptz 'epoch' + $2 * interval '1 ms'",
        device,
        t - 1000,
    ) == str(size - 1)


async def test_late_and_out_of_order_fixes_are_stored_but_live_state_only_moves_forward(
    server: Server, db: asyncpg.Connection, clients: list[Client]
) -> None:
    device, d = await connected_device(server, clients)
    t = now_ms()
    await d.call("fix", {"lat": 5.0, "lon": 5.0, "ts": t})
    # An offline backlog from an hour and from years ago (a partition of its own, made on demand).
    ack = await d.call(
        "fix",
        [
            {"lat": 4.0, "lon": 4.0, "ts": t - 3_600_000},
            {"lat": 3.0, "lon": 3.0, "ts": "2008-10-23T02:53:04Z"},
        ],
    )
    assert ack["accepted"] == 2
    assert [r[0] for r in await stored(db, device)] == [1224730384000, t - 3_600_000, t]
    # The 2008 fix went into a partition for its whole month, not one for its day.
    assert await db.fetchval("SELECT to_regclass('fixes_m200810') IS NOT NULL")
    async with web_client(base_url=server.url) as http:
        r = await http.get("/api/devices", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    mine = [x for x in r.json()["devices"] if x["id"] == device]
    assert mine[0]["last"]["ts"] == t and mine[0]["last"]["lat"] == 5.0
    assert mine[0]["online"] is True


async def test_the_device_writes_only_as_itself(
    server: Server, db: asyncpg.Connection, clients: list[Client]
) -> None:
    device, token = await add_device(server, uid("fleet"))
    victim, _ = await add_device(server, uid("fleet"))
    d = await device_client(server, token, clients)
    ack = await d.call("fix", {"lat": 1.0, "lon": 1.0, "ts": now_ms(), "device": victim, "fleet": "x"})
    assert ack["accepted"] == 1
    assert len(await stored(db, device)) == 1
    assert await stored(db, victim) == []


@pytest.mark.parametrize("namespace", ["/device", "/viewer"])
@pytest.mark.parametrize("auth", [None, {}, {"token": "nope"}, {"token": 42}])
async def test_missing_or_wrong_tokens_are_refused(server: Server, namespace: str, auth: object) -> None:
    assert await refusal(server, namespace, auth) == {"message": "unauthorized"}


async def test_a_device_token_is_no_viewer_token(server: Server) -> None:
    _, token = await add_device(server, uid("fleet"))
    assert await refusal(server, "/viewer", {"token": token}) == {"message": "unauthorized"}
    async with web_client(base_url=server.url) as http:
        r = await http.get("/api/devices", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401 and "token" in r.json()["error"]


async def test_a_malformed_event_gets_an_error_ack(server: Server, clients: list[Client]) -> None:
    _, token = await add_device(server, uid("fleet"))
    d = await device_client(server, token, clients)
    ack = await d.call("fix", "52.5,13.4")
    assert ack["accepted"] == 0 and ack["retry"] is False and "fix must be" in ack["error"]
    ack = await d.call("fix", [{"lat": 1, "lon": 1, "ts": now_ms()}] * 1001)
    assert ack["accepted"] == 0 and "at most 1000" in ack["error"]
    # The connection is still good afterwards.
    assert (await d.call("fix", {"lat": 1, "lon": 1, "ts": now_ms()}))["accepted"] == 1


async def test_a_full_queue_answers_retry_and_stores_nothing(
    database_url: str, db: asyncpg.Connection, tmp_path: Path, clients: list[Client]
) -> None:
    with own_server(database_url, tmp_path, {"TRACKER_INGEST_QUEUE_MAX": "5"}) as small:
        device, d = await connected_device(small, clients)
        t = now_ms()
        batch = [{"lat": 1.0, "lon": 1.0, "ts": t - i} for i in range(10)]
        ack = await d.call("fix", batch)
        assert ack["accepted"] == 0 and ack["duplicates"] == 0 and ack["rejected"] == []
        assert ack["retry"] is True and "busy" in ack["error"]
        assert await stored(db, device) == []
        # A batch that fits is taken.
        assert (await d.call("fix", batch[:5]))["accepted"] == 5


async def test_an_acked_fix_survives_a_crash_right_after(
    database_url: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    with own_server(database_url, tmp_path) as crashing:
        device, token = await add_device(crashing, uid("fleet"))
        d = await Client("/device").connect(crashing, token)
        t = now_ms()
        acks = [await d.call("fix", {"lat": 2.0, "lon": 2.0 + i / 1000, "ts": t + i}) for i in range(20)]
        crashing.stop(signal.SIGKILL)
        await d.sio.disconnect()
    assert sum(a["accepted"] for a in acks) == 20
    assert len(await stored(db, device)) == 20


async def test_a_write_that_fails_answers_retry_and_stores_nothing(
    server: Server, database_url: str, db: asyncpg.Connection, clients: list[Client]
) -> None:
    import asyncio
    import time

    device, d = await connected_device(server, clients)
    t = now_ms()
    batch = [{"lat": 1.0, "lon": 1.0 + i / 100, "ts": t - i} for i in range(5)]
    blocker = await asyncpg.connect(database_url)
    try:
        # Hold the table so the server's INSERT waits, then kill the server's connection mid-write.
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute("LOCK TABLE fixes IN ACCESS EXCLUSIVE MODE")
        pending = asyncio.ensure_future(d.call("fix", batch))
        deadline = time.monotonic() + 20
        killed = False
        while not killed and time.monotonic() < deadline:
            killed = bool(
                await db.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock' "
                    "AND query LIKE '%INSERT INTO fixes %' AND pid <> pg_backend_pid()"
                )
            )
            await asyncio.sleep(0.02)
        assert killed, "the server's INSERT never waited on the lock"
        ack = await pending
        await tx.rollback()
    finally:
        await blocker.close()
    assert ack["accepted"] == 0 and ack["retry"] is True and "storage" in ack["error"]
    assert await stored(db, device) == []
    # The same batch sent again is taken whole: the pool replaced the killed connection.
    assert await d.call("fix", batch) == {"accepted": 5, "duplicates": 0, "rejected": [], "flagged": []}


async def test_a_device_over_its_rate_is_told_to_retry_and_others_are_not(
    database_url: str, db: asyncpg.Connection, tmp_path: Path, clients: list[Client]
) -> None:
    limits = {"TRACKER_DEVICE_RATE": "1", "TRACKER_DEVICE_BURST": "1000"}
    with own_server(database_url, tmp_path, limits) as limited:
        fleet = uid("fleet")
        greedy, g = await connected_device(limited, clients, fleet)
        _, p = await connected_device(limited, clients, fleet)
        t = now_ms() - 10_000_000
        first = [{"lat": 1.0, "lon": 1.0, "ts": t + i} for i in range(1000)]
        assert (await g.call("fix", first))["accepted"] == 1000
        ack = await g.call("fix", {"lat": 1.0, "lon": 1.0, "ts": t + 5000})
        assert ack["accepted"] == 0 and ack["retry"] is True and "rate limit" in ack["error"]
        assert (await p.call("fix", {"lat": 1.0, "lon": 1.0, "ts": t}))["accepted"] == 1
        assert len(await stored(db, greedy)) == 1000


async def test_a_device_on_long_polling_is_served_too(
    database_url: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    import socketio

    # Its own server: a long-poll left pending by the client keeps a server's graceful shutdown
    # waiting for Engine.IO's ping interval, which this test need not sit through.
    polled = start_server(database_url, tmp_path)
    try:
        device, token = await add_device(polled, uid("fleet"))
        sio = socketio.AsyncClient(reconnection=False)
        await sio.connect(polled.url, namespaces=["/device"], auth={"token": token}, transports=["polling"])
        ack = await sio.call("fix", {"lat": 1.0, "lon": 1.0, "ts": now_ms()}, namespace="/device", timeout=20)
        await sio.eio.disconnect(abort=True)
    finally:
        polled.stop(signal.SIGKILL)
    assert ack["accepted"] == 1 and len(await stored(db, device)) == 1
