"""`tracker serve --workers N`: N real processes on one port, sharing rooms through a private Redis."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import httpx
import pytest
import socketio
from harness import ADMIN_TOKEN, Client, Server, now_ms, start_server, uid, until, web_client

DEVICES = 40
VIEWERS = 3


def descendants(pid: int) -> set[int]:
    """Every live process below `pid`, from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def per_process(server: Server, want_devices: int) -> dict[int, int]:
    """Connected devices by worker pid, from /metrics scraped on new connections until every worker has
    answered and the counts add up (each connection reaches whichever worker accepts it)."""
    seen: dict[int, int] = {}
    for _ in range(400):
        async with web_client(base_url=server.url) as http:  # a new connection each time
            text = (await http.get("/metrics")).text
        pid = int(float(re.search(r"^tracker_process_id (\S+)", text, re.M).group(1)))  # type: ignore[union-attr]
        seen[pid] = int(float(re.search(r"^tracker_connected_devices (\S+)", text, re.M).group(1)))  # type: ignore[union-attr]
        if len(seen) == 2 and sum(seen.values()) == want_devices:
            return seen
        await asyncio.sleep(0.02)
    raise AssertionError(f"workers seen {seen}, want 2 holding {want_devices} devices in all")


async def online_devices(server: Server, viewer_token: str) -> set[str]:
    """The devices /api/devices says are online, asked on a new connection (whichever worker takes it)."""
    async with web_client(base_url=server.url) as http:
        r = await http.get("/api/devices", headers={"Authorization": f"Bearer {viewer_token}"})
    assert r.status_code == 200, r.text
    return {d["id"] for d in r.json()["devices"] if d["online"]}


async def test_two_workers_share_one_port_rooms_and_stop_with_everything(
    database_url: str, tmp_path: Path
) -> None:
    # Without TRACKER_REDIS_URL (as in CI), the server starts a private redis-server for its workers.
    server = start_server(database_url, tmp_path, {}, "--workers", "2")
    try:
        tree = descendants(server.process.pid)
        fleet = uid("fleet")
        tokens = []
        async with web_client(
            base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        ) as http:
            for i in range(DEVICES):
                r = await http.post("/api/admin/devices", json={"id": f"{fleet}-{i}", "fleet": fleet})
                assert r.status_code == 201, r.text
                tokens.append(r.json()["token"])
            r = await http.post("/api/admin/viewers", json={"name": uid("desk"), "fleets": [fleet]})
            viewer_token = r.json()["token"]
        # /readyz answered by one worker says nothing of the other, which may still be starting (and,
        # not yet accepting, would leave every device to the first): wait until both answer.
        await per_process(server, 0)
        viewers = [await Client("/viewer").connect(server, viewer_token) for _ in range(VIEWERS)]
        # One after another: a burst of connections can all be taken by whichever worker wakes first.
        devices = [await Client("/device").connect(server, t) for t in tokens]
        try:
            for v in viewers:
                assert (await v.call("subscribe", {"fleet": fleet}))["ok"]
            spread = await per_process(server, DEVICES)
            assert min(spread.values()) > 0, spread  # both workers hold devices
            assert set(spread) <= tree, "the workers are the server's own children"

            ts = now_ms()
            acks = await asyncio.gather(
                *(
                    d.call("fix", {"lat": 52.5, "lon": 13.4 + i / 1000, "ts": ts})
                    for i, d in enumerate(devices)
                )
            )
            assert all(a["accepted"] == 1 for a in acks), acks
            conn = await asyncpg.connect(database_url)  # an ack means stored
            try:
                stored = await conn.fetchval(
                    "SELECT count(*) FROM fixes WHERE device_id LIKE $1", fleet + "-%"
                )
            finally:
                await conn.close()
            assert stored == DEVICES
            # Devices sit on both workers, so every viewer, wherever it is, gets positions from the other.
            want = {f"{fleet}-{i}" for i in range(DEVICES)}
            for v in viewers:
                got: set[str] = set()
                while got != want:
                    got |= {p["device"] for p in await v.next("positions") if p["ts"] == ts}

            # `online` in /api/devices is the cluster's: whichever worker answers, every device is online.
            async def all_online() -> bool:
                return await online_devices(server, viewer_token) == want

            await until(all_online)
            for _ in range(10):
                assert await online_devices(server, viewer_token) == want

            # Long-polling cannot work across workers: refused at the handshake, saying what to use.
            polling = socketio.AsyncClient(reconnection=False)
            # (python-socketio's client says "Unexpected status code 400", or, when aiohttp finds the
            # connection closed before it reads the error body, raises RuntimeError: refused either way.)
            with pytest.raises((socketio.exceptions.ConnectionError, RuntimeError)):
                await polling.connect(server.url, namespaces=["/viewer"], auth={"token": viewer_token})
            r = httpx.get(server.url + "/socket.io/?EIO=4&transport=polling")
            assert r.status_code == 400 and "websocket" in r.json()["error"]
        finally:
            for c in [*viewers, *devices]:
                await c.close()

        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=30) == 0, server.log_text()[-3000:]
        # multiprocessing's resource tracker ends when it sees its parent gone: a moment after it.
        deadline = time.monotonic() + 10
        while (left := [pid for pid in tree if alive(pid)]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not left, f"processes left running: {left}"
    finally:
        server.stop()


def test_workers_without_redis_server_or_url_say_what_to_install(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TRACKER_REDIS_URL"}
    env["PATH"] = str(tmp_path)  # no redis-server on it
    out = subprocess.run(
        [sys.executable, "-m", "tracker", "serve", "--workers", "2", "--database-url", "postgresql://x@/y"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert out.returncode == 1, out.stderr
    assert "apt-get install -y redis-server" in out.stderr and "TRACKER_REDIS_URL" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
