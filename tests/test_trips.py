"""Trips end to end: a real server (and a cluster), a device driving to its destination over Socket.IO,
`trip` events to viewers, `alert`s to the device, webhooks to a real local receiver, the events stored
with the fixes' ack, complete/cancel/expiry, late fixes, scoping and bad input over HTTP."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from aiohttp import web
from harness import (
    ADMIN_TOKEN,
    Client,
    Cluster,
    Server,
    add_device,
    add_viewer,
    device_client,
    free_port,
    now_ms,
    own_server,
    uid,
    until,
    viewer_client,
    web_client,
    write_rules,
)

from tracker.trips.service import OPEN_TRIPS_MAX

DEST = {"lat": 52.52, "lon": 13.40}
M_PER_DEG_LAT = 111_277.0  # at 52.52 N


def auth(token: str = ADMIN_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def south_of(metres: float) -> dict[str, float]:
    """A position `metres` due south of DEST."""
    return {"lat": DEST["lat"] - metres / M_PER_DEG_LAT, "lon": DEST["lon"]}


def drive(start_m: float, t0: int, speed: float = 10.0, every_s: int = 5) -> list[dict[str, Any]]:
    """Fixes of a device driving north at `speed` m/s from `start_m` south of DEST to 10 m past it."""
    fixes = []
    k = 0
    while True:
        left = start_m - speed * every_s * k
        fixes.append({**south_of(max(left, -10.0)), "ts": t0 + k * every_s * 1000, "speed": speed})
        if left <= -10:
            return fixes
        k += 1


class Hook:
    """A local webhook receiver: every body it was POSTed, in order."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.json())
        return web.Response(status=200)


@pytest.fixture
async def hook() -> AsyncIterator[Hook]:
    receiver = Hook()
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    receiver.url = f"http://127.0.0.1:{port}/hook"
    yield receiver
    await runner.cleanup()


async def post(server: Server, path: str, body: Any = None, token: str = ADMIN_TOKEN) -> httpx.Response:
    async with web_client(base_url=server.url) as http:
        return await http.post(path, json=body, headers=auth(token))


async def get(server: Server, path: str, token: str = ADMIN_TOKEN, /, **query: Any) -> httpx.Response:
    async with web_client(base_url=server.url) as http:
        return await http.get(path, params=query, headers=auth(token))


