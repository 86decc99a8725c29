"""End to end: viewers subscribe to fleets, devices and boxes and see only what their token grants."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncpg
import h3
import pytest
from harness import (
    Client,
    Server,
    add_device,
    add_viewer,
    connected_device,
    device_client,
    now_ms,
    start_server,
    uid,
    viewer_client,
    web_client,
)
from viewers import subscribed_viewer

# Every test that uses `server` runs on one process and on a cluster (tests/harness.py).
pytestmark = pytest.mark.cluster


async def next_devices(viewer: Client) -> list[str]:
    """The devices in `viewer`'s next positions event, in its order."""
    return [p["device"] for p in await viewer.next("positions")]


async def test_snapshot_right_after_subscribe(server: Server, clients: list[Client]) -> None:
    fleet = uid("fleet")
    device, d = await connected_device(server, clients, fleet)
    t = now_ms()
    await d.call(
        "fix",
        [
            {"lat": 48.1, "lon": 11.5, "ts": t - 1000, "speed": 3, "heading": 90},
            {"lat": 48.2, "lon": 11.6, "ts": t - 5000},
        ],
    )
    _, snapshot = await subscribed_viewer(server, clients, [fleet], {"fleet": fleet})
    assert snapshot == [
        {
            "device": device,
            "fleet": fleet,
            "lat": 48.1,
            "lon": 11.5,
            "ts": t - 1000,
            "speed": 3,
            "heading": 90,
            "cell": h3.latlng_to_cell(48.1, 11.5, 9),
        }
    ]


async def test_positions_stream_to_fleet_and_device_rooms(server: Server, clients: list[Client]) -> None:
    fleet = uid("fleet")
    device, token = await add_device(server, fleet)
    other, other_token = await add_device(server, fleet)
    viewer = await add_viewer(server, [fleet])
    by_fleet = await viewer_client(server, viewer, clients)
    by_device = await viewer_client(server, viewer, clients)
    assert (await by_fleet.call("subscribe", {"fleet": fleet}))["ok"]
    assert (await by_device.call("subscribe", {"device": device}))["ok"]
    assert await by_fleet.next("positions") == [] and await by_device.next("positions") == []
    d = await device_client(server, token, clients)
    o = await device_client(server, other_token, clients)
    t = now_ms()
    await o.call("fix", {"lat": 1.0, "lon": 1.0, "ts": t})
    await d.call("fix", {"lat": 2.0, "lon": 2.0, "ts": t})
    seen: dict[str, int] = {}
    while len(seen) < 2:
        for p in await by_fleet.next("positions"):
            seen[p["device"]] = p["ts"]
    assert seen == {device: t, other: t}
    assert await next_devices(by_device) == [device]


async def test_a_batch_is_coalesced_into_one_event_with_the_newest_position(
    server: Server, clients: list[Client]
) -> None:
    fleet = uid("fleet")
    device, d = await connected_device(server, clients, fleet)
    v, snapshot = await subscribed_viewer(server, clients, [fleet], {"device": device})
    assert snapshot == []
    t = now_ms() - 60_000
    batch = [{"lat": 10 + i / 1000, "lon": 10.0, "ts": t + i * 1000} for i in range(50)]
    assert (await d.call("fix", batch))["accepted"] == 50
    first = await v.next("positions")
    assert [(p["device"], p["ts"], p["lat"]) for p in first] == [(device, t + 49_000, 10.049)]
    # A newer marker fix: whatever reached the viewer before it is all the batch produced.
    await d.call("fix", {"lat": 11.0, "lon": 10.0, "ts": t + 50_000})
    marker = await v.next("positions")
    assert [p["ts"] for p in marker] == [t + 50_000]


async def test_events_per_room_are_at_most_one_per_interval(server: Server, clients: list[Client]) -> None:
    import time

    fleet = uid("fleet")
    _, d = await connected_device(server, clients, fleet)
    v, _ = await subscribed_viewer(server, clients, [fleet], {"fleet": fleet})
    t = now_ms() - 120_000
    started = time.monotonic()
    for i in range(40):
        await d.call("fix", {"lat": 1.0 + i / 1000, "lon": 1.0, "ts": t + i})
    events: list[Any] = []
    while not events or events[-1][-1]["ts"] != t + 39:
        events.append(await v.next("positions"))
    elapsed = time.monotonic() - started
    # The server emits at most one event per room per 100 ms interval, each with one entry per device.
    assert len(events) <= elapsed / 0.1 + 2
    assert all(len(e) == 1 for e in events)
    stamps = [e[0]["ts"] for e in events]
    assert stamps == sorted(stamps)


