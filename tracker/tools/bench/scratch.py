"""A scratch database for one bench run, made on a PostgreSQL server and dropped after it.

Policy: a random name (`tracker_bench_<hex>`) so that runs never meet; dropped WITH (FORCE) on the way
out, whatever happened, unless the caller asks to keep it for inspection. The server's facts that bear
on the figures (version, synchronous_commit, fsync) go into the report.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from tracker.tools.bench.report import BenchError, progress


@contextlib.contextmanager
def scratch_database(base_url: str, keep: bool = False) -> Iterator[tuple[str, dict[str, Any]]]:
    """A new database on the server at `base_url`: its URL and the server's facts. Dropped (with force)
    on exit unless `keep`."""
    name = f"tracker_bench_{secrets.token_hex(4)}"
    progress(f"creating database {name}" + (" (kept afterwards)" if keep else ""))
    info = asyncio.run(_create_database(base_url, name))
    if keep:
        yield database_url(base_url, name), info
        return
    try:
        yield database_url(base_url, name), info
    finally:
        progress(f"dropping database {name}")
        asyncio.run(_admin(base_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def database_url(base_url: str, name: str) -> str:
    """`base_url` with its database replaced by `name`."""
    return urlsplit(base_url)._replace(path="/" + name).geturl()


async def _admin(base_url: str, sql: str) -> None:
    conn = await asyncpg.connect(base_url, timeout=10)
    try:
        await conn.execute(sql, timeout=60)
    finally:
        await conn.close()


async def _create_database(base_url: str, name: str) -> dict[str, Any]:
    try:
        conn = await asyncpg.connect(base_url, timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        raise BenchError(f"cannot connect to PostgreSQL at {base_url}: {exc}") from exc
    try:
        info = {
            "postgres": await conn.fetchval("SHOW server_version"),
            "synchronous_commit": await conn.fetchval("SHOW synchronous_commit"),
            "fsync": await conn.fetchval("SHOW fsync"),
        }
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return info
