"""Data-protection requests: a device's data exported as JSON lines, and erased everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg
import orjson
from harness import (
    ADMIN_TOKEN,
    Client,
    add_device,
    add_viewer,
    connected_device,
    device_client,
    now_ms,
    own_server,
    refusal,
    uid,
    until,
    web_client,
    write_rules,
)

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
RULES = """
fences:
  - id: yard
    polygon: [[8.50, 47.30], [8.60, 47.30], [8.60, 47.40], [8.50, 47.40]]
rules:
  - {id: yard-in, on: enter, fences: [yard]}
"""
TABLES = {
    "fixes": "SELECT count(*) FROM fixes WHERE device_id = $1",
    "events": "SELECT count(*) FROM events WHERE device_id = $1",
    "fence_states": "SELECT count(*) FROM fence_state WHERE device_id = $1",
    "messages": "SELECT count(*) FROM messages WHERE device_id = $1",
    "devices": "SELECT count(*) FROM devices WHERE id = $1",
}


async def stored(db: asyncpg.Connection, device: str) -> dict[str, int]:
    return {table: await db.fetchval(query, device) for table, query in TABLES.items()}


async def test_export_then_erase_a_device(
    database_url: str, tmp_path: Path, db: asyncpg.Connection, clients: list[Client]
) -> None:
    write_rules(tmp_path, RULES)
    with own_server(database_url, tmp_path) as server:
        fleet = uid("fleet")
        device, token = await add_device(server, fleet)
        d = await device_client(server, token, clients)
        _, other = await connected_device(server, clients, fleet)
        viewer = await add_viewer(server, [fleet])
        t = now_ms() - 10_000
        fixes: list[dict[str, Any]] = [{"lat": 47.0 + i / 100, "lon": 8.0, "ts": t + i} for i in range(30)]
        fixes.append({"lat": 47.35, "lon": 8.55, "ts": t + 100, "attrs": {"driver": "Ana"}})  # into the yard
        assert (await d.call("fix", fixes))["accepted"] == 31
        assert (await other.call("fix", {"lat": 47.35, "lon": 8.55, "ts": t}))["accepted"] == 1
        async with web_client(base_url=server.url) as http:
            sent = await http.post(
                f"/api/devices/{device}/messages",
                json={"body": "come back"},
                headers={"Authorization": f"Bearer {viewer}"},
            )
            assert sent.status_code == 201, sent.text
            reply = await d.call("send", {"body": "on my way", "client_id": "c-1"})  # the device's own
            assert reply["ok"], reply
            before = await stored(db, device)
            assert before == {"fixes": 31, "events": 1, "fence_states": 2, "messages": 2, "devices": 1}

            # Export: the device, then every record, one JSON object a line.
            r = await http.get(f"/api/admin/devices/{device}/export", headers=ADMIN)
            assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
            lines: list[dict[str, Any]] = [orjson.loads(line) for line in r.text.splitlines()]
            assert lines[0] == {"type": "device", "id": device, "fleet": fleet, "name": None}
            kinds = [line["type"] for line in lines[1:]]
            assert kinds == ["fix"] * 31 + ["event"] + ["fence_state"] * 2 + ["message"] * 2
            assert [line["ts"] for line in lines[1:32]] == [f["ts"] for f in fixes]
            assert lines[31]["attrs"] == {"driver": "Ana"} and lines[32]["rule"] == "yard-in"
            assert (lines[-2]["body"], lines[-2]["direction"]) == ("come back", "to_device")
            assert (lines[-1]["body"], lines[-1]["direction"], lines[-1]["client_id"]) == (
                "on my way",
                "from_device",
                "c-1",
            )
            assert (await http.get(f"/api/admin/devices/{uid('x')}/export", headers=ADMIN)).status_code == 404

            # Erase: asked for explicitly, under way at once, the token dead, then everything gone.
            r = await http.delete(f"/api/admin/devices/{device}", headers=ADMIN)
            assert r.status_code == 400 and "erase=true" in r.json()["error"], r.text
            r = await http.delete(f"/api/admin/devices/{device}", params={"erase": "true"}, headers=ADMIN)
            assert r.status_code == 202 and r.json()["state"] in ("erasing", "done"), r.text

            async def done() -> dict[str, Any] | None:
                status = (await http.get(f"/api/admin/devices/{device}/erasure", headers=ADMIN)).json()
                return status if status["state"] == "done" else None

            status = await until(done, timeout=30)
            assert status["deleted"] == {"fixes": 31, "events": 1, "fence_states": 2, "messages": 2}
            assert await stored(db, device) == dict.fromkeys(TABLES, 0)
            assert (await refusal(server, "/device", {"token": token}))["message"] == "unauthorized"
            # Gone from the live view of every viewer too; the other device is untouched.
            listed = (await http.get("/api/devices", headers={"Authorization": f"Bearer {viewer}"})).json()
            assert [x["id"] for x in listed["devices"]] != [] and device not in [
                x["id"] for x in listed["devices"]
            ]
            near = await http.get(
                "/api/nearby",
                params={"lat": 47.35, "lon": 8.55, "radius_m": 100_000},
                headers={"Authorization": f"Bearer {viewer}"},
            )
            assert device not in [x["id"] for x in near.json()["devices"]]
            audit = (await http.get("/api/admin/audit", params={"target": device}, headers=ADMIN)).json()
            assert [e["action"] for e in audit["entries"]][-2:] == ["device.export", "device.erase"]
