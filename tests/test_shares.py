"""Share links of trips, tried as a customer and as an attacker would: a real server (and a cluster), the
link's page in Chromium, its `/viewer` socket, and every way a link could grant more than its one device
for its trip's duration (other devices, boxes, fleets, the HTTP API, earlier history, ended links,
guessed tokens)."""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
from harness import (
    ADMIN_TOKEN,
    Client,
    Cluster,
    Server,
    add_device,
    add_viewer,
    device_client,
    now_ms,
    own_server,
    refusal,
    uid,
    until,
    viewer_client,
    web_client,
)
from playwright.async_api import Browser, async_playwright

from tracker.tools.browser import launch_chromium

DEST = {"lat": 52.52, "lon": 13.40}
M_PER_DEG_LAT = 111_277.0


def south_of(metres: float) -> dict[str, float]:
    return {"lat": DEST["lat"] - metres / M_PER_DEG_LAT, "lon": DEST["lon"]}


def auth(token: str = ADMIN_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def start_trip(
    server: Server, device: str, viewer_token: str, **extra: Any
) -> tuple[dict[str, Any], str]:
    """A shared trip of `device` to DEST; the trip and its link's token."""
    async with web_client(base_url=server.url) as http:
        r = await http.post(
            "/api/trips",
            json={"device": device, "destination": {**DEST, "radius_m": 60}, "share": True, **extra},
            headers=auth(viewer_token),
        )
    assert r.status_code == 201, r.text
    trip = r.json()
    url = urlsplit(trip["share_url"])
    assert url.scheme == "http" and url.netloc and url.path.startswith("/s/")
    return trip, url.path.removeprefix("/s/")


async def share_client(server: Server | Any, token: str, clients: list[Client]) -> Client:
    """A `/viewer` socket on a share link."""
    c = Client("/viewer")
    url = server.url_for("/viewer") if isinstance(server, Cluster) else server.url
    await c.sio.connect(url, namespaces=["/viewer"], auth={"share": token}, transports=["websocket"])
    clients.append(c)
    return c


async def disconnected(c: Client, timeout: float) -> float:
    """Seconds until the server cut `c` (bounded)."""
    started = time.monotonic()
    while c.sio.namespaces.get("/viewer") is not None or c.sio.connected:
        assert time.monotonic() - started < timeout, "the share socket was not cut in time"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def page(server: Server, token: str) -> httpx.Response:
    async with web_client(base_url=server.url) as http:
        return await http.get(f"/s/{token}")


@pytest.mark.cluster
async def test_a_link_shows_its_device_live_until_the_delivery_is_complete(
    server: Server, db: asyncpg.Connection, clients: list[Client]
) -> None:
    fleet = uid("fleet")
    device, device_token = await add_device(server, fleet)
    viewer_token = await add_viewer(server, [fleet])
    d = await device_client(server, device_token, clients)
    assert (await d.call("fix", {**south_of(1500), "ts": now_ms() - 5000, "speed": 9}))["accepted"] == 1
    trip, token = await start_trip(server, device, viewer_token)
    assert len(token) >= 43  # 256 bits, URL-safe base64
    row = await db.fetchrow("SELECT * FROM trips WHERE id = $1", int(trip["id"]))
    assert bytes(row["share_hash"]) == hashlib.sha256(token.encode()).digest()
    assert token not in str(dict(row))  # stored hashed only
    assert row["share_expires_ts"] == trip["created_ts"] + 86_400_000
    # Answered once: the trip as read later has no link.
    async with web_client(base_url=server.url) as http:
        again = (await http.get(f"/api/trips/{trip['id']}", headers=auth(viewer_token))).json()
    assert "share_url" not in again and again["share"] is True

    live = await page(server, token)
    assert live.status_code == 200 and "__SHARE_JS__" not in live.text
    assert live.headers["cache-control"] == "no-store" and live.headers["referrer-policy"] == "no-referrer"
    assert fleet not in live.text and device_token not in live.text

    s = await share_client(server, token, clients)
    shown = await s.next("share")
    assert shown["trip"] == trip["id"] and shown["device"] == device and shown["status"] == "started"
    assert set(shown) == {
        "trip", "device", "status", "eta_ts", "remaining_m", "destination", "expires_ts"
    }  # fmt: skip
    assert abs(shown["remaining_m"] - 1500) < 5
    # The fix before the trip is history before the trip: not shown.
    await asyncio.sleep(1.2)
    assert s.pending("positions") == []
    ts = now_ms()
    assert (await d.call("fix", {**south_of(1400), "ts": ts, "speed": 9}))["accepted"] == 1
    positions = await s.next("positions")
    assert positions == [{**south_of(1400), "device": device, "ts": ts, "speed": 9.0, "heading": None}]
    assert (await s.call("subscribe", {"device": device})) == {"ok": True}
    assert (await s.next("positions"))[0]["ts"] == ts  # the snapshot of its own device
    # Arriving does not end the link; completing does.
    assert (await d.call("fix", {**DEST, "ts": ts + 180_000, "speed": 8}))["accepted"] == 1

    async def arrived() -> bool:
        return any(t["status"] == "arrived" for t in s.pending("trip"))

    await until(arrived, timeout=10)
    async with web_client(base_url=server.url) as http:
        r = await http.post(f"/api/trips/{trip['id']}/complete", headers=auth(viewer_token))
    assert r.status_code == 200, r.text
    assert await s.next("ended", timeout=5) == {"trip": trip["id"], "state": "completed"}
    await disconnected(s, 3)
    done = await page(server, token)
    assert done.status_code == 410 and "This delivery is complete" in done.text
    assert (await refusal(server, "/viewer", {"share": token}))["message"] == "unauthorized"


async def test_a_link_grants_its_one_device_and_nothing_else(
    server: Server, db: asyncpg.Connection, clients: list[Client]
) -> None:
    fleet, other_fleet = uid("fleet"), uid("fleet")
    device, device_token = await add_device(server, fleet)
    sibling, sibling_token = await add_device(server, fleet)
    stranger, stranger_token = await add_device(server, other_fleet)
    viewer_token = await add_viewer(server, [fleet])
    dispatcher = await viewer_client(server, viewer_token, clients)
    assert (await dispatcher.call("subscribe", {"fleet": fleet}))["ok"]
    trip, token = await start_trip(server, device, viewer_token, ref="order-secret-9")
    s = await share_client(server, token, clients)
    await s.next("share")
    world = [-180, -90, 180, 90]
    for payload in (
        {"device": sibling},
        {"device": stranger},
        {"device": "no-such-device"},
        {"bbox": world},
        {"bbox": [13.3, 52.4, 13.5, 52.6]},
        {"fleet": fleet},
        {"fleet": other_fleet},
        {"device": device, "fleet": fleet},
        {"device": [device]},
        "all",
        None,
    ):
        ack = await s.call("subscribe", payload)
        assert ack["ok"] is False, payload
    for event, payload in (
        ("unsubscribe", {"device": device}),
        ("send", {"device": device, "body": "hello"}),
        ("send", {"device": sibling, "body": "hello"}),
    ):
        assert (await s.call(event, payload))["ok"] is False, (event, payload)
    # Everything around the device moves and talks; the link hears only its device's positions and trip.
    ts = now_ms()
    for token_, dev in ((device_token, device), (sibling_token, sibling), (stranger_token, stranger)):
        c = await device_client(server, token_, clients)
        assert (await c.call("fix", {**south_of(900), "ts": ts, "speed": 8}))["accepted"] == 1
        assert (await c.call("send", {"body": f"from {dev}"}))["ok"]
    assert (await dispatcher.call("send", {"device": device, "body": "to the device"}))["ok"]
    other_trip, _ = await start_trip(server, sibling, viewer_token)
    await asyncio.sleep(2.5)
    received = {event: s.pending(event) for event in list(s.events)}
    assert set(k for k, v in received.items() if v) <= {"positions", "trip"}, received
    seen = [p for batch in received.get("positions", []) for p in batch]
    assert seen and {p["device"] for p in seen} == {device}
    assert all(set(p) == {"device", "lat", "lon", "ts", "speed", "heading"} for p in seen)
    text = repr(received)
    for secret in (
        fleet,
        other_fleet,
        sibling,
        stranger,
        "order-secret-9",
        "to the device",
    ):
        assert secret not in text
    assert all(t["trip"] == trip["id"] != other_trip["id"] for t in received.get("trip", []))
    # The share token opens nothing else: no namespace, no HTTP route of the API (each one documented).
    assert (await refusal(server, "/viewer", {"token": token}))["message"] == "unauthorized"
    assert (await refusal(server, "/device", {"token": token}))["message"] == "unauthorized"
    async with web_client(base_url=server.url) as http:
        doc = (await http.get("/openapi.json")).json()
        asked = 0
        for path, operations in doc["paths"].items():
            if not path.startswith("/api/") or path.startswith("/api/ingest/"):
                continue
            real = trip["id"] if path.startswith("/api/trips/") else device
            concrete = re.sub(r"\{\w+\}", real, path)
            for method in operations:
                r = await http.request(method.upper(), concrete, headers=auth(token), json={})
                # 403 only from the admin routes, which refuse every token but the admin's.
                expected = (401, 403) if path.startswith("/api/admin/") else (401,)
                assert r.status_code in expected, (method, concrete, r.status_code, r.text)
                asked += 1
        assert asked > 20
        # The share token as an ingest device token stores nothing either.
        osmand = await http.get("/api/ingest/osmand", params={"id": token, "lat": 1, "lon": 1})
        assert osmand.status_code == 401
    # Nothing it asked for was done: the trip is still open, its link not revoked.
    row = await db.fetchrow("SELECT status, share_revoked_ts FROM trips WHERE id = $1", int(trip["id"]))
    assert row["status"] == "approaching" and row["share_revoked_ts"] is None
    assert (await s.call("subscribe", {"device": device})) == {"ok": True}


async def test_revoked_expired_cancelled_and_guessed_links(
    server: Server, db: asyncpg.Connection, clients: list[Client]
) -> None:
    fleet = uid("fleet")
    device, _ = await add_device(server, fleet)
    viewer_token = await add_viewer(server, [fleet])
    outsider_token = await add_viewer(server, [uid("fleet")])
    async with web_client(base_url=server.url) as http:
        # Revoked.
        trip, token = await start_trip(server, device, viewer_token, share_ttl_s=600)
        s = await share_client(server, token, clients)
        await s.next("share")
        path = f"/api/trips/{trip['id']}/share"
        assert (await http.delete(path)).status_code == 401
        assert (await http.delete(path, headers=auth(outsider_token))).status_code == 403
        assert (await http.delete(path, headers=auth(token))).status_code == 401
        assert (await http.delete("/api/trips/x/share", headers=auth(viewer_token))).status_code == 400
        r = await http.delete(path, headers=auth(viewer_token))
        assert r.status_code == 204, r.text
        assert await s.next("ended", timeout=2) == {"trip": trip["id"], "state": "ended"}
        assert await disconnected(s, 2) < 2
        gone = await http.get(f"/s/{token}")
        assert gone.status_code == 410 and "This link has ended" in gone.text
        assert (await refusal(server, "/viewer", {"share": token}))["message"] == "unauthorized"
        assert (await http.delete(path, headers=auth(viewer_token))).status_code == 204  # again: the same
        audit = await db.fetchval(
            "SELECT actor FROM audit WHERE action = 'share.revoke' AND target = $1", trip["id"]
        )
        assert audit is not None
        # A trip without a link has nothing to revoke.
        plain = await http.post(
            "/api/trips", json={"device": device, "destination": DEST}, headers=auth(viewer_token)
        )
        assert "share_url" not in plain.json()
        missing = await http.delete(f"/api/trips/{plain.json()['id']}/share", headers=auth(viewer_token))
        assert missing.status_code == 404

        # Expired (its share_ttl_s passed: set in the past here rather than waited for).
        trip, token = await start_trip(server, device, viewer_token, share_ttl_s=60)
        s = await share_client(server, token, clients)
        await s.next("share")
        await db.execute(
            "UPDATE trips SET share_expires_ts = $2 WHERE id = $1", int(trip["id"]), now_ms() - 1
        )
        assert await s.next("ended", timeout=2.5) == {"trip": trip["id"], "state": "ended"}
        assert (await http.get(f"/s/{token}")).status_code == 410
        assert (await refusal(server, "/viewer", {"share": token}))["message"] == "unauthorized"

        # Cancelled.
        trip, token = await start_trip(server, device, viewer_token)
        s = await share_client(server, token, clients)
        await s.next("share")
        assert (
            await http.post(f"/api/trips/{trip['id']}/cancel", headers=auth(viewer_token))
        ).status_code == 200
        assert await s.next("ended", timeout=2.5) == {"trip": trip["id"], "state": "ended"}
        assert "This link has ended" in (await http.get(f"/s/{token}")).text

        # Guessed: a well-formed token no link has, and junk.
        for guess in ("A" * 43, token[:-1] + ("A" if token[-1] != "A" else "B"), "x", "%00", "a" * 300):
            r = await http.get(f"/s/{guess}")
            assert r.status_code == 404 and "This link is not valid" in r.text, guess
            assert guess not in r.text or guess in ("x",)
        assert (await refusal(server, "/viewer", {"share": "A" * 43}))["message"] == "unauthorized"
        assert (await refusal(server, "/viewer", {"share": 12345}))["message"] == "unauthorized"


async def test_guessing_links_is_slowed_and_valid_links_still_open(
    database_url: str, tmp_path: Path, clients: list[Client]
) -> None:
    env = {"TRACKER_AUTH_FAILURE_BURST": "3", "TRACKER_AUTH_FAILURE_REFILL_S": "1"}
    with own_server(database_url, tmp_path, env) as server:
        fleet = uid("fleet")
        device, _ = await add_device(server, fleet)
        viewer_token = await add_viewer(server, [fleet])
        _, token = await start_trip(server, device, viewer_token)
        async with web_client(base_url=server.url) as http:
            codes = [(await http.get(f"/s/guess{i:040d}")).status_code for i in range(6)]
            assert codes[:3] == [404, 404, 404] and 429 in codes[3:], codes
            slowed = [r for r in [await http.get("/s/" + "B" * 43)] if r.status_code == 429]
            assert slowed and int(slowed[0].headers["retry-after"]) >= 1
            assert (await http.get(f"/s/{token}")).status_code == 200  # a real link is never slowed
        assert (await refusal(server, "/viewer", {"share": "C" * 43}))[
            "message"
        ] == "too many failed attempts"
        s = await share_client(server, token, clients)
        await s.next("share")
        metrics = httpx.get(server.url + "/metrics").text
        assert 'tracker_auth_refusals_total{edge="http",reason="unknown_share"}' in metrics


async def test_a_revocation_cuts_the_link_on_every_process(
    cluster_server: Cluster, clients: list[Client]
) -> None:
    a, b, c = cluster_server.processes[:3]
    fleet = uid("fleet")
    device, device_token = await add_device(a, fleet)
    viewer_token = await add_viewer(a, [fleet])
    trip, token = await start_trip(a, device, viewer_token)
    on_b, on_c = await share_client(b, token, clients), await share_client(c, token, clients)
    await on_b.next("share")
    await on_c.next("share")
    d = await device_client(a, device_token, clients)
    ts = now_ms()
    assert (await d.call("fix", {**south_of(700), "ts": ts}))["accepted"] == 1
    assert (await on_b.next("positions"))[0]["ts"] == ts  # a fix taken on A, seen on B and C
    assert (await on_c.next("positions"))[0]["ts"] == ts
    async with web_client(base_url=a.url) as http:
        assert (
            await http.delete(f"/api/trips/{trip['id']}/share", headers=auth(viewer_token))
        ).status_code == 204
    cut = await asyncio.gather(disconnected(on_b, 2), disconnected(on_c, 2))
    assert max(cut) < 2


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        b = await launch_chromium(p)
        yield b
        await b.close()


async def test_the_page_shows_the_device_live_then_the_end_on_a_phone(
    server: Server, browser: Browser, clients: list[Client]
) -> None:
    fleet = uid("fleet")
    device, device_token = await add_device(server, fleet)
    viewer_token = await add_viewer(server, [fleet])
    d = await device_client(server, device_token, clients)
    t0 = now_ms() - 60_000
    assert (
        await d.call("fix", [{**south_of(2000 - 50 * k), "ts": t0 + k * 5000, "speed": 10} for k in range(8)])
    )["accepted"] == 8
    trip, token = await start_trip(server, device, viewer_token)
    context = await browser.new_context(
        viewport={"width": 390, "height": 800}, is_mobile=True, has_touch=True
    )
    tab = await context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda e: errors.append(str(e)))
    blocked: list[str] = []

    async def local_only(route: Any) -> None:
        if route.request.url.startswith(server.url):
            await route.continue_()
        else:
            blocked.append(route.request.url)
            await route.abort()

    await tab.route("**/*", local_only)
    try:
        await tab.goto(f"{server.url}/s/{token}")
        await tab.wait_for_selector("body[data-share-state=live]", timeout=20_000)
        assert await tab.text_content("#share-status") == "On the way"
        assert re.fullmatch(r"\d{1,2}:\d{2}(:\d{2})?( [AP]M)?", (await tab.text_content("#share-eta")) or "")
        ts = now_ms()
        assert (await d.call("fix", {**south_of(1500), "ts": ts, "speed": 10}))["accepted"] == 1
        await tab.wait_for_selector(
            f'.share-courier[data-device-id="{device}"][data-ts="{ts}"]', timeout=10_000
        )
        assert await tab.locator(".share-card").is_visible()
        async with web_client(base_url=server.url) as http:
            r = await http.post(f"/api/trips/{trip['id']}/complete", headers=auth(viewer_token))
        assert r.status_code == 200
        await tab.wait_for_selector("body[data-share-state=completed]", timeout=5_000)
        assert await tab.text_content("#share-notice") == "This delivery is complete"
        await tab.reload()
        assert await tab.text_content("#share-notice") == "This delivery is complete"
        assert errors == []
        assert all(not u.startswith(server.url) for u in blocked)
    finally:
        await context.close()


def test_links_are_unguessable() -> None:
    """The token generator the links use: 256 bits, URL-safe, never twice."""
    from tracker.auth import new_token

    tokens = {new_token() for _ in range(1000)}
    assert len(tokens) == 1000 and all(re.fullmatch(r"[A-Za-z0-9_-]{43}", t) for t in tokens)
