"""A Redis outage between two `tracker serve` processes: each keeps serving its own viewers, neither
crashes, /readyz says what is degraded, and when Redis is back (a new one on the same port, empty, as after
a crash) the other process's live index and viewers catch up with the moves made meanwhile."""

from __future__ import annotations

import itertools
from functools import partial
from pathlib import Path
from typing import Any

from harness import (
    Client,
    Server,
    add_device,
    add_viewer,
    device_client,
    now_ms,
    own_server,
    uid,
    until,
    viewer_client,
    web_client,
)
from viewers import subscribed_viewer

from tracker.private_redis import PrivateRedis


async def readyz(server: Server) -> list[str]:
    """What the server's /readyz says is degraded; the answer must be 200 (fixes can be stored)."""
    async with web_client(base_url=server.url) as http:
        r = await http.get("/readyz")
    assert r.status_code == 200, r.text
    return list(r.json()["degraded"])


async def last_ts(server: Server, viewer_token: str, device: str) -> int | None:
    """The `last` position's ts of `device` in the server's /api/devices (its live index)."""
    async with web_client(base_url=server.url) as http:
        r = await http.get("/api/devices", headers={"Authorization": f"Bearer {viewer_token}"})
    assert r.status_code == 200, r.text
    last = {d["id"]: d["last"] for d in r.json()["devices"]}[device]
    return None if last is None else int(last["ts"])


async def reaches(viewer: Client, device: str, ts: int, timeout: float = 15) -> None:
    """Wait (bounded) until `viewer` receives `device` at `ts` or later."""

    async def seen() -> bool:
        events: list[list[dict[str, Any]]] = viewer.pending("positions")
        return any(p["device"] == device and p["ts"] >= ts for e in events for p in e)

    await until(seen, timeout)


async def move(device: Client, ts: int) -> None:
    ack = await device.call("fix", {"lat": 47.37 + (ts % 1000) / 1e5, "lon": 8.54, "ts": ts})
    assert ack["accepted"] == 1, ack


async def test_a_redis_outage_keeps_each_process_serving_and_catches_up_after(
    database_url: str, tmp_path: Path, clients: list[Client]
) -> None:
    redis = PrivateRedis(tmp_path / "redis", tcp=True)
    env = {"TRACKER_REDIS_URL": redis.start()}
    again = PrivateRedis(tmp_path / "redis-again", port=redis.port)
    try:
        with (
            own_server(database_url, tmp_path / "a", env) as a,
            own_server(database_url, tmp_path / "b", env) as b,
        ):
            fleet = uid("fleet")
            on_a, token_a = await add_device(a, fleet)
            on_b, token_b = await add_device(a, fleet)
            viewer_token = await add_viewer(a, [fleet])
            da = await device_client(a, token_a, clients)
            db = await device_client(b, token_b, clients)
            va = await viewer_client(a, viewer_token, clients)
            vb = await viewer_client(b, viewer_token, clients)
            for v in (va, vb):
                assert await v.call("subscribe", {"fleet": fleet}) == {"ok": True}
                assert await v.next("positions") == []
            stamps = itertools.count(now_ms() - 600_000, 1000)  # one fix a second, all in the past

            # Shared: a move on A reaches B's viewer too.
            before = next(stamps)
            await move(da, before)
            await reaches(va, on_a, before)
            await reaches(vb, on_a, before)
            await until(partial(_last_is, b, viewer_token, on_a, before))  # and B's index (its own path)

            assert redis.process is not None
            redis.process.kill()  # as in a crash: no goodbye to the clients
            redis.process.wait()
            for server in (a, b):
                await until(partial(_names_redis, server))

            # During: each process acks fixes and its own viewers see its own devices' moves.
            for _ in range(3):
                during_a, during_b = next(stamps), next(stamps)
                await move(da, during_a)
                await move(db, during_b)
                await reaches(va, on_a, during_a)
                await reaches(vb, on_b, during_b)
            assert await _names_redis(a) and await _names_redis(b)
            assert await last_ts(b, viewer_token, on_a) == before  # B missed A's moves
            assert await last_ts(a, viewer_token, on_b) is None  # and A missed B's

            # Back: an empty Redis where the old one was. Both processes reconnect by themselves.
            again.start()
            for server in (a, b):
                await until(partial(_clear, server))
            # Each process's index catches up with the other's moves made during the outage ...
            await until(partial(_last_is, b, viewer_token, on_a, during_a))
            await until(partial(_last_is, a, viewer_token, on_b, during_b))
            # ... a new subscriber's snapshot holds them ...
            _, snapshot = await subscribed_viewer(b, clients, [fleet], {"fleet": fleet})
            assert {p["device"]: p["ts"] for p in snapshot} == {on_a: during_a, on_b: during_b}
            # ... viewers connected all along are sent the moves they missed ...
            await reaches(vb, on_a, during_a)
            await reaches(va, on_b, during_b)
            # ... and the next moves reach the other process's viewers live again (each process's Socket.IO
            # manager subscribes again on its own, within a second or so: move until one arrives).
            await until(lambda: _moved_and_seen(da, vb, on_a, next(stamps)))
            await until(lambda: _moved_and_seen(db, va, on_b, next(stamps)))

            for server in (a, b):
                server.check_alive()
                log = server.log_text()
                # Said once per part (Socket.IO rooms, live positions, device presence when it noticed),
                # not per emit; never an error.
                assert 1 <= log.count("redis does not answer") <= 3, log[-3000:]
                assert log.count("redis answers again") == log.count("redis does not answer"), log[-3000:]
                assert server.log_error_lines() == 0, server.log_error_samples()
            for c in (va, vb, da, db):
                assert c.sio.connected and c.namespace in c.sio.namespaces
    finally:
        again.stop()
        redis.stop()


async def _names_redis(server: Server) -> bool:
    return any("redis" in d for d in await readyz(server))


async def _clear(server: Server) -> bool:
    return await readyz(server) == []


async def _last_is(server: Server, viewer_token: str, device: str, ts: int) -> bool:
    return await last_ts(server, viewer_token, device) == ts


async def _moved_and_seen(device: Client, viewer: Client, device_id: str, ts: int) -> bool:
    """Move `device` to `ts`; True if `viewer` receives it within a second."""
    await move(device, ts)
    try:
        await reaches(viewer, device_id, ts, timeout=1)
    except AssertionError:
        return False
    return True