@pytest.mark.cluster
async def test_a_trip_runs_from_started_to_completed(
    server: Server, db: asyncpg.Connection, clients: list[Client], hook: Hook
) -> None:
    fleet = uid("fleet")
    device, token = await add_device(server, fleet)
    viewer_token = await add_viewer(server, [fleet])
    viewer = await viewer_client(server, viewer_token, clients)
    assert (await viewer.call("subscribe", {"fleet": fleet}))["ok"]
    d = await device_client(server, token, clients)
    t0 = now_ms() - 200_000
    route = drive(1800, t0)
    # The device was driving already before the trip: the new trip knows its ETA at once.
    assert (await d.call("fix", route[:8]))["accepted"] == 8
    r = await post(
        server,
        "/api/trips",
        {
            "device": device,
            "destination": {**DEST, "radius_m": 60},
            "approach_m": 520,
            "ref": "order-17",
            "notify": [hook.url],
        },
        ADMIN_TOKEN,  # the receiver listens on 127.0.0.1, which only the admin may name
    )
    assert r.status_code == 201, r.text
    trip = r.json()
    assert (trip["device"], trip["fleet"], trip["status"], trip["ref"]) == (
        device,
        fleet,
        "started",
        "order-17",
    )
    assert trip["destination"] == {**DEST, "radius_m": 60.0}
    assert "share_url" not in trip
    remaining = 1800 - 35 * 10
    assert abs(trip["remaining_m"] - remaining) < 5
    expected_eta = route[7]["ts"] + (remaining - 60) * 1.3 / 10 * 1000  # to the circle's edge
    assert trip["eta_ts"] is not None and abs(trip["eta_ts"] - expected_eta) < 2000
    started = await viewer.next("trip")
    assert started == {
        "id": started["id"],
        "trip": trip["id"],
        "device": device,
        "fleet": fleet,
        "status": "started",
        "ts": trip["created_ts"],
        "eta_ts": trip["eta_ts"],
        "remaining_m": trip["remaining_m"],
        "ref": "order-17",
    }

    # Drive on: approaching at the first fix within 520 m, arrived at the first within 60 m, each stored
    # by the time the fix is acked.
    events: list[dict[str, Any]] = []
    for fix in route[8:]:
        assert (await d.call("fix", fix))["accepted"] == 1
        stored = await db.fetch(
            "SELECT status, ts FROM trip_events WHERE trip_id = $1 ORDER BY id", int(trip["id"])
        )
        events = [dict(x) for x in stored]
    statuses = [e["status"] for e in events]
    assert statuses == ["started", "approaching", "arrived"]
    first_near = next(f for f in route if 1800 - (f["ts"] - t0) / 1000 * 10 <= 520)
    first_in = next(f for f in route if 1800 - (f["ts"] - t0) / 1000 * 10 <= 60)
    assert [e["ts"] for e in events[1:]] == [first_near["ts"], first_in["ts"]]
    approaching, arrived = await viewer.next("trip"), await viewer.next("trip")
    assert (approaching["status"], approaching["ts"]) == ("approaching", first_near["ts"])
    assert approaching["eta_ts"] is not None
    assert abs(approaching["eta_ts"] - (first_near["ts"] + (500 - 60) * 1.3 / 10 * 1000)) < 3000
    assert (arrived["status"], arrived["ts"], arrived["remaining_m"]) == ("arrived", first_in["ts"], 0.0)
    alerts = [await d.next("alert") for _ in range(3)]
    assert [(a["type"], a["status"]) for a in alerts] == [
        ("trip", "started"),
        ("trip", "approaching"),
        ("trip", "arrived"),
    ]
    got = (await get(server, f"/api/trips/{trip['id']}", viewer_token)).json()
    assert (got["status"], got["arrived_ts"], got["approaching_ts"]) == (
        "arrived",
        first_in["ts"],
        first_near["ts"],
    )
    done = await post(server, f"/api/trips/{trip['id']}/complete", None, viewer_token)
    assert done.status_code == 200 and done.json()["status"] == "completed"
    assert (await viewer.next("trip"))["status"] == "completed"
    assert (await d.next("alert"))["status"] == "completed"
    again = await post(server, f"/api/trips/{trip['id']}/complete", None, viewer_token)
    assert again.status_code == 409 and "completed" in again.json()["error"]

    async def delivered() -> bool:
        return len(hook.bodies) >= 4

    await until(delivered)
    assert [b["status"] for b in hook.bodies] == ["started", "approaching", "arrived", "completed"]
    assert all(b["trip"] == trip["id"] for b in hook.bodies)
    listed = (await get(server, "/api/trips", viewer_token, device=device)).json()
    assert [t["id"] for t in listed["trips"]] == [trip["id"]] and listed["next_cursor"] is None
    assert (await get(server, "/api/trips", viewer_token, device=device, status="started")).json()[
        "trips"
    ] == []


async def test_late_fixes_and_jumps_move_no_trip(
    server: Server, db: asyncpg.Connection, clients: list[Client]
) -> None:
    fleet = uid("fleet")
    device, token = await add_device(server, fleet)
    d = await device_client(server, token, clients)
    t = now_ms() - 60_000
    assert (await d.call("fix", {**south_of(5000), "ts": t}))["accepted"] == 1
    trip = (await post(server, "/api/trips", {"device": device, "destination": DEST})).json()
    # Older than the newest fix: stored, but fires nothing.
    assert (await d.call("fix", {**DEST, "ts": t - 1000}))["accepted"] == 1
    # A GPS jump (5 km in 5 s) into the destination: stored, moves nothing.
    assert (await d.call("fix", {**DEST, "ts": t + 5000}))["accepted"] == 1
    assert (await d.call("fix", {**south_of(4990), "ts": t + 10_000}))["accepted"] == 1
    rows = await db.fetch("SELECT status FROM trip_events WHERE trip_id = $1", int(trip["id"]))
    assert [r[0] for r in rows] == ["started"]
    assert (await get(server, f"/api/trips/{trip['id']}")).json()["status"] == "started"


