"""End to end: devices talk back. A device's `send` is stored before its ack, once per `client_id`, shown
live to the viewers of its fleet (on any process) and listed with the dispatchers' messages."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import (
    ADMIN_TOKEN,
    Client,
    Server,
    add_device,
    add_viewer,
    device_client,
    own_server,
    uid,
    viewer_client,
    web_client,
)

# Every test that uses `server` runs on one process and on a cluster (tests/harness.py): the device, the
# viewers and the HTTP calls then land on different processes.
pytestmark = pytest.mark.cluster


async def _list(server: Server, token: str, device: str, **query: Any) -> httpx.Response:
    async with web_client(base_url=server.url) as http:
        return await http.get(
            f"/api/devices/{device}/messages", params=query, headers={"Authorization": f"Bearer {token}"}
        )


async def _messages(server: Server, token: str, device: str, **query: Any) -> list[dict[str, Any]]:
    r = await _list(server, token, device, **query)
    assert r.status_code == 200, r.text
    return list(r.json()["messages"])


async def _watching(server: Server, clients: list[Client], fleets: list[str] | str, room: Any) -> Client:
    v = await viewer_client(server, await add_viewer(server, fleets), clients)
    assert (await v.call("subscribe", room))["ok"]
    await v.next("positions")
    return v


async def test_a_device_message_is_stored_then_acked_and_shown_to_viewers_of_its_fleet(
    server: Server, clients: list[Client]
) -> None:
    fleet, other = uid("fleet"), uid("fleet")
    device, token = await add_device(server, fleet)
    by_fleet = await _watching(server, clients, [fleet], {"fleet": fleet})
    by_device = await _watching(server, clients, [fleet], {"device": device})
    everything = await _watching(server, clients, "all", {"bbox": [-180, -90, 180, 90]})
    outsider = await _watching(server, clients, [other], {"fleet": other})
    d = await device_client(server, token, clients)

    body = {"text": "Customer not home, leaving at the neighbour's", "stop": 7, "photo": None}
    ack = await d.call("send", {"body": body, "client_id": "c-1"})
    assert ack == {"ok": True, "id": ack["id"]} and isinstance(ack["id"], str)
    # Acked means committed: the list has it at once, from any process.
    viewer_token = await add_viewer(server, [fleet])
    [row] = await _messages(server, viewer_token, device)
    assert row["id"] == ack["id"] and row["direction"] == "from_device" and row["body"] == body
    assert (row["from"], row["state"], row["client_id"]) == (device, "received", "c-1")

    expected = {
        "id": ack["id"],
        "device": device,
        "fleet": fleet,
        "direction": "from_device",
        "body": body,
        "ts": row["ts"],
    }
    for v in (by_fleet, by_device, everything):
        assert await v.next("message") == expected
    # The other fleet's viewer got none of it: its first message is its own fleet's.
    theirs, their_token = await add_device(server, other)
    t = await device_client(server, their_token, clients)
    own = await t.call("send", {"body": "mine"})
    assert (await outsider.next("message"))["id"] == own["id"]
    assert outsider.pending("message") == []


async def test_the_same_client_id_answers_the_same_id_and_stores_nothing_new(
    server: Server, clients: list[Client]
) -> None:
    fleet = uid("fleet")
    device, token = await add_device(server, fleet)
    viewer_token = await add_viewer(server, [fleet])
    watcher = await _watching(server, clients, [fleet], {"fleet": fleet})
    d = await device_client(server, token, clients)

    first = await d.call("send", {"body": "arrived", "client_id": "2b1f-0001"})
    again = await d.call("send", {"body": "arrived", "client_id": "2b1f-0001"})
    assert first["ok"] and again == first
    # Retries racing each other (two connections of one phone) still store one message.
    acks = await asyncio.gather(
        *(d.call("send", {"body": "left", "client_id": "2b1f-0002"}) for _ in range(5))
    )
    assert len({a["id"] for a in acks}) == 1 and all(a["ok"] for a in acks)
    # The same client_id on another device is another message; no client_id is always a new one.
    other, other_token = await add_device(server, fleet)
    o = await device_client(server, other_token, clients)
    theirs = await o.call("send", {"body": "arrived", "client_id": "2b1f-0001"})
    assert theirs["ok"] and theirs["id"] != first["id"]
    plain = [await d.call("send", {"body": "no id"}) for _ in range(2)]
    assert plain[0]["id"] != plain[1]["id"]

    rows = await _messages(server, viewer_token, device)
    assert [m["id"] for m in rows] == [plain[1]["id"], plain[0]["id"], acks[0]["id"], first["id"]]
    shown = [await watcher.next("message") for _ in range(5)]
    assert sorted(m["id"] for m in shown) == sorted(
        [first["id"], acks[0]["id"], theirs["id"], plain[0]["id"], plain[1]["id"]]
    )
    await asyncio.sleep(0.3)
    assert watcher.pending("message") == []  # announced once, when first stored


async def test_both_directions_in_one_list_and_in_the_viewers_feed(
    server: Server, clients: list[Client]
) -> None:
    fleet = uid("fleet")
    name = uid("dispatcher")
    device, token = await add_device(server, fleet)
    viewer_token = await add_viewer(server, [fleet], name)
    v = await viewer_client(server, viewer_token, clients)
    assert (await v.call("subscribe", {"device": device}))["ok"]
    d = await device_client(server, token, clients)

    out = await v.call("send", {"device": device, "body": "Where are you?"})
    assert out["ok"]
    assert (await d.next("message"))["id"] == out["id"]
    shown = await v.next("message")
    assert shown == {
        "id": out["id"],
        "device": device,
        "fleet": fleet,
        "direction": "to_device",
        "from": name,
        "body": "Where are you?",
        "ts": shown["ts"],
    }
    back = await d.call("send", {"body": "Stuck in traffic, 10 min"})
    assert (await v.next("message"))["direction"] == "from_device"

    rows = await _messages(server, viewer_token, device)
    assert [(m["id"], m["direction"], m["from"]) for m in rows] == [
        (back["id"], "from_device", device),
        (out["id"], "to_device", name),
    ]
    assert [m["id"] for m in await _messages(server, viewer_token, device, direction="from_device")] == [
        back["id"]
    ]
    assert [m["id"] for m in await _messages(server, viewer_token, device, direction="to_device")] == [
        out["id"]
    ]
    assert [m["id"] for m in await _messages(server, viewer_token, device, state="received")] == [back["id"]]
    # The device's own message is never pending, so it is never delivered back to it.
    assert await _messages(server, viewer_token, device, state="pending", direction="from_device") == []
    r = await _list(server, viewer_token, device, direction="sideways")
    assert r.status_code == 400 and "direction" in r.json()["error"]
    # A page at a time across both directions.
    first = (await _list(server, viewer_token, device, limit=1)).json()
    assert [m["id"] for m in first["messages"]] == [back["id"]] and first["next_cursor"]
    rest = await _messages(server, viewer_token, device, limit=1, cursor=first["next_cursor"])
    assert [m["id"] for m in rest] == [out["id"]]
    await asyncio.sleep(0.3)
    assert d.pending("message") == []


async def test_bad_device_sends_are_refused_by_name_and_store_nothing(
    server: Server, clients: list[Client]
) -> None:
    fleet = uid("fleet")
    device, token = await add_device(server, fleet)
    d = await device_client(server, token, clients)
    cases: list[tuple[Any, str]] = [
        ("just text", "send takes an object"),
        ({"text": "no body"}, "body is required"),
        ({"body": "x" * 16_384}, "body must be at most 16384 bytes"),
        ({"body": 1, "client_id": 5}, "client_id"),
        ({"body": 1, "client_id": ""}, "client_id"),
        ({"body": 1, "client_id": "x" * 129}, "client_id"),
        ({"body": 1, "client_id": "line\nbreak"}, "client_id"),
    ]
    for payload, error in cases:
        ack = await d.call("send", payload)
        assert ack["ok"] is False and ack["retry"] is False and error in ack["error"], (payload, ack)
    assert (await d.call("send", {"body": "x" * 16_382}))["ok"]  # 16 KiB as JSON, quotes included
    rows = await _messages(server, ADMIN_TOKEN, device)
    assert len(rows) == 1


async def test_device_messages_are_audited_without_their_body(server: Server, clients: list[Client]) -> None:
    device, token = await add_device(server, uid("fleet"))
    d = await device_client(server, token, clients)
    ack = await d.call("send", {"body": {"secret": "door code 1234"}})
    async with web_client(base_url=server.url) as http:
        r = await http.get(
            "/api/admin/audit",
            params={"action": "message.from_device", "target": device},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
    assert r.status_code == 200, r.text
    [entry] = r.json()["entries"]
    assert (entry["actor"], entry["action"], entry["target"]) == (
        f"device:{device}",
        "message.from_device",
        device,
    )
    assert entry["detail"] == {"message": ack["id"], "bytes": len('{"secret":"door code 1234"}')}


async def test_a_device_beyond_its_message_rate_is_told_to_retry_and_nothing_is_stored(
    database_url: str, tmp_path: Path, clients: list[Client]
) -> None:
    """A device's own messages are rate-limited per device (a phone in a loop would otherwise fill the
    table and every viewer's feed): beyond the burst, `retry` with the wait, and no row; other devices go
    on."""
    env = {"TRACKER_DEVICE_MESSAGE_RATE": "0.01", "TRACKER_DEVICE_MESSAGE_BURST": "3"}
    with own_server(database_url, tmp_path, env) as server:
        fleet = uid("fleet")
        (chatty, chatty_token), (quiet, quiet_token) = [await add_device(server, fleet) for _ in range(2)]
        d = await device_client(server, chatty_token, clients)
        assert [(await d.call("send", {"body": i}))["ok"] for i in range(3)] == [True] * 3
        ack = await d.call("send", {"body": 3})
        assert ack["ok"] is False and ack["retry"] is True and ack["retry_after_ms"] > 0, ack
        assert "0.01 messages/s" in ack["error"] and chatty in ack["error"]
        assert [m["body"] for m in await _messages(server, ADMIN_TOKEN, chatty)] == [2, 1, 0]
        q = await device_client(server, quiet_token, clients)
        assert (await q.call("send", {"body": "still heard"}))["ok"]
