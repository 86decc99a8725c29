"""The console script: registering devices and viewers, and `serve` on its own embedded PostGIS."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import pytest
from harness import Client, Server, now_ms, refusal, start_server, uid


def tracker(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tracker", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


async def test_device_and_viewer_add_print_working_tokens(server: Server, database_url: str) -> None:
    fleet, device = uid("fleet"), uid("dev")
    added = tracker(
        "device", "add", device, "--fleet", fleet, "--name", "Van 7", "--database-url", database_url
    )
    assert added.returncode == 0, added.stderr
    device_token = added.stdout.strip()
    viewer = tracker("viewer", "add", uid("desk"), "--fleet", fleet, "--database-url", database_url)
    assert viewer.returncode == 0, viewer.stderr
    d = await Client("/device").connect(server, device_token)
    v = await Client("/viewer").connect(server, viewer.stdout.strip())
    try:
        assert (await d.call("fix", {"lat": 1.0, "lon": 1.0, "ts": now_ms()}))["accepted"] == 1
        assert (await v.call("subscribe", {"device": device}))["ok"]
        assert [p["device"] for p in await v.next("positions")] == [device]
    finally:
        await d.close()
        await v.close()
    again = tracker("device", "add", device, "--fleet", fleet, "--database-url", database_url)
    assert again.returncode == 1 and f"device '{device}' already exists" in again.stderr
    # A lost phone: --replace issues a new token, and the old one stops working.
    rekeyed = tracker("device", "add", device, "--fleet", fleet, "--replace", "--database-url", database_url)
    assert rekeyed.returncode == 0, rekeyed.stderr
    new_token = rekeyed.stdout.strip()
    assert new_token != device_token
    d = await Client("/device").connect(server, new_token)
    try:
        assert (await d.call("fix", {"lat": 1.0, "lon": 1.0, "ts": now_ms() + 1}))["accepted"] == 1
    finally:
        await d.close()
    assert (await refusal(server, "/device", {"token": device_token}))["message"] == "unauthorized"
    bad = tracker("device", "add", "no spaces", "--fleet", fleet, "--database-url", database_url)
    assert bad.returncode == 1 and "id must be" in bad.stderr and "Traceback" not in bad.stderr


def test_invalid_settings_exit_with_the_variable_named() -> None:
    out = tracker(
        "serve", env={"TRACKER_H3_RESOLUTION": "99", "TRACKER_DATABASE_URL": "postgresql://x@127.0.0.1/x"}
    )
    assert out.returncode == 1
    assert "TRACKER_H3_RESOLUTION" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.timeout(240)
async def test_serve_runs_its_own_postgis_and_reuses_it(tmp_path: Path) -> None:
    folder = Path(tempfile.mkdtemp(prefix="tracker-embedded-"))
    folder.chmod(0o755)  # the postgres OS user must reach the data folder
    env = {"TRACKER_DATA_DIR": str(folder / "pg"), "TRACKER_DATABASE_URL": ""}
    first = start_server(None, tmp_path / "first", env)
    try:
        assert "creating a new PostgreSQL cluster" in first.log_text()
        # The CLI reuses the running cluster and leaves it running.
        added = tracker("device", "add", uid("dev"), "--fleet", "f", env=env)
        assert added.returncode == 0, added.stderr
        d = await Client("/device").connect(first, added.stdout.strip())
        t = now_ms()
        assert (await d.call("fix", {"lat": 46.0, "lon": 7.0, "ts": t}))["accepted"] == 1
        await d.close()
    finally:
        first.stop()
    assert not (folder / "pg" / "postmaster.pid").exists(), "serve must stop the cluster it started"
    second = start_server(None, tmp_path / "second", env)
    try:
        assert "creating a new PostgreSQL cluster" not in second.log_text()
        r = httpx.get(
            second.url + "/api/devices",
            headers={"Authorization": f"Bearer {second.env['TRACKER_ADMIN_TOKEN']}"},
        )
        assert [x["last"]["ts"] for x in r.json()["devices"]] == [t]
    finally:
        second.stop()
    assert not (folder / "pg" / "postmaster.pid").exists()