async def test_cancel_expiry_scoping_and_bad_input(
    server: Server, db: asyncpg.Connection, clients: list[Client]
) -> None:
    fleet, other = uid("fleet"), uid("fleet")
    device, _ = await add_device(server, fleet)
    mine, theirs = await add_viewer(server, [fleet]), await add_viewer(server, [other])
    viewer = await viewer_client(server, mine, clients)
    assert (await viewer.call("subscribe", {"device": device}))["ok"]
    r = await post(server, "/api/trips", {"device": device, "destination": DEST}, theirs)
    assert r.status_code == 403 and "fleet" in r.json()["error"]
    trip = (await post(server, "/api/trips", {"device": device, "destination": DEST}, mine)).json()
    assert trip["eta_ts"] is None and trip["remaining_m"] is None  # no fix yet
    assert (await get(server, f"/api/trips/{trip['id']}", theirs)).status_code == 403
    assert (await get(server, "/api/trips", theirs, device=device)).status_code == 403
    assert (await post(server, f"/api/trips/{trip['id']}/cancel", None, theirs)).status_code == 403
    assert (await post(server, f"/api/trips/{trip['id']}/cancel", None, mine)).json()["status"] == "cancelled"
    assert [(await viewer.next("trip"))["status"] for _ in range(2)] == ["started", "cancelled"]
    assert (await post(server, f"/api/trips/{trip['id']}/complete", None, mine)).status_code == 409

    # Not arrived within its ttl_s: expired, announced like any change.
    short = (
        await post(server, "/api/trips", {"device": device, "destination": DEST, "ttl_s": 0.5}, mine)
    ).json()
    assert (await viewer.next("trip"))["status"] == "started"
    expired = await viewer.next("trip", timeout=10)
    assert (expired["trip"], expired["status"], expired["ts"]) == (
        short["id"],
        "expired",
        short["expires_ts"],
    )
    assert (await get(server, f"/api/trips/{short['id']}", mine)).json()["status"] == "expired"

    for body, field in [
        ({"destination": DEST}, "device"),
        ({"device": device}, "destination"),
        ({"device": device, "destination": {"lat": 91, "lon": 0}}, "destination.lat"),
        ({"device": device, "destination": {"lat": 1}}, "lon"),
        ({"device": device, "destination": {**DEST, "radius_m": -1}}, "radius_m"),
        ({"device": device, "destination": {"fence": "no-such-fence"}}, "destination.fence"),
        ({"device": device, "destination": DEST, "approach_m": "far"}, "approach_m"),
        ({"device": device, "destination": DEST, "notify": ["ftp://x"]}, "notify"),
        # A viewer may not aim the server's signed POSTs at this machine or a private network.
        ({"device": device, "destination": DEST, "notify": ["http://127.0.0.1:9/"]}, "private address"),
        ({"device": device, "destination": DEST, "notify": ["http://localhost/x"]}, "private address"),
        ({"device": device, "destination": DEST, "notify": ["http://169.254.169.254/"]}, "private address"),
        ({"device": device, "destination": DEST, "notify": ["https://[::1]/"]}, "private address"),
        ({"device": device, "destination": DEST, "notify": ["http://10.1.2.3/"]}, "private address"),
        ({"device": device, "destination": DEST, "share": "yes"}, "share"),
        ({"device": device, "destination": DEST, "share": True, "share_ttl_s": 5}, "share_ttl_s"),
    ]:
        r = await post(server, "/api/trips", body, mine)
        assert r.status_code == 400 and field in r.json()["error"], (body, r.text)
    assert (
        await post(server, "/api/trips", {"device": uid("nobody"), "destination": DEST})
    ).status_code == 404
    assert (await get(server, "/api/trips/999999999")).status_code == 404
    assert (await get(server, "/api/trips/x1")).status_code == 400
    assert (await get(server, "/api/trips/%C2%B2")).status_code == 400  # a digit to str, not to int
    assert (await get(server, "/api/trips", mine, status="lost")).status_code == 400
    # A share link is asked for and kept with the trip, its token hashed (tests/test_shares.py has the rest).
    shared = (
        await post(server, "/api/trips", {"device": device, "destination": DEST, "share": True}, mine)
    ).json()
    assert shared["share"] is True and shared["share_url"].startswith(f"{server.url}/s/")
    row = await db.fetchrow(
        "SELECT share, share_ttl_s, share_hash FROM trips WHERE id = $1", int(shared["id"])
    )
    assert tuple(row[:2]) == (True, 86400) and len(row[2]) == 32


async def test_a_device_has_a_bounded_number_of_trips_on_the_way(server: Server) -> None:
    """Each fix moves every open trip of its device, each change fans out to their webhooks: past
    OPEN_TRIPS_MAX started or approaching trips, a new one is refused until one ends."""
    fleet = uid("fleet")
    device, _ = await add_device(server, fleet)
    mine = await add_viewer(server, [fleet])
    body = {"device": device, "destination": DEST}
    ids = [(await post(server, "/api/trips", body, mine)).json()["id"] for _ in range(OPEN_TRIPS_MAX)]
    r = await post(server, "/api/trips", body, mine)
    assert r.status_code == 409 and "complete or cancel one" in r.json()["error"], r.text
    assert (await post(server, f"/api/trips/{ids[0]}/cancel", None, mine)).status_code == 200
    assert (await post(server, "/api/trips", body, mine)).status_code == 201


FENCES = """
fences:
  - id: yard
    polygon: [[13.40, 52.52], [13.41, 52.52], [13.41, 52.53], [13.40, 52.53]]
"""


