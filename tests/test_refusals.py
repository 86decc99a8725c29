"""Refused tokens are visible (log and metrics, never the token) and an address that keeps failing is slowed,
while tokens that work are admitted as always, from the same address."""

from __future__ import annotations

import re
import time
from pathlib import Path

from harness import ADMIN_TOKEN, Client, add_device, add_viewer, own_server, refusal, uid, web_client

BURST = 3
REFILL_S = 2.0


def refusals(metrics: str, edge: str, reason: str) -> float:
    found = re.search(rf'tracker_auth_refusals_total{{edge="{edge}",reason="{reason}"}} (\S+)', metrics)
    return float(found[1]) if found else 0.0


async def test_refusals_are_logged_counted_and_slowed(database_url: str, tmp_path: Path) -> None:
    env = {"TRACKER_AUTH_FAILURE_BURST": str(BURST), "TRACKER_AUTH_FAILURE_REFILL_S": str(REFILL_S)}
    with own_server(database_url, tmp_path, env) as server:
        fleet = uid("fleet")
        _, device_token = await add_device(server, fleet)
        viewer_token = await add_viewer(server, [fleet])
        secret = "not-a-token-" + uid("x")
        async with web_client(base_url=server.url) as http:
            # The address's first failures are answered at once, each with its reason.
            r = await http.get("/api/devices")
            assert r.status_code == 401 and "Bearer" in r.json()["error"], r.text
            r = await http.get("/api/devices", headers={"Authorization": f"Bearer {secret}"})
            assert r.status_code == 401 and "unknown viewer token" in r.json()["error"], r.text
            assert (await refusal(server, "/device", {"token": secret}))["message"] == "unauthorized"
            # The bucket is spent: the next failure waits for the next refill and says so.
            started = time.monotonic()
            r = await http.get("/api/ingest/osmand", params={"id": secret, "lat": 1, "lon": 1})
            waited = time.monotonic() - started
            assert r.status_code == 429 and "too many failed attempts" in r.json()["error"], r.text
            assert int(r.headers["Retry-After"]) >= 1 and waited >= REFILL_S / 2
            refused = await refusal(server, "/viewer", {"token": secret}, wait_s=3 * REFILL_S)
            assert refused["message"] == "too many failed attempts"
            # Tokens that work are admitted from the same address, at once.
            started = time.monotonic()
            r = await http.get("/api/devices", headers={"Authorization": f"Bearer {viewer_token}"})
            assert r.status_code == 200, r.text
            d = await Client("/device").connect(server, device_token)
            await d.close()
            assert time.monotonic() - started < REFILL_S / 2
            # A wrong admin token counts too.
            r = await http.post(
                "/api/admin/devices",
                json={"id": uid("d"), "fleet": fleet},
                headers={"Authorization": "Bearer x"},
            )
            assert r.status_code == 429, r.text
            metrics = (await http.get("/metrics")).text
        assert refusals(metrics, "http", "missing") == 1
        assert refusals(metrics, "http", "unknown") == 1
        assert refusals(metrics, "/device", "unknown") == 1
        assert refusals(metrics, "http", "throttled") == 2
        assert refusals(metrics, "/viewer", "throttled") == 1
        log = server.log_text()
        assert "refused http GET /api/devices from 127.0.0.1: unknown" in log
        assert "refused /device from 127.0.0.1: unknown" in log
        assert "too many failed attempts" in log
        assert secret not in log and ADMIN_TOKEN not in log
