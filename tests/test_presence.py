"""`online` in /api/devices is the cluster's (tracker/presence.py): a device connected to any process counts
online on every process, until its last connection anywhere closes or its process dies (kill -9: within
TRACKER_PRESENCE_EXPIRY_S); while Redis is down each process answers for its own connections, and after
the outage each process's devices are shared again. Real processes, real Redis, real PostGIS."""

from __future__ import annotations

import signal
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import pytest
from harness import (
    Client,
    Server,
    add_device,
    add_viewer,
    device_client,
    own_server,
    uid,
    until,
    web_client,
)

from tracker.private_redis import PrivateRedis

REDIS_URL = "redis://127.0.0.1:6379/0"
EXPIRY_S = 3  # TRACKER_PRESENCE_EXPIRY_S of these tests' servers: a heartbeat a second


@pytest.fixture
async def redis_env() -> dict[str, str]:
    """Settings of processes sharing the Redis at 127.0.0.1:6379, with a short presence expiry."""
    import redis.asyncio as aioredis

    try:
        r = aioredis.from_url(REDIS_URL)  # type: ignore[no-untyped-call]
        await r.ping()
        await r.aclose()
    except OSError as exc:
        pytest.fail(f"this test needs Redis on 127.0.0.1:6379 (.ci/run starts it): {exc}")
    return {"TRACKER_REDIS_URL": REDIS_URL, "TRACKER_PRESENCE_EXPIRY_S": str(EXPIRY_S)}


async def online(server: Server, viewer_token: str) -> dict[str, bool]:
    """`online` of each device the viewer sees, as `server` answers /api/devices."""
    async with web_client(base_url=server.url) as http:
        r = await http.get("/api/devices", headers={"Authorization": f"Bearer {viewer_token}"})
    assert r.status_code == 200, r.text
    return {d["id"]: d["online"] for d in r.json()["devices"]}


async def is_online(servers: Sequence[Server], viewer_token: str, device: str, expected: bool) -> bool:
    """True when every one of `servers` answers `online` == `expected` for `device`."""
    for server in servers:
        if (await online(server, viewer_token))[device] is not expected:
            return False
    return True


async def close(client: Client, clients: list[Client]) -> None:
    await client.close()
    clients.remove(client)


async def test_a_device_counts_online_on_every_process_until_its_last_connection_closes(
    database_url: str, tmp_path: Path, clients: list[Client], redis_env: dict[str, str]
) -> None:
    with (
        own_server(database_url, tmp_path / "a", redis_env) as a,
        own_server(database_url, tmp_path / "b", redis_env) as b,
    ):
        fleet = uid("fleet")
        single, single_token = await add_device(a, fleet)
        double, double_token = await add_device(a, fleet)
        marker, marker_token = await add_device(a, fleet)
        viewer = await add_viewer(a, [fleet])
        both = [a, b]
        assert await online(a, viewer) == {single: False, double: False, marker: False}
        assert await online(b, viewer) == {single: False, double: False, marker: False}

        # Connected to A: online as A and as B answer.
        on_a = await device_client(a, single_token, clients)
        await until(partial(is_online, both, viewer, single, True))

        # The same device on both processes at once (a phone between networks).
        double_a = await device_client(a, double_token, clients)
        double_b = await device_client(b, double_token, clients)
        mark = await device_client(a, marker_token, clients)
        await until(partial(is_online, both, viewer, double, True))
        await until(partial(is_online, both, viewer, marker, True))
        await close(double_a, clients)
        # A flushes its changes in order: once the marker, closed after, is offline on B, A's close of
        # `double` has reached Redis too, and B's connection still holds it online everywhere.
        await close(mark, clients)
        await until(partial(is_online, both, viewer, marker, False))
        assert await is_online(both, viewer, double, True)
        await close(double_b, clients)
        await until(partial(is_online, both, viewer, double, False))

        # Disconnected: offline on both.
        assert await is_online(both, viewer, single, True)
        await close(on_a, clients)
        await until(partial(is_online, both, viewer, single, False))
        for server in both:
            assert server.log_error_lines() == 0, server.log_error_samples()


