"""PostgreSQL refusing writes: read-only (a failover to a replica), a full disk, a connection lost in the
middle of a batch. Never a false ack, a `retry` that says why, /readyz 503 with the reason, and recovery by
itself once the database takes writes again."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from harness import (
    Client,
    Server,
    connected_device,
    create_database,
    drop_database,
    now_ms,
    own_server,
    until,
    web_client,
)

DISK_FULL = """
CREATE FUNCTION disk_full() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'could not extend file: No space left on device' USING ERRCODE = 'disk_full'; END $$;
CREATE TRIGGER disk_full BEFORE INSERT ON fixes FOR EACH ROW EXECUTE FUNCTION disk_full();
"""


@pytest.fixture
async def own_database(pg_base: str) -> AsyncIterator[str]:
    """A database of this test's own: it is made read-only, which would disturb the session's server."""
    url = await create_database(pg_base, "faults")
    yield url
    await drop_database(pg_base, url)


async def stored(url: str, device: str) -> list[int]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT (extract(epoch FROM ts) * 1000)::bigint FROM fixes WHERE device_id = $1 ORDER BY ts",
            device,
        )
    finally:
        await conn.close()
    return [r[0] for r in rows]


async def admin_sql(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def read_only(base: str, url: str, on: bool) -> None:
    """The database of `url` read-only (or not) for new sessions, and its sessions ended so that the
    server reconnects (done from the `base` database, which stays writable)."""
    name = url.rsplit("/", 1)[1]
    setting = "on" if on else "off"
    await admin_sql(base, f'ALTER DATABASE "{name}" SET default_transaction_read_only = {setting}')
    await admin_sql(base, f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")


async def readyz(server: Server) -> httpx.Response:
    async with web_client(base_url=server.url) as http:
        return await http.get("/readyz")


async def refused_then_recovered(
    server: Server,
    url: str,
    d: Client,
    device: str,
    why: str,
    fault: Callable[[], Awaitable[None]],
    repair: Callable[[], Awaitable[None]],
) -> None:
    """While `fault` holds, every fix is answered `retry` naming `why` and nothing is stored; after `repair`
    the same fixes are acked and stored exactly once, and /readyz says so."""
    before = await stored(url, device)
    await fault()
    t = now_ms()
    batch = [{"lat": 47.0, "lon": 8.0 + i / 1000, "ts": t + i} for i in range(5)]

    async def refused() -> dict[str, Any] | None:
        ack = await d.call("fix", batch)
        assert ack.get("accepted", 0) == 0, ack  # never an ack for what was not stored
        return ack if ack.get("retry") and why in ack.get("error", "") else None

    ack = await until(refused)
    assert ack["error"].startswith("storage unavailable") and ack["retry_after_ms"] >= 1000, ack
    ready = await readyz(server)
    assert ready.status_code == 503 and why in ready.json()["error"], ready.text
    assert await stored(url, device) == before
    await repair()

    async def acked() -> dict[str, Any] | None:
        answer = await d.call("fix", batch)
        return answer if answer.get("accepted", 0) + answer.get("duplicates", 0) == len(batch) else None

    await until(acked)
    assert await stored(url, device) == before + [f["ts"] for f in batch]
    assert (await readyz(server)).json() == {"ok": True, "degraded": []}


async def test_read_only_and_full_disk_are_refused_with_retry(
    pg_base: str, own_database: str, tmp_path: Path, clients: list[Client]
) -> None:
    with own_server(own_database, tmp_path) as server:
        device, d = await connected_device(server, clients)
        assert (await d.call("fix", {"lat": 47.0, "lon": 8.0, "ts": now_ms() - 60_000}))["accepted"] == 1

        async def make_read_only() -> None:
            await read_only(pg_base, own_database, True)

        async def make_writable() -> None:
            await read_only(pg_base, own_database, False)

        await refused_then_recovered(
            server, own_database, d, device, "the database is read-only", make_read_only, make_writable
        )

        async def fill_disk() -> None:
            await admin_sql(own_database, DISK_FULL)

        async def free_disk() -> None:
            await admin_sql(own_database, "DROP TRIGGER disk_full ON fixes; DROP FUNCTION disk_full()")

        await refused_then_recovered(
            server, own_database, d, device, "the database's disk is full", fill_disk, free_disk
        )