async def test_a_viewer_never_sees_another_fleet(server: Server, clients: list[Client]) -> None:
    mine, theirs = uid("fleet"), uid("fleet")
    my_device, my_token = await add_device(server, mine)
    their_device, their_token = await add_device(server, theirs)
    v = await viewer_client(server, await add_viewer(server, [mine]), clients)
    refused = await v.call("subscribe", {"fleet": theirs})
    assert refused["ok"] is False and theirs in refused["error"]
    refused = await v.call("subscribe", {"device": their_device})
    assert refused["ok"] is False and their_device in refused["error"]
    bad = await v.call("subscribe", {"bbox": [1, 2, 3]})
    assert bad["ok"] is False and "bbox" in bad["error"]
    # Both devices inside one box; the box subscription delivers only the granted fleet.
    box = [8.50, 47.35, 8.60, 47.40]
    assert (await v.call("subscribe", {"bbox": box}))["ok"]
    assert await v.next("positions") == []
    mine_d = await device_client(server, my_token, clients)
    theirs_d = await device_client(server, their_token, clients)
    t = now_ms()
    await theirs_d.call("fix", {"lat": 47.37, "lon": 8.54, "ts": t})
    await mine_d.call("fix", {"lat": 47.371, "lon": 8.541, "ts": t})
    await theirs_d.call("fix", {"lat": 47.372, "lon": 8.542, "ts": t + 1})
    await mine_d.call("fix", {"lat": 47.373, "lon": 8.543, "ts": t + 1})
    seen: list[dict[str, Any]] = []
    while not seen or seen[-1]["ts"] != t + 1:
        seen.extend(await v.next("positions"))
    assert {p["device"] for p in seen} == {my_device}
    assert all(p["fleet"] == mine for p in seen)
    # A later subscriber's snapshot of the box holds only its own fleet too.
    late = await viewer_client(server, await add_viewer(server, [mine]), clients)
    assert (await late.call("subscribe", {"bbox": box}))["ok"]
    assert await next_devices(late) == [my_device]


async def test_bbox_leaves_out_far_devices_and_unsubscribe_stops_events(
    server: Server, clients: list[Client]
) -> None:
    fleet = uid("fleet")
    box = [13.30, 52.45, 13.50, 52.55]  # Berlin
    v, _ = await subscribed_viewer(server, clients, [fleet], {"bbox": box})
    near, n = await connected_device(server, clients, fleet)
    far, f = await connected_device(server, clients, fleet)
    t = now_ms()
    await f.call("fix", {"lat": 48.14, "lon": 11.58, "ts": t})  # Munich
    await n.call("fix", {"lat": 52.50, "lon": 13.40, "ts": t})
    assert await next_devices(v) == [near]
    assert await v.call("unsubscribe", {"bbox": box}) == {"ok": True}
    # After unsubscribing, a device-room subscription still works and the box's events stop.
    assert (await v.call("subscribe", {"device": far}))["ok"]
    assert await next_devices(v) == [far]
    await n.call("fix", {"lat": 52.51, "lon": 13.41, "ts": t + 1})
    await f.call("fix", {"lat": 48.15, "lon": 11.59, "ts": t + 1})
    assert await next_devices(v) == [far]


async def test_an_all_fleets_viewer_sees_every_fleet_in_a_box(server: Server, clients: list[Client]) -> None:
    v, _ = await subscribed_viewer(server, clients, "all", {"bbox": [-74.05, 40.70, -73.95, 40.80]})
    da, a = await connected_device(server, clients)
    db_, b = await connected_device(server, clients)
    t = now_ms()
    await a.call("fix", {"lat": 40.75, "lon": -74.0, "ts": t})
    await b.call("fix", {"lat": 40.76, "lon": -74.0, "ts": t})
    seen: set[str] = set()
    while len(seen) < 2:
        seen |= {p["device"] for p in await v.next("positions")}
    assert seen == {da, db_}


async def test_live_positions_come_back_after_a_restart(
    database_url: str, tmp_path: Path, clients: list[Client]
) -> None:
    fleet = uid("fleet")
    first = start_server(database_url, tmp_path)
    try:
        device, token = await add_device(first, fleet)
        d = await Client("/device").connect(first, token)
        t = now_ms()
        await d.call("fix", {"lat": 35.68, "lon": 139.76, "ts": t})
        await d.sio.disconnect()
    finally:
        first.stop()
    second = start_server(database_url, tmp_path)
    try:
        v = await Client("/viewer").connect(second, await add_viewer(second, [fleet]))
        assert (await v.call("subscribe", {"fleet": fleet}))["ok"]
        snapshot = await v.next("positions")
        await v.sio.disconnect()
        assert [(p["device"], p["ts"], p["lat"]) for p in snapshot] == [(device, t, 35.68)]
    finally:
        second.stop()