async def test_the_devices_of_a_killed_process_go_offline_within_the_expiry(
    database_url: str, tmp_path: Path, clients: list[Client], redis_env: dict[str, str]
) -> None:
    with (
        own_server(database_url, tmp_path / "a", redis_env) as a,
        own_server(database_url, tmp_path / "b", redis_env) as b,
    ):
        fleet = uid("fleet")
        stays, stays_token = await add_device(a, fleet)
        moves, moves_token = await add_device(a, fleet)
        viewer = await add_viewer(a, [fleet])
        await device_client(a, stays_token, clients)
        await device_client(a, moves_token, clients)
        for device in (stays, moves):
            await until(partial(is_online, [b], viewer, device, True))

        a.stop(signal.SIGKILL)  # no goodbye: A's set in Redis stays until its expiry
        killed = time.monotonic()
        await device_client(b, moves_token, clients)  # one device reconnects elsewhere at once
        await until(partial(is_online, [b], viewer, stays, False), timeout=EXPIRY_S + 3)
        assert time.monotonic() - killed < EXPIRY_S + 2
        assert (await online(b, viewer))[moves] is True
        assert b.log_error_lines() == 0, b.log_error_samples()


async def test_one_process_without_redis_counts_its_own_connections(
    database_url: str, tmp_path: Path, clients: list[Client]
) -> None:
    with own_server(database_url, tmp_path) as server:
        fleet = uid("fleet")
        device, token = await add_device(server, fleet)
        viewer = await add_viewer(server, [fleet])
        assert (await online(server, viewer))[device] is False
        first = await device_client(server, token, clients)
        second = await device_client(server, token, clients)
        assert (await online(server, viewer))[device] is True  # at once: no Redis, nothing to flush
        await close(first, clients)
        assert (await online(server, viewer))[device] is True
        await close(second, clients)
        await until(partial(is_online, [server], viewer, device, False))


async def test_after_a_redis_outage_each_process_shares_its_devices_again(
    database_url: str, tmp_path: Path, clients: list[Client]
) -> None:
    redis = PrivateRedis(tmp_path / "redis", tcp=True)
    env = {"TRACKER_REDIS_URL": redis.start(), "TRACKER_PRESENCE_EXPIRY_S": str(EXPIRY_S)}
    again = PrivateRedis(tmp_path / "redis-again", port=redis.port)
    try:
        with (
            own_server(database_url, tmp_path / "a", env) as a,
            own_server(database_url, tmp_path / "b", env) as b,
        ):
            fleet = uid("fleet")
            on_a, token_a = await add_device(a, fleet)
            on_b, token_b = await add_device(a, fleet)
            viewer = await add_viewer(a, [fleet])
            await device_client(a, token_a, clients)
            await device_client(b, token_b, clients)
            for device in (on_a, on_b):
                await until(partial(is_online, [a, b], viewer, device, True))

            assert redis.process is not None
            redis.process.kill()
            redis.process.wait()
            # Each process answers for its own connections, and says so, within a heartbeat or two.
            for server in (a, b):
                await until(partial(_presence_degraded, server))
            assert await online(a, viewer) == {on_a: True, on_b: False}
            assert await online(b, viewer) == {on_a: False, on_b: True}

            # An empty Redis where the old one was: each process writes its whole set again.
            again.start()
            for server in (a, b):
                await until(partial(_presence_degraded, server, False))
            for device in (on_a, on_b):
                await until(partial(is_online, [a, b], viewer, device, True))
            for server in (a, b):
                assert server.log_error_lines() == 0, server.log_error_samples()
    finally:
        again.stop()
        redis.stop()


async def _presence_degraded(server: Server, expected: bool = True) -> bool:
    """True when /readyz (200) says, or with `expected` False no longer says, that `online` is local."""
    async with web_client(base_url=server.url) as http:
        r = await http.get("/readyz")
    assert r.status_code == 200, r.text
    return any("online in /api/devices" in d for d in r.json()["degraded"]) is expected
