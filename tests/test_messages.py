"""End to end: messages from dispatchers to devices, stored first, delivered in order until acked."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import socketio
from harness import (
    ADMIN_TOKEN,
    Client,
    Server,
    add_device,
    add_viewer,
    device_client,
    own_server,
    uid,
    until,
    viewer_client,
    web_client,
)
from viewers import device_and_viewer

from tracker.messages import _PUMP_LIMIT as PUMP_PAGE

# Every test that uses `server` runs on one process and on a cluster (tests/harness.py).
pytestmark = pytest.mark.cluster


class Silent:
    """A device connection that receives messages but never acks them (its handler never returns)."""

    def __init__(self) -> None:
        self.sio = socketio.AsyncClient(reconnection=False)
        self.received: asyncio.Queue[Any] = asyncio.Queue()
        self._never = asyncio.Event()
        self.sio.on("message", self._hold, namespace="/device")

    async def _hold(self, data: Any) -> None:
        self.received.put_nowait(data)
        await self._never.wait()

    async def connect(self, server: Server, token: str) -> Silent:
        await self.sio.connect(
            server.url, namespaces=["/device"], auth={"token": token}, transports=["websocket"]
        )
        return self

    async def next(self) -> Any:
        return await asyncio.wait_for(self.received.get(), 10)

    async def close(self) -> None:
        self._never.set()  # lets the handler return: python-socketio would then send an ack
        await self.sio.disconnect()


async def _messages(server: Server, token: str, device: str, **query: Any) -> list[dict[str, Any]]:
    async with web_client(base_url=server.url) as http:
        r = await http.get(
            f"/api/devices/{device}/messages", params=query, headers={"Authorization": f"Bearer {token}"}
        )
    assert r.status_code == 200, r.text
    return list(r.json()["messages"])


async def _until_acked(server: Server, token: str, device: str, count: int) -> list[dict[str, Any]]:
    """The device's messages once `count` of them are acked (acks are recorded right after the device's
    callback; bounded wait)."""
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        rows = await _messages(server, token, device)
        if sum(m["state"] == "acked" for m in rows) >= count or asyncio.get_running_loop().time() > deadline:
            return rows
        await asyncio.sleep(0.05)


async def _post(server: Server, token: str, device: str, payload: Any) -> httpx.Response:
    async with web_client(base_url=server.url) as http:
        return await http.post(
            f"/api/devices/{device}/messages", json=payload, headers={"Authorization": f"Bearer {token}"}
        )


async def test_messages_wait_for_an_offline_device_and_arrive_in_order(
    server: Server, clients: list[Client]
) -> None:
    fleet = uid("fleet")
    device, token = await add_device(server, fleet)
    name = uid("dispatcher")
    viewer_token = await add_viewer(server, [fleet], name)
    v = await viewer_client(server, viewer_token, clients)
    bodies: list[Any] = [{"text": "pick up at door 4"}, "plain text", [1, 2, {"nested": None}]]
    ids = []
    for body in bodies:
        ack = await v.call("send", {"device": device, "body": body})
        assert ack["ok"] is True, ack
        ids.append(ack["id"])
    r = await _post(server, viewer_token, device, {"body": 42})
    assert r.status_code == 201, r.text
    assert r.json()["state"] == "queued" and r.json()["from"] == name
    ids.append(r.json()["id"])
    bodies.append(42)
    assert len(set(ids)) == 4
    assert [m["state"] for m in await _messages(server, viewer_token, device)] == ["queued"] * 4

    d = await device_client(server, token, clients)
    got = [await d.next("message") for _ in bodies]
    assert [m["id"] for m in got] == ids
    assert [m["body"] for m in got] == bodies
    assert {m["from"] for m in got} == {name}
    assert all(isinstance(m["ts"], int) for m in got)

    rows = await _until_acked(server, viewer_token, device, 4)
    assert [(m["id"], m["state"], m["attempts"]) for m in rows] == [(i, "acked", 1) for i in reversed(ids)]
    assert await _messages(server, viewer_token, device, state="pending") == []

    # Acked messages never come again: after a reconnect the first message is a new one.
    await d.close()
    clients.remove(d)
    d2 = await device_client(server, token, clients)
    ack = await v.call("send", {"device": device, "body": "after reconnect"})
    assert (await d2.next("message"))["id"] == ack["id"]
    assert d2.pending("message") == []


async def test_a_connected_device_gets_a_message_at_once_on_every_connection(
    server: Server, clients: list[Client]
) -> None:
    device, token, viewer_token = await device_and_viewer(server)
    phone = await device_client(server, token, clients)
    tablet = await device_client(server, token, clients)
    r = await _post(server, viewer_token, device, {"body": {"job": 7}})
    assert r.status_code == 201
    for conn in (phone, tablet):
        m = await conn.next("message")
        assert (m["id"], m["body"]) == (r.json()["id"], {"job": 7})
    rows = await _until_acked(server, viewer_token, device, 1)
    assert rows[0]["state"] == "acked" and rows[0]["acked_ts"] >= rows[0]["ts"]


@pytest.mark.timeout(120)
async def test_a_connection_opened_after_a_page_of_acked_messages_still_gets_the_next(
    server: Server, clients: list[Client], db: asyncpg.Connection
) -> None:
    """A pump round reads a page from the lowest mark of the device's connections, with the messages
    acked since the oldest one opened; a page full of messages acked before a newer connection opened
    is settled for that one, and must not hold back what comes after it."""
    device, token, viewer_token = await device_and_viewer(server)
    phone = await device_client(server, token, clients)
    async with web_client(base_url=server.url, headers={"Authorization": f"Bearer {viewer_token}"}) as http:
        for i in range(PUMP_PAGE + 3):
            assert (await http.post(f"/api/devices/{device}/messages", json={"body": i})).status_code == 201
    acked = "SELECT count(*) FROM messages WHERE device_id = $1 AND acked_ts IS NOT NULL"
    await until(lambda: _equal(db.fetchval(acked, device), PUMP_PAGE + 3), timeout=60)
    for _ in range(PUMP_PAGE + 3):
        await phone.next("message")
    tablet = await device_client(server, token, clients)
    r = await _post(server, viewer_token, device, {"body": "after the page"})
    for conn in (tablet, phone):
        assert (await conn.next("message", timeout=15))["id"] == r.json()["id"]


async def _equal(value: Awaitable[Any], want: Any) -> bool:
    return bool(await value == want)


async def test_unacked_messages_come_again_in_order_on_reconnect(
    server: Server, clients: list[Client]
) -> None:
    device, token, viewer_token = await device_and_viewer(server)
    silent = await Silent().connect(server, token)
    try:
        first = (await _post(server, viewer_token, device, {"body": "one"})).json()["id"]
        second = (await _post(server, viewer_token, device, {"body": "two"})).json()["id"]
        assert [(await silent.next())["id"] for _ in range(2)] == [first, second]
        rows = await _messages(server, viewer_token, device)
        assert [(m["state"], m["attempts"]) for m in rows] == [("sent", 1), ("sent", 1)]
    finally:
        await silent.sio.disconnect()
    d = await device_client(server, token, clients)
    assert [(await d.next("message"))["id"] for _ in range(2)] == [first, second]
    rows = await _until_acked(server, viewer_token, device, 2)
    assert [(m["id"], m["state"], m["attempts"]) for m in rows] == [(second, "acked", 2), (first, "acked", 2)]


@pytest.mark.timeout(180)
async def test_messages_survive_a_killed_server(
    database_url: str, tmp_path: Path, clients: list[Client]
) -> None:
    with own_server(database_url, tmp_path / "a") as first:
        device, token, viewer_token = await device_and_viewer(first)
        silent = await Silent().connect(first, token)
        handed = (await _post(first, viewer_token, device, {"body": "handed, never acked"})).json()["id"]
        assert (await silent.next())["id"] == handed
        await silent.sio.disconnect()
        queued = (await _post(first, viewer_token, device, {"body": "queued"})).json()["id"]
        first.stop(signal.SIGKILL)
    with own_server(database_url, tmp_path / "b") as second:
        d = await device_client(second, token, clients)
        got = [await d.next("message") for _ in range(2)]
        assert [(m["id"], m["body"]) for m in got] == [(handed, "handed, never acked"), (queued, "queued")]
        rows = await _until_acked(second, viewer_token, device, 2)
        assert {m["id"]: m["state"] for m in rows} == {handed: "acked", queued: "acked"}


@pytest.mark.timeout(180)
async def test_a_message_reaches_a_device_connected_to_another_process(
    database_url: str, tmp_path: Path, clients: list[Client]
) -> None:
    with own_server(database_url, tmp_path / "a") as a, own_server(database_url, tmp_path / "b") as b:
        device, token, viewer_token = await device_and_viewer(a)
        d = await device_client(b, token, clients)
        r = await _post(a, viewer_token, device, {"body": "via the other process"})
        assert r.status_code == 201
        assert (await d.next("message"))["id"] == r.json()["id"]


async def test_a_viewer_sends_only_to_devices_of_its_fleets(server: Server, clients: list[Client]) -> None:
    mine, theirs = uid("fleet"), uid("fleet")
    device, token = await add_device(server, theirs)
    viewer_token = await add_viewer(server, [mine])
    v = await viewer_client(server, viewer_token, clients)
    d = await device_client(server, token, clients)

    ack = await v.call("send", {"device": device, "body": "not yours"})
    assert ack["ok"] is False and theirs in ack["error"]
    r = await _post(server, viewer_token, device, {"body": "not yours"})
    assert r.status_code == 403 and "error" in r.json()
    async with web_client(base_url=server.url) as http:
        r = await http.get(
            f"/api/devices/{device}/messages", headers={"Authorization": f"Bearer {viewer_token}"}
        )
        assert r.status_code == 403
        assert (await http.post(f"/api/devices/{device}/messages", json={"body": 1})).status_code == 401
    missing = await v.call("send", {"device": "no-such-device", "body": 1})
    assert missing["ok"] is False and "not found" in missing["error"]
    # The device got nothing of that: the first message it sees is the admin's.
    r = await _post(server, ADMIN_TOKEN, device, {"body": "from admin"})
    assert r.status_code == 201 and r.json()["from"] == "admin"
    m = await d.next("message")
    assert (m["id"], m["from"]) == (r.json()["id"], "admin")
    assert d.pending("message") == []


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"body": "no device"}, "device"),
        ({"device": "bad id!", "body": 1}, "device"),
        ({"device": "x"}, "body"),
        ("just a string", "send"),
        ({"device": "x", "body": "x" * 20_000}, "body"),
    ],
)
async def test_bad_send_payloads_are_refused_by_name(
    server: Server, clients: list[Client], payload: Any, field: str
) -> None:
    fleet = uid("fleet")
    device, _ = await add_device(server, fleet)
    v = await viewer_client(server, await add_viewer(server, [fleet]), clients)
    if isinstance(payload, dict) and payload.get("device") == "x":
        payload = {**payload, "device": device}
    ack = await v.call("send", payload)
    assert ack["ok"] is False and field in ack["error"], ack


async def test_http_send_and_list_check_their_input(server: Server) -> None:
    device, _, token = await device_and_viewer(server)
    for payload, needle in [({"text": "no body key"}, "body"), ({"body": "x" * 20_000}, "16384 bytes")]:
        r = await _post(server, token, device, payload)
        assert r.status_code == 400 and needle in r.json()["error"], r.text
    async with web_client(base_url=server.url) as http:
        h = {"Authorization": f"Bearer {token}"}
        r = await http.post(f"/api/devices/{device}/messages", content=b"{not json", headers=h)
        assert r.status_code == 400 and "JSON" in r.json()["error"]
        r = await http.get(f"/api/devices/{device}/messages", params={"state": "lost"}, headers=h)
        assert r.status_code == 400 and "state" in r.json()["error"]
        r = await http.post("/api/devices/nobody-here/messages", json={"body": 1}, headers=h)
        assert r.status_code == 404


async def test_messages_page_newest_first(server: Server) -> None:
    device, _, token = await device_and_viewer(server)
    ids = [(await _post(server, token, device, {"body": i})).json()["id"] for i in range(5)]
    seen: list[str] = []
    cursor = None
    async with web_client(base_url=server.url) as http:
        while True:
            query = {"limit": "2", **({"cursor": cursor} if cursor else {})}
            r = await http.get(
                f"/api/devices/{device}/messages", params=query, headers={"Authorization": f"Bearer {token}"}
            )
            page = r.json()
            seen += [m["id"] for m in page["messages"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
    assert seen == list(reversed(ids))


async def test_owntracks_gets_pending_messages_in_its_http_answer(server: Server) -> None:
    import base64

    fleet = uid("fleet")
    device, token = await add_device(server, fleet)
    name = uid("dispatcher")
    viewer_token = await add_viewer(server, [fleet], name)
    first = (await _post(server, viewer_token, device, {"body": "Back to the depot, please"})).json()
    command = {"_type": "cmd", "action": "reportLocation"}
    second = (await _post(server, viewer_token, device, {"body": command})).json()
    auth = {"Authorization": "Basic " + base64.b64encode(f"phone:{token}".encode()).decode()}
    location = {"_type": "location", "lat": 52.52, "lon": 13.405, "tst": first["ts"] // 1000, "tid": "ph"}
    async with web_client(base_url=server.url) as http:
        r = await http.post("/api/ingest/owntracks", json=location, headers=auth)
        assert r.status_code == 200, r.text
        # Text goes as a friend's transition at the device's position, which both OwnTracks apps notify
        # ("<tid> enters <desc>"); neither shows a `msg`. An OwnTracks object goes as it is.
        assert r.json() == [
            {
                "_type": "transition",
                "event": "enter",
                "desc": "Back to the depot, please",
                "tid": name,
                "tst": first["ts"] // 1000,
                "wtst": first["ts"] // 1000,
                "lat": 52.52,
                "lon": 13.405,
                "acc": 0,
            },
            command,
        ]
        # The answer was the delivery: both are acked, and the next answer is empty.
        r = await http.post("/api/ingest/owntracks", json={"_type": "lwt", "tst": 1}, headers=auth)
        assert r.json() == []
    rows = await _messages(server, viewer_token, device)
    assert [(m["id"], m["state"]) for m in rows] == [(second["id"], "acked"), (first["id"], "acked")]


async def test_viewers_of_the_fleet_see_each_step_of_a_message(server: Server, clients: list[Client]) -> None:
    fleet, other = uid("fleet"), uid("fleet")
    device, token, viewer_token = await device_and_viewer(server, fleet)
    watcher = await viewer_client(server, viewer_token, clients)
    assert (await watcher.call("subscribe", {"fleet": fleet}))["ok"]
    assert (await watcher.call("subscribe", {"device": device}))["ok"]  # both rooms: still one copy
    outsider = await viewer_client(server, await add_viewer(server, [other]), clients)
    assert (await outsider.call("subscribe", {"fleet": other}))["ok"]

    queued = (await _post(server, viewer_token, device, {"body": "offline for now"})).json()
    status = await watcher.next("message_status")
    assert status == {
        "id": queued["id"],
        "device": device,
        "fleet": fleet,
        "state": "queued",
        "ts": queued["ts"],
    }
    await device_client(server, token, clients)
    steps = [await watcher.next("message_status") for _ in range(2)]
    assert [(s["id"], s["state"]) for s in steps] == [(queued["id"], "sent"), (queued["id"], "acked")]
    assert steps[0]["ts"] <= steps[1]["ts"]
    rows = await _until_acked(server, viewer_token, device, 1)
    assert rows[0]["acked_ts"] == steps[1]["ts"] and rows[0]["sent_ts"] == steps[0]["ts"]
    assert watcher.pending("message_status") == []
    # The other fleet's viewer got none of it: its first status is of a message to its own fleet.
    theirs, _ = await add_device(server, other)
    r = await _post(server, ADMIN_TOKEN, theirs, {"body": 1})
    assert (await outsider.next("message_status"))["id"] == r.json()["id"]
