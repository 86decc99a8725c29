"""Geofences end to end: a real server with a fence folder, devices and viewers over Socket.IO, events over
HTTP, state kept across a restart, hot reload, and webhooks to a real local receiver."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from aiohttp import web
from harness import (
    ADMIN_TOKEN,
    Client,
    Server,
    add_device,
    add_viewer,
    connected_device,
    device_client,
    free_port,
    now_ms,
    own_cluster,
    own_server,
    start_server,
    uid,
    until,
    viewer_client,
    web_client,
    write_rules,
)

RULES = """
fences:
  - id: depot
    name: Depot
    tags: [depot]
    polygon: [[13.40, 52.52], [13.41, 52.52], [13.41, 52.53], [13.40, 52.53]]
  - id: hub
    circle: {center: [13.45, 52.50], radius_m: 150}
rules:
  - id: arrive
    on: enter
    fence_tags: [depot]
  - id: leave
    on: exit
    fences: [depot]
    notify: [viewers, device]
  - id: hub-visit
    on: enter
    fences: [hub]
    notify: [device]
"""
IN = {"lat": 52.525, "lon": 13.405}
OUT = {"lat": 52.50, "lon": 13.30}


def auth(token: str = ADMIN_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def get(server: Server, path: str, token: str = ADMIN_TOKEN, /, **query: Any) -> httpx.Response:
    async with web_client(base_url=server.url) as http:
        return await http.get(path, params=query, headers=auth(token))


@pytest.fixture
def server(database_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Server]:
    """Not the session's server: one of the test's own, with RULES in its fence folder (`tmp_path`), so
    the test may rewrite the rules; for a test marked `cluster`, once that and once a cluster of three
    reading the same folder."""
    write_rules(tmp_path, RULES)
    if getattr(request, "param", "single") == "cluster":
        with own_cluster(database_url, tmp_path, 3) as c:
            yield c
        return
    with own_server(database_url, tmp_path) as s:
        yield s


@pytest.mark.cluster
async def test_events_reach_viewers_device_and_http(
    server: Server, db: asyncpg.Connection, clients: list[Client]
) -> None:
    fleet, other_fleet = uid("fleet"), uid("fleet")
    device, token = await add_device(server, fleet)
    viewer = await viewer_client(server, await add_viewer(server, [fleet]), clients)
    outsider_token = await add_viewer(server, [other_fleet])
    outsider = await viewer_client(server, outsider_token, clients)
    assert (await viewer.call("subscribe", {"fleet": fleet}))["ok"]
    assert (await outsider.call("subscribe", {"fleet": other_fleet}))["ok"]
    d = await device_client(server, token, clients)
    t = now_ms() - 10_000
    ack = await d.call("fix", [{**OUT, "ts": t}, {**IN, "ts": t + 1000}])
    assert ack["accepted"] == 2
    # The ack means the event is stored: read it from another connection right away.
    rows = await db.fetch("SELECT type, rule_id, fence_id, ts FROM events WHERE device_id = $1", device)
    assert [tuple(r) for r in rows] == [("enter", "arrive", "depot", t + 1000)]
    event = await viewer.next("geofence")
    assert event == {
        "id": event["id"],
        "type": "enter",
        "rule": "arrive",
        "fence": "depot",
        "device": device,
        "fleet": fleet,
        "ts": t + 1000,
        "lat": IN["lat"],
        "lon": IN["lon"],
    }
    inside = (await get(server, "/api/geofences/depot/inside")).json()["devices"]
    assert {"id": device, "fleet": fleet, "since_ts": t + 1000} in inside
    assert (await get(server, "/api/geofences/depot/inside", outsider_token)).json() == {"devices": []}
    assert d.pending("alert") == []  # `arrive` notifies viewers only

    assert (await d.call("fix", {**OUT, "ts": t + 2000}))["accepted"] == 1
    leave = await viewer.next("geofence")
    assert (leave["type"], leave["rule"], leave["ts"]) == ("exit", "leave", t + 2000)
    alert = await d.next("alert")
    assert alert == leave
    assert device not in [
        x["id"] for x in (await get(server, "/api/geofences/depot/inside")).json()["devices"]
    ]

    # A device-only rule: an alert, nothing to viewers.
    assert (await d.call("fix", {"lat": 52.50, "lon": 13.45, "ts": t + 3000}))["accepted"] == 1
    hub = await d.next("alert")
    assert (hub["type"], hub["fence"]) == ("enter", "hub")

    r = await get(server, "/api/events", device=device, **{"from": t - 1, "to": t + 10_000})
    body = r.json()
    assert [(e["type"], e["rule"], e["ts"]) for e in body["events"]] == [
        ("enter", "arrive", t + 1000),
        ("exit", "leave", t + 2000),
        ("enter", "hub-visit", t + 3000),
    ]
    assert body["next_cursor"] is None
    assert body["events"][0]["id"] == event["id"]
    # Paging, and filters.
    page = (await get(server, "/api/events", device=device, limit=2, **{"from": t - 1})).json()
    assert len(page["events"]) == 2 and page["next_cursor"]
    rest = (
        await get(server, "/api/events", device=device, cursor=page["next_cursor"], **{"from": t - 1})
    ).json()
    assert [e["rule"] for e in rest["events"]] == ["hub-visit"] and rest["next_cursor"] is None
    only = (await get(server, "/api/events", device=device, type="exit", **{"from": t - 1})).json()
    assert [e["type"] for e in only["events"]] == ["exit"]
    # As admin, every fleet's events of the fence: the test's own (t is 10 s in the past, so a test just
    # before, say this one on the other server shape, may have entered the hub inside the window too).
    by_fence = (await get(server, "/api/events", fence="hub", **{"from": t - 1})).json()
    assert [e["device"] for e in by_fence["events"] if e["fleet"] == fleet] == [device]
    # Scoping: another fleet's viewer sees none of it, and may not name the device.
    assert (await get(server, "/api/events", outsider_token, **{"from": t - 1})).json()["events"] == []
    r = await get(server, "/api/events", outsider_token, device=device)
    assert r.status_code == 403 and device in r.json()["error"]
    assert outsider.pending("geofence") == []
    for query, field in [
        ({"type": "teleport"}, "type"),
        ({"limit": "0"}, "limit"),
        ({"cursor": "x"}, "cursor"),
    ]:
        r = await get(server, "/api/events", **query)
        assert r.status_code == 400 and field in r.json()["error"], r.text
    r = await get(server, "/api/geofences/nowhere/inside")
    assert r.status_code == 404 and "nowhere" in r.json()["error"]


async def test_state_survives_a_restart(database_url: str, tmp_path: Path, clients: list[Client]) -> None:
    write_rules(tmp_path, RULES)
    with own_server(database_url, tmp_path) as server:
        device, token = await add_device(server, uid("fleet"))
        d = await device_client(server, token, clients)
        t = now_ms() - 10_000
        assert (await d.call("fix", {**IN, "ts": t}))["accepted"] == 1
        await d.close()
    with own_server(database_url, tmp_path) as server:
        d = await device_client(server, token, clients)
        # Still inside after the restart: no second enter; then the exit fires exactly once.
        assert (await d.call("fix", [{**IN, "ts": t + 1000}, {**OUT, "ts": t + 2000}]))["accepted"] == 2
        events = (await get(server, "/api/events", device=device, **{"from": t - 1})).json()["events"]
        assert [(e["type"], e["ts"]) for e in events] == [("enter", t), ("exit", t + 2000)]
        # A late fix (older than the newest) is stored but fires nothing.
        assert (await d.call("fix", {**IN, "ts": t + 1500}))["accepted"] == 1
        again = (await get(server, "/api/events", device=device, **{"from": t - 1})).json()["events"]
        assert len(again) == 2


async def test_hot_reload_keeps_last_good_rules(
    server: Server, tmp_path: Path, db: asyncpg.Connection, clients: list[Client]
) -> None:
    inside, d = await connected_device(server, clients)
    assert (await d.call("fix", {**IN, "ts": now_ms() - 5000}))["accepted"] == 1
    state = "SELECT rule_id, fence_id FROM fence_state WHERE device_id = $1 ORDER BY 1, 2"
    assert [tuple(r) for r in await db.fetch(state, inside)] == [
        ("", "depot"),
        ("arrive", "depot"),
        ("leave", "depot"),
    ]
    initial = (await get(server, "/api/geofences")).json()
    assert [f["properties"]["id"] for f in initial["features"]] == ["depot", "hub"]
    assert initial["features"][1]["properties"]["circle"] == {"center": [13.45, 52.5], "radius_m": 150}
    assert [r["id"] for r in initial["rules"]] == ["arrive", "leave", "hub-visit"]
    assert initial["errors"] == []

    # A broken file: the rules in force stay, the error names file and line.
    write_rules(tmp_path, RULES.replace("radius_m: 150", "radius_m: -3"))

    async def errors() -> list[str]:
        return list((await get(server, "/api/geofences")).json()["errors"])

    errs = await until(errors)
    assert len(errs) == 1 and "rules.yaml:8:" in errs[0] and "radius_m" in errs[0], errs
    assert [f["properties"]["id"] for f in (await get(server, "/api/geofences")).json()["features"]] == [
        "depot",
        "hub",
    ]
    # Fixed, with a new fence and without `hub`: the new set is in force and the error gone.
    write_rules(
        tmp_path,
        "fences:\n  - id: yard\n    polygon: [[13.40, 52.52], [13.41, 52.52], [13.41, 52.53]]\n"
        "rules:\n  - {id: yard-in, on: enter, fences: [yard]}\n",
    )

    async def reloaded() -> dict[str, Any] | None:
        body: dict[str, Any] = (await get(server, "/api/geofences")).json()
        return body if [f["properties"]["id"] for f in body["features"]] == ["yard"] else None

    body = await until(reloaded)
    assert body["errors"] == [] and [r["id"] for r in body["rules"]] == ["yard-in"]

    async def state_dropped() -> bool:  # `depot` is gone, and its state with it (just after the swap)
        return not await db.fetch(state, inside)

    await until(state_dropped)
    device, d = await connected_device(server, clients)
    t = now_ms() - 1000
    assert (await d.call("fix", {"lat": 52.521, "lon": 13.405, "ts": t}))["accepted"] == 1
    events = (await get(server, "/api/events", device=device, **{"from": t - 1})).json()["events"]
    assert [(e["rule"], e["fence"]) for e in events] == [("yard-in", "yard")]


async def test_webhook_retried_until_delivered_and_signed(
    database_url: str, tmp_path: Path, db: asyncpg.Connection, clients: list[Client]
) -> None:
    received: list[tuple[bytes, dict[str, str]]] = []
    failures = 2

    async def hook(request: web.Request) -> web.Response:
        received.append((await request.read(), dict(request.headers)))
        return web.Response(status=503 if len(received) <= failures else 200)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    secret = "s3cret-" + uid("k")
    write_rules(
        tmp_path,
        RULES
        + f"  - id: hooked\n    on: enter\n    fences: [depot]\n    notify: ['http://127.0.0.1:{port}/hook']\n",
    )
    server = start_server(
        database_url, tmp_path, {"TRACKER_WEBHOOK_SECRET": secret, "TRACKER_WEBHOOK_BACKOFF_S": "0.05"}
    )
    try:
        device, d = await connected_device(server, clients)
        t = now_ms() - 1000
        assert (await d.call("fix", {**IN, "ts": t}))["accepted"] == 1

        async def delivered() -> Any:
            return await db.fetchrow(
                "SELECT o.state, o.attempts, e.id FROM webhook_outbox o JOIN events e ON e.id = o.event_id "
                "WHERE e.device_id = $1 AND o.state = 'delivered'",
                device,
            )

        row = await until(delivered)
        assert row["attempts"] == failures + 1 and len(received) == failures + 1
        body, headers = received[-1]
        event = httpx.Response(200, content=body).json()
        assert (event["id"], event["type"], event["rule"], event["device"]) == (
            str(row["id"]),
            "enter",
            "hooked",
            device,
        )
        stamp, _, mac = headers["X-Tracker-Signature"].partition(",v1=")
        t_sig = stamp.removeprefix("t=")
        expected = hmac.new(secret.encode(), f"{t_sig}.".encode() + body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(mac, expected)
        metrics = (await get(server, "/metrics")).text
        assert 'tracker_webhook_deliveries_total{result="retry"} 2.0' in metrics
        assert 'tracker_webhook_deliveries_total{result="delivered"} 1.0' in metrics
    finally:
        server.stop()
        await runner.cleanup()


async def test_a_device_moving_to_another_process_keeps_its_fence_state(
    database_url: str, tmp_path: Path, clients: list[Client]
) -> None:
    """With several processes (Redis), a reconnect may land elsewhere: that process takes the device's
    state from PostGIS, so the exit still fires and the enter does not fire twice."""
    env = {"TRACKER_REDIS_URL": "redis://127.0.0.1:6379/0"}
    for folder in ("a", "b"):
        write_rules(tmp_path / folder, RULES)
    with (
        own_server(database_url, tmp_path / "a", env) as a,
        own_server(database_url, tmp_path / "b", env) as b,
    ):
        device, token = await add_device(a, uid("fleet"))
        t = now_ms() - 10_000
        # B sees the device first (outside), so it holds a stale view of it.
        on_b = await device_client(b, token, clients)
        assert (await on_b.call("fix", {**OUT, "ts": t}))["accepted"] == 1
        await on_b.close()
        on_a = await device_client(a, token, clients)
        assert (await on_a.call("fix", {**IN, "ts": t + 1000}))["accepted"] == 1  # enter, on A
        await on_a.close()
        on_b = await device_client(b, token, clients)
        ack = await on_b.call("fix", [{**IN, "ts": t + 2000}, {**OUT, "ts": t + 3000}])
        assert ack["accepted"] == 2
        events = (await get(b, "/api/events", device=device, **{"from": t - 1})).json()["events"]
        assert [(e["type"], e["rule"], e["ts"]) for e in events] == [
            ("enter", "arrive", t + 1000),
            ("exit", "leave", t + 3000),
        ]
