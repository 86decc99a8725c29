"""Token lifecycle (contract part 2, "Tokens"): a revoked, re-keyed or expired token stops working at once,
everywhere: its open sockets are cut within 2 s and new connections and requests are refused."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from harness import (
    ADMIN_TOKEN,
    Client,
    Server,
    add_device,
    add_viewer,
    device_client,
    now_ms,
    refusal,
    uid,
    viewer_client,
    web_client,
)
from test_cli import tracker

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
CUT_WITHIN_S = 2.0  # the contract's bound


def disconnected(client: Client) -> asyncio.Event:
    """Set when the server closes `client`'s namespace."""
    gone = asyncio.Event()
    client.sio.on("disconnect", lambda *_: gone.set(), namespace=client.namespace)
    return gone


async def cut_within(bound_s: float, gone: asyncio.Event, act: Callable[[], Awaitable[Any]]) -> float:
    """Run `act` and return how long until `gone` was set; fails past `bound_s`."""
    started = time.monotonic()
    await act()
    await asyncio.wait_for(gone.wait(), bound_s)
    return time.monotonic() - started


async def test_a_revoked_device_token_is_cut_and_refused(server: Server, clients: list[Client]) -> None:
    fleet = uid("fleet")
    device, token = await add_device(server, fleet)
    other, other_token = await add_device(server, fleet)
    d = await device_client(server, token, clients)
    keep = await device_client(server, other_token, clients)
    assert (await d.call("fix", {"lat": 1.0, "lon": 1.0, "ts": now_ms()}))["accepted"] == 1
    gone, kept = disconnected(d), disconnected(keep)
    async with web_client(base_url=server.url) as http:

        async def revoke() -> None:
            r = await http.delete(f"/api/admin/devices/{device}/token", headers=ADMIN)
            assert r.status_code == 200 and r.json() == {"id": device, "revoked": True}, r.text

        await cut_within(CUT_WITHIN_S, gone, revoke)
        # New connections and HTTP requests with it are refused; the fleet's other device is untouched.
        assert (await refusal(server, "/device", {"token": token}))["message"] == "unauthorized"
        r = await http.get("/api/ingest/osmand", params={"id": token, "lat": 1, "lon": 1})
        assert r.status_code == 401, r.text
        assert (await keep.call("fix", {"lat": 1.0, "lon": 1.0, "ts": now_ms()}))["accepted"] == 1
        assert not kept.is_set()
        # Revoking needs the admin token and a device that exists.
        r = await http.delete(
            f"/api/admin/devices/{other}/token", headers={"Authorization": f"Bearer {token}"}
        )
        assert r.status_code in (401, 403), r.text
        r = await http.delete(f"/api/admin/devices/{uid('nobody')}/token", headers=ADMIN)
        assert r.status_code == 404 and "not found" in r.json()["error"], r.text


async def test_cli_revoke_and_replace_cut_sockets_of_the_server(
    server: Server, database_url: str, clients: list[Client]
) -> None:
    """The CLI is another process: the server hears of the change through the database."""
    fleet = uid("fleet")
    name = uid("desk")
    viewer_token = await add_viewer(server, [fleet], name)
    v = await viewer_client(server, viewer_token, clients)
    assert (await v.call("subscribe", {"fleet": fleet}))["ok"]

    async def revoke_viewer() -> None:
        done = await asyncio.to_thread(tracker, "viewer", "revoke", name, "--database-url", database_url)
        assert done.returncode == 0 and done.stdout.strip() == f"viewer {name} revoked", done.stderr

    await cut_within(CUT_WITHIN_S + 10, disconnected(v), revoke_viewer)  # + the command's start-up
    assert (await refusal(server, "/viewer", {"token": viewer_token}))["message"] == "unauthorized"
    async with web_client(base_url=server.url) as http:
        r = await http.get("/api/devices", headers={"Authorization": f"Bearer {viewer_token}"})
        assert r.status_code == 401, r.text
    missing = await asyncio.to_thread(
        tracker, "viewer", "revoke", uid("nobody"), "--database-url", database_url
    )
    assert missing.returncode == 1 and "not found" in missing.stderr

    # A lost phone re-keyed with --replace: the old token's socket is cut, the new token works.
    device, token = await add_device(server, fleet)
    d = await device_client(server, token, clients)
    new: dict[str, str] = {}

    async def rekey() -> None:
        done = await asyncio.to_thread(
            tracker, "device", "add", device, "--fleet", fleet, "--replace", "--database-url", database_url
        )
        assert done.returncode == 0, done.stderr
        new["token"] = done.stdout.strip()

    await cut_within(CUT_WITHIN_S + 10, disconnected(d), rekey)
    again = await device_client(server, new["token"], clients)
    assert (await again.call("fix", {"lat": 1.0, "lon": 1.0, "ts": now_ms()}))["accepted"] == 1


async def test_a_viewer_token_expires(server: Server, clients: list[Client]) -> None:
    fleet = uid("fleet")
    async with web_client(base_url=server.url) as http:
        bad = await http.post(
            "/api/admin/viewers",
            json={"name": uid("v"), "fleets": [fleet], "expires_s": "soon"},
            headers=ADMIN,
        )
        assert bad.status_code == 400 and "expires_s" in bad.json()["error"], bad.text
        r = await http.post(
            "/api/admin/viewers", json={"name": uid("v"), "fleets": [fleet], "expires_s": 2}, headers=ADMIN
        )
        assert r.status_code == 201, r.text
        body = r.json()
        token, expires_ts = body["token"], body["expires_ts"]
        assert abs(expires_ts - (now_ms() + 2000)) < 1500
        auth = {"Authorization": f"Bearer {token}"}
        assert (await http.get("/api/me", headers=auth)).status_code == 200
        v = await viewer_client(server, token, clients)
        gone = disconnected(v)
        await asyncio.wait_for(gone.wait(), 2 + CUT_WITHIN_S + 1)
        assert now_ms() >= expires_ts - 50  # cut when it expired, not before
        r = await http.get("/api/me", headers=auth)
        assert r.status_code == 401 and "expired" in r.json()["error"], r.text
    assert (await refusal(server, "/viewer", {"token": token}))["message"] == "unauthorized"