async def test_a_fence_as_destination(database_url: str, tmp_path: Path, clients: list[Client]) -> None:
    write_rules(tmp_path, FENCES)
    with own_server(database_url, tmp_path) as server:
        device, token = await add_device(server, uid("fleet"))
        d = await device_client(server, token, clients)
        r = await post(
            server, "/api/trips", {"device": device, "destination": {"fence": "yard"}, "approach_m": 300}
        )
        assert r.status_code == 201, r.text
        trip = r.json()
        assert trip["destination"] == {"fence": "yard"}
        t = now_ms() - 100_000
        # 400 m west of the yard's west edge, then 200 m, then inside.
        west = 13.40 - 400 / (M_PER_DEG_LAT * math.cos(math.radians(52.525)))
        west2 = 13.40 - 200 / (M_PER_DEG_LAT * math.cos(math.radians(52.525)))
        for i, lon in enumerate([west, west2, 13.401]):
            assert (await d.call("fix", {"lat": 52.525, "lon": lon, "ts": t + i * 30_000}))["accepted"] == 1

        async def arrived() -> dict[str, Any] | None:
            body: dict[str, Any] = (await get(server, f"/api/trips/{trip['id']}")).json()
            return body if body["status"] == "arrived" else None

        got = await until(arrived)
        assert (got["approaching_ts"], got["arrived_ts"], got["remaining_m"]) == (t + 30_000, t + 60_000, 0.0)
        alerts = [await d.next("alert") for _ in range(3)]
        assert [a["status"] for a in alerts] == ["started", "approaching", "arrived"]
        metrics = (await get(server, "/metrics")).text
        for status in ("started", "approaching", "arrived"):
            assert f'tracker_trip_events_total{{status="{status}"}} 1.0' in metrics
        assert "\ntracker_trips_active " in metrics  # the session's other tests keep trips open here too


async def test_a_trip_follows_its_device_across_processes(
    cluster_server: Cluster, db: asyncpg.Connection, clients: list[Client]
) -> None:
    """A phone on process A, then on process B (it switched networks): the trip's state goes with the
    device, so B fires `arrived` but never `approaching` again, and the late fix A is still sent fires
    nothing."""
    a, b = cluster_server.processes[0], cluster_server.processes[1]
    fleet = uid("fleet")
    device, token = await add_device(a, fleet)
    trip = (
        await post(
            a, "/api/trips", {"device": device, "destination": {**DEST, "radius_m": 60}, "approach_m": 520}
        )
    ).json()
    on_a = await device_client(a, token, clients)
    t0 = now_ms() - 100_000
    route = drive(800, t0)  # approaching at 520 m, arrived at 60 m
    near = next(i for i, f in enumerate(route) if 800 - (f["ts"] - t0) / 1000 * 10 <= 520)
    assert (await on_a.call("fix", route[: near + 1]))["accepted"] == near + 1
    on_b = await device_client(b, token, clients)  # B takes the device, with its trip as A left it
    assert (await on_b.call("fix", route[near + 1 :]))["accepted"] == len(route) - near - 1
    assert (await on_a.call("fix", {**DEST, "ts": route[near]["ts"] - 500}))["accepted"] == 1  # late
    rows = await db.fetch("SELECT status FROM trip_events WHERE trip_id = $1 ORDER BY id", int(trip["id"]))
    assert [r[0] for r in rows] == ["started", "approaching", "arrived"]


async def test_export_and_erasure_carry_the_trips(
    server: Server, db: asyncpg.Connection, clients: list[Client]
) -> None:
    device, token = await add_device(server, uid("fleet"))
    d = await device_client(server, token, clients)
    assert (await d.call("fix", {**south_of(100), "ts": now_ms() - 5000}))["accepted"] == 1
    trip = (await post(server, "/api/trips", {"device": device, "destination": DEST, "ref": "o-9"})).json()
    async with web_client(base_url=server.url, headers=auth()) as http:
        lines = [
            orjson.loads(x) for x in (await http.get(f"/api/admin/devices/{device}/export")).text.splitlines()
        ]
        trips = [x for x in lines if x["type"] == "trip"]
        assert [(x["id"], x["ref"], x["status"]) for x in trips] == [(trip["id"], "o-9", "started")]
        assert [x["status"] for x in lines if x["type"] == "trip_event"] == ["started"]
        assert (
            await http.delete(f"/api/admin/devices/{device}", params={"erase": "true"})
        ).status_code == 202

        async def done() -> dict[str, Any] | None:
            status: dict[str, Any] = (await http.get(f"/api/admin/devices/{device}/erasure")).json()
            return status if status["state"] == "done" else None

        status = await until(done, timeout=30)
    assert status["deleted"]["trips"] == 1
    assert await db.fetchval("SELECT count(*) FROM trip_events WHERE trip_id = $1", int(trip["id"])) == 0
