"""One device, two processes: whichever process evaluates a device's fences holds it by epoch
(`tracker.store.fence_owner`), so a device sending through two processes at once (a phone switching
networks) or an HTTP app reaching a different process with every request gets exactly the events one
process would fire, and a fix older than the newest one stored fires nothing, whichever process has it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import (
    ADMIN_TOKEN,
    Client,
    Server,
    add_device,
    device_client,
    now_ms,
    start_server,
    uid,
    web_client,
)

RULES = """
fences:
  - id: yard
    polygon: [[13.40, 52.52], [13.41, 52.52], [13.41, 52.53], [13.40, 52.53]]
rules:
  - id: yard-in
    on: enter
    fences: [yard]
  - id: yard-out
    on: exit
    fences: [yard]
"""
IN = {"lat": 52.525, "lon": 13.405}
OUT = {"lat": 52.50, "lon": 13.30}
# Where the device is at each step: the events one process fires for these are enter at 1, exit at 3,
# enter at 6, exit at 8. Steps alternate between the processes, so each one's view of the device goes
# stale between two of its own steps.
PATH = [OUT, IN, IN, OUT, OUT, OUT, IN, IN, OUT, OUT]
EXPECTED = [("enter", 1), ("exit", 3), ("enter", 6), ("exit", 8)]


@pytest.fixture
def pair(database_url: str, tmp_path: Path) -> Iterator[tuple[Server, Server]]:
    """Two processes on one database and one Redis, with RULES in one shared fence folder."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "rules.yaml").write_text(RULES)
    env = {"TRACKER_REDIS_URL": "redis://127.0.0.1:6379/0", "TRACKER_GEOFENCES": str(rules)}
    a = start_server(database_url, tmp_path / "a", env)
    try:
        b = start_server(database_url, tmp_path / "b", env)
        try:
            yield a, b
        finally:
            b.stop()
    finally:
        a.stop()


async def events(server: Server, device: str, since: int) -> list[tuple[str, int]]:
    async with web_client(base_url=server.url) as http:
        r = await http.get(
            "/api/events",
            params={"device": device, "from": since},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
    assert r.status_code == 200, r.text
    return [(e["type"], e["ts"]) for e in r.json()["events"]]


@pytest.mark.timeout(120)
async def test_a_device_on_two_processes_at_once_fires_what_one_process_would(
    pair: tuple[Server, Server], clients: list[Client]
) -> None:
    a, b = pair
    device, token = await add_device(a, uid("fleet"))
    on_a = await device_client(a, token, clients)
    on_b = await device_client(b, token, clients)
    t0 = now_ms() - 60_000
    for step, where in enumerate(PATH):
        sender = on_a if step % 2 == 0 else on_b
        ack = await sender.call("fix", {**where, "ts": t0 + step * 1000})
        assert ack["accepted"] == 1, ack
    want = [(kind, t0 + step * 1000) for kind, step in EXPECTED]
    assert await events(a, device, t0) == want
    # The newest fix wins wherever it arrives: a late fix inside the yard, older than the newest stored
    # (outside), is stored through either process but fires nothing; the next fix outside fires nothing.
    late = await on_a.call("fix", {**IN, "ts": t0 + 8_500})
    assert late["accepted"] == 1, late
    assert (await on_b.call("fix", {**OUT, "ts": t0 + 10_000}))["accepted"] == 1
    assert await events(b, device, t0) == want


@pytest.mark.timeout(120)
async def test_an_http_app_reaching_a_different_process_each_time_fires_what_one_process_would(
    pair: tuple[Server, Server],
) -> None:
    a, b = pair
    device, token = await add_device(a, uid("fleet"))
    t0_s = now_ms() // 1000 - 60
    for step, where in enumerate(PATH):
        server = a if step % 2 == 0 else b
        async with web_client(base_url=server.url) as http:
            params: dict[str, str | float] = {
                "id": token,
                "lat": where["lat"],
                "lon": where["lon"],
                "timestamp": t0_s + step,
            }
            r = await http.get("/api/ingest/osmand", params=params)
        assert r.status_code == 200, r.text
    assert await events(b, device, t0_s * 1000) == [(kind, (t0_s + step) * 1000) for kind, step in EXPECTED]


@pytest.mark.timeout(120)
async def test_two_processes_racing_for_one_device_never_fire_an_event_twice(
    pair: tuple[Server, Server], clients: list[Client]
) -> None:
    """Both sockets send at once (no waiting for the other's ack): however the two processes interleave,
    the stored events alternate enter/exit, each fired once, and end with the newest fix's side."""
    a, b = pair
    device, token = await add_device(a, uid("fleet"))
    on_a = await device_client(a, token, clients)
    on_b = await device_client(b, token, clients)
    t0 = now_ms() - 120_000

    async def send(client: Client, parity: int) -> None:
        for step in range(parity, 40, 2):
            where = IN if (step // 3) % 2 else OUT
            for _ in range(20):  # a `retry` answer (the other process holds the device) is sent again
                ack = await client.call("fix", {**where, "ts": t0 + step * 1000})
                if "retry_after_ms" not in ack:
                    break
                await asyncio.sleep(ack["retry_after_ms"] / 1000)
            assert ack.get("accepted") == 1, ack

    await asyncio.gather(send(on_a, 0), send(on_b, 1))
    stored = await events(a, device, t0)
    kinds = [kind for kind, _ in stored]
    assert kinds and all(x != y for x, y in zip(kinds, kinds[1:], strict=False)), stored
    assert kinds[0] == "enter" and len(set(stored)) == len(stored), stored
    last_step_side = "enter" if (39 // 3) % 2 else "exit"
    newest_fix_inside = kinds[-1] == "enter"
    assert newest_fix_inside == (last_step_side == "enter"), stored