@pytest.mark.timeout(180)
async def test_processes_sharing_redis_share_rooms(
    database_url: str, tmp_path: Path, db: asyncpg.Connection, clients: list[Client]
) -> None:
    import redis.asyncio as aioredis

    try:
        r = aioredis.from_url("redis://127.0.0.1:6379/0")  # type: ignore[no-untyped-call]
        await r.ping()
        await r.aclose()
    except OSError as exc:
        pytest.fail(f"this test needs Redis on 127.0.0.1:6379 (.ci/run starts it): {exc}")
    env = {"TRACKER_REDIS_URL": "redis://127.0.0.1:6379/0"}
    a = start_server(database_url, tmp_path / "a", env)
    b = start_server(database_url, tmp_path / "b", env)
    try:
        fleet = uid("fleet")
        device, token = await add_device(a, fleet)
        early, early_token = await add_device(a, fleet)
        # A device on B moves before anyone on A subscribes: A's snapshot still knows it.
        e = await device_client(b, early_token, clients)
        t = now_ms()
        assert (await e.call("fix", {"lat": 1.0, "lon": 2.0, "ts": t - 5}))["accepted"] == 1
        viewer_token = await add_viewer(a, [fleet])
        deadline = asyncio.get_running_loop().time() + 10
        async with web_client(base_url=a.url) as http:
            while True:  # bounded: the move reaches A within a broadcast interval or two
                r = await http.get("/api/devices", headers={"Authorization": f"Bearer {viewer_token}"})
                last = {d["id"]: d["last"] for d in r.json()["devices"]}
                if last.get(early) or asyncio.get_running_loop().time() > deadline:
                    break
                await asyncio.sleep(0.05)
        assert last[early] is not None and last[early]["ts"] == t - 5
        v = await viewer_client(a, viewer_token, clients)
        assert (await v.call("subscribe", {"fleet": fleet}))["ok"]
        assert [(p["device"], p["ts"]) for p in await v.next("positions")] == [(early, t - 5)]
        d = await device_client(b, token, clients)
        assert (await d.call("fix", {"lat": 3.0, "lon": 4.0, "ts": t}))["accepted"] == 1
        # B's own broadcast of the early move may come after A's snapshot, alone or in the same event as
        # the new move (B coalesces what it has pending): either way only these two moves are seen.
        seen: set[tuple[str, int]] = set()
        while (device, t) not in seen:
            seen |= {(p["device"], p["ts"]) for p in await v.next("positions")}
        assert seen <= {(device, t), (early, t - 5)}, seen
    finally:
        for c in clients:
            await c.close()
        clients.clear()
        a.stop()
        b.stop()


async def test_unsubscribing_one_box_keeps_the_others(server: Server, clients: list[Client]) -> None:
    fleet = uid("fleet")
    device, token = await add_device(server, fleet)
    v = await viewer_client(server, await add_viewer(server, [fleet]), clients)
    paris, rome = [2.25, 48.80, 2.45, 48.90], [12.40, 41.85, 12.60, 41.95]
    for box in (paris, rome):
        assert (await v.call("subscribe", {"bbox": box}))["ok"]
        await v.next("positions")
    assert (await v.call("unsubscribe", {"bbox": paris}))["ok"]
    d = await device_client(server, token, clients)
    t = now_ms()
    await d.call("fix", {"lat": 48.85, "lon": 2.35, "ts": t})  # Paris: no longer watched
    await d.call("fix", {"lat": 41.90, "lon": 12.50, "ts": t + 1})  # Rome: still watched
    got = await v.next("positions")
    assert [(p["device"], p["ts"]) for p in got] == [(device, t + 1)]


async def test_a_box_wider_than_half_the_world_covers_what_it_says(
    server: Server, clients: list[Client]
) -> None:
    fleet = uid("fleet")
    v, _ = await subscribed_viewer(server, clients, [fleet], {"bbox": [-100, 0, 100, 10]})  # 200 degrees wide
    inside, i = await connected_device(server, clients, fleet)
    _, o = await connected_device(server, clients, fleet)
    t = now_ms()
    await o.call("fix", {"lat": 5.0, "lon": 150.0, "ts": t})
    await i.call("fix", {"lat": 5.0, "lon": 90.0, "ts": t})
    assert await next_devices(v) == [inside]


async def test_a_whole_world_box_still_holds_only_granted_fleets(
    server: Server, clients: list[Client]
) -> None:
    mine = uid("fleet")
    v, _ = await subscribed_viewer(server, clients, [mine], {"bbox": [-180, -90, 180, 90]})
    my_device, my_d = await connected_device(server, clients, mine)
    _, their_d = await connected_device(server, clients)
    t = now_ms()
    await their_d.call("fix", {"lat": -33.9, "lon": 151.2, "ts": t})
    await my_d.call("fix", {"lat": 64.1, "lon": -21.9, "ts": t})
    got = await v.next("positions")
    assert [(p["device"], p["fleet"]) for p in got] == [(my_device, mine)]
