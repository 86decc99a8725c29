"""The audit trail: admin actions, token changes and viewers' messages, with who, what and when."""

from __future__ import annotations

import asyncio
import getpass

from harness import ADMIN_TOKEN, Server, add_viewer, now_ms, uid, web_client
from test_cli import tracker

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def test_the_audit_trail_names_who_did_what(server: Server, database_url: str) -> None:
    fleet, device, desk = uid("fleet"), uid("dev"), uid("desk")
    started = now_ms()
    async with web_client(base_url=server.url) as http:
        r = await http.post(
            "/api/admin/devices", json={"id": device, "fleet": fleet, "name": "Van"}, headers=ADMIN
        )
        assert r.status_code == 201, r.text
        device_token = r.json()["token"]
        viewer_token = await add_viewer(server, [fleet], desk)
        sent = await http.post(
            f"/api/devices/{device}/messages",
            json={"body": {"text": "private words"}},
            headers={"Authorization": f"Bearer {viewer_token}"},
        )
        assert sent.status_code == 201, sent.text
        rekeyed = await asyncio.to_thread(
            tracker, "device", "add", device, "--fleet", fleet, "--replace", "--database-url", database_url
        )
        assert rekeyed.returncode == 0, rekeyed.stderr
        r = await http.delete(f"/api/admin/viewers/{desk}", headers=ADMIN)
        assert r.status_code == 200, r.text

        r = await http.get("/api/admin/audit", params={"from": started}, headers=ADMIN)
        assert r.status_code == 200, r.text
        mine = [e for e in r.json()["entries"] if e["target"] in (device, desk)]
        assert [(e["actor"], e["action"], e["target"]) for e in mine] == [
            ("admin", "device.add", device),
            ("admin", "viewer.add", desk),
            (desk, "message.send", device),
            (f"cli:{getpass.getuser()}", "device.rekey", device),
            ("admin", "viewer.revoke", desk),
        ]
        assert mine[0]["detail"] == {"fleet": fleet, "name": "Van"}
        assert mine[2]["detail"] == {"message": sent.json()["id"], "bytes": len('{"text":"private words"}')}
        assert all(started - 1000 <= e["ts"] <= now_ms() for e in mine)
        text = r.text
        assert device_token not in text and viewer_token not in text and "private words" not in text

        # Filters: several actions, one target; pages with a cursor.
        r = await http.get(
            "/api/admin/audit",
            params={"from": started, "target": device, "action": "device.add,device.rekey", "limit": 1},
            headers=ADMIN,
        )
        page = r.json()
        assert [e["action"] for e in page["entries"]] == ["device.add"] and page["next_cursor"]
        r = await http.get(
            "/api/admin/audit",
            params={
                "from": started,
                "target": device,
                "action": "device.add,device.rekey",
                "cursor": page["next_cursor"],
            },
            headers=ADMIN,
        )
        assert [e["action"] for e in r.json()["entries"]] == ["device.rekey"]
        assert r.json()["next_cursor"] is None

        # Only the admin reads it; a bad action is named.
        r = await http.get("/api/admin/audit", headers={"Authorization": f"Bearer {device_token}"})
        assert r.status_code == 403, r.text
        r = await http.get("/api/admin/audit", params={"action": "device.add,teleport"}, headers=ADMIN)
        assert r.status_code == 400 and "teleport" in r.json()["error"], r.text
