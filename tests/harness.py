"""Test harness: a fresh PostGIS database per test session, real `tracker serve` processes on free ports,
real Socket.IO and HTTP clients. Nothing here mocks the database or the server.

Servers are started, waited for and stopped by `tracker.tools.server_process`, the harness the benchmarks
use too; `Server` is its `ServerProcess`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import socketio

from tracker.tools.server_process import ServerProcess, spawn_tracker
from tracker.tools.server_process import free_port as free_port  # tests import it from here

Server = ServerProcess  # the tests' name for it
UNLIMITED_FAILURES = 10**9
ROOT = Path(__file__).resolve().parent.parent
# The shared folder beside the project (contract, real data): next to the checkout, else /work/shared.
SHARED = Path(
    os.environ.get("TRACKER_SHARED")
    or next((p for p in (ROOT.parent / "shared", Path("/work/shared")) if p.is_dir()), Path("/work/shared"))
)
REALDATA = SHARED / "realdata"
ADMIN_TOKEN = "test-admin-" + secrets.token_hex(16)
BASE_PG = os.environ.get("TRACKER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def _server_reachable(url: str) -> bool:
    async def probe() -> bool:
        try:
            conn = await asyncpg.connect(url, timeout=3)
        except (OSError, asyncpg.PostgresError):
            return False
        await conn.close()
        return True

    return asyncio.run(probe())


@pytest.fixture(scope="session")
def pg_base() -> Iterator[str]:
    """A PostgreSQL server with PostGIS: the local one, else an embedded cluster made for this run."""
    if _server_reachable(BASE_PG):
        yield BASE_PG
        return
    from tracker.embedded_db import EmbeddedPostgres

    folder = Path(tempfile.mkdtemp(prefix="tracker-test-pg-"))
    folder.chmod(0o755)
    with EmbeddedPostgres(folder / "pg", database="postgres") as url:
        yield url


async def create_database(pg_base: str, label: str) -> str:
    """A new, empty database on the `pg_base` server; return its URL."""
    name = f"tracker_{label}_{os.getpid()}_{secrets.token_hex(3)}"
    conn = await asyncpg.connect(pg_base)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    base, _, query = pg_base.partition("?")
    return base.rsplit("/", 1)[0] + "/" + name + (("?" + query) if query else "")


async def drop_database(pg_base: str, url: str) -> None:
    """Drop the database of `url` (made by `create_database`), closing its connections."""
    name = url.partition("?")[0].rsplit("/", 1)[1]
    conn = await asyncpg.connect(pg_base)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def database_url(pg_base: str) -> Iterator[str]:
    """A fresh database for this test session, dropped at the end."""
    url = asyncio.run(create_database(pg_base, "test"))
    yield url
    asyncio.run(drop_database(pg_base, url))


def start_server(
    database_url: str | None,
    tmp: Path,
    extra_env: dict[str, str] | None = None,
    *args: str,
    port: int | None = None,
) -> Server:
    """Start a server (on `port`, else a free one) and wait (bounded) until /readyz answers 200. Every
    test connects from 127.0.0.1 and many present bad tokens on purpose, so the failures one address may
    make before it is slowed are out of reach (test_refusals.py tests the slowing on servers of its own)."""
    settings = {
        "TRACKER_ADMIN_TOKEN": ADMIN_TOKEN,
        "TRACKER_AUTH_FAILURE_BURST": str(UNLIMITED_FAILURES),
        **(extra_env or {}),
    }
    return spawn_tracker(database_url, tmp, settings, args, port=port, cwd=ROOT).wait_ready()


@pytest.fixture(scope="session")
def server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The shared server of this session."""
    s = start_server(database_url, tmp_path_factory.mktemp("server"))
    yield s
    s.stop()


@pytest.fixture
async def server_http(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the session's server, for tests that also use the process (a Socket.IO client,
    its log); tests that need HTTP only take `app_http` (in_process.py)."""
    async with httpx.AsyncClient(base_url=server.url) as client:
        yield client


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection to the session's database, to check what the server stored."""
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()


def uid(prefix: str) -> str:
    """A unique id, so tests sharing one server never see each other's devices or fleets."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@contextlib.asynccontextmanager
async def http_client(server: Server | httpx.AsyncClient) -> AsyncIterator[httpx.AsyncClient]:
    """A client of `server`: the client itself when given one (the in-process app's `app_http`), else a
    new one on the server process's URL, closed on leaving."""
    if isinstance(server, httpx.AsyncClient):
        yield server
        return
    async with httpx.AsyncClient(base_url=server.url) as http:
        yield http


async def add_device(
    server: Server | httpx.AsyncClient, fleet: str, device: str | None = None
) -> tuple[str, str]:
    """Register a device through the admin API of `server` (a process, or a client of one); return
    (id, token)."""
    device = device or uid("dev")
    async with http_client(server) as http:
        r = await http.post(
            "/api/admin/devices",
            json={"id": device, "fleet": fleet},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
    assert r.status_code == 201, r.text
    return device, r.json()["token"]


async def add_viewer(
    server: Server | httpx.AsyncClient, fleets: list[str] | str, name: str | None = None
) -> str:
    """Register a viewer (named `name`, else a unique name) through the admin API of `server` (a process,
    or a client of one); return its token."""
    async with http_client(server) as http:
        r = await http.post(
            "/api/admin/viewers",
            json={"name": name or uid("viewer"), "fleets": fleets},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
    assert r.status_code == 201, r.text
    return str(r.json()["token"])


class Client:
    """A Socket.IO client on one namespace that queues every event it receives, by name."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.sio = socketio.AsyncClient(reconnection=False)
        self.events: dict[str, asyncio.Queue[Any]] = {}
        self.sio.on("*", self._record, namespace=namespace)

    async def _record(self, event: str, data: Any = None) -> None:
        self.events.setdefault(event, asyncio.Queue()).put_nowait(data)

    async def connect(self, server: Server, token: str) -> Client:
        await self.sio.connect(
            server.url, namespaces=[self.namespace], auth={"token": token}, transports=["websocket"]
        )
        return self

    async def call(self, event: str, data: Any, timeout: float = 30) -> Any:
        return await self.sio.call(event, data, namespace=self.namespace, timeout=timeout)

    async def next(self, event: str, timeout: float = 10) -> Any:
        """The next `event` received (waits up to `timeout` seconds)."""
        return await asyncio.wait_for(self.events.setdefault(event, asyncio.Queue()).get(), timeout)

    def pending(self, event: str) -> list[Any]:
        """Every `event` received and not yet taken with `next`."""
        q = self.events.setdefault(event, asyncio.Queue())
        out = []
        while not q.empty():
            out.append(q.get_nowait())
        return out

    async def close(self) -> None:
        await self.sio.disconnect()


@pytest.fixture
async def clients() -> AsyncIterator[list[Client]]:
    """Clients made in a test; all disconnected at its end."""
    made: list[Client] = []
    yield made
    for c in made:
        await c.close()


async def device_client(server: Server, token: str, clients: list[Client]) -> Client:
    c = await Client("/device").connect(server, token)
    clients.append(c)
    return c


async def connected_device(
    server: Server, clients: list[Client], fleet: str | None = None
) -> tuple[str, Client]:
    """A new device of `fleet` (a new fleet by default), connected; return (id, client)."""
    device, token = await add_device(server, fleet or uid("fleet"))
    return device, await device_client(server, token, clients)


async def viewer_client(server: Server, token: str, clients: list[Client]) -> Client:
    c = await Client("/viewer").connect(server, token)
    clients.append(c)
    return c


async def refusal(server: Server, namespace: str, auth: Any, wait_s: float = 1) -> Any:
    """Connect with `auth` and return the `connect_error` data the server answered (within `wait_s`, the
    client's own default, for the namespace's answer; 10 s for the error event)."""
    sio = socketio.AsyncClient(reconnection=False)
    errors: asyncio.Queue[Any] = asyncio.Queue()
    sio.on("connect_error", errors.put_nowait, namespace=namespace)
    try:
        await sio.connect(
            server.url, namespaces=[namespace], auth=auth, transports=["websocket"], wait_timeout=wait_s
        )
    except socketio.exceptions.ConnectionError:
        pass
    finally:
        await sio.disconnect()
    return await asyncio.wait_for(errors.get(), 10)


def now_ms() -> int:
    return int(time.time() * 1000)


async def until(check: Callable[[], Awaitable[Any]], timeout: float = 15) -> Any:
    """Poll `check` until it returns something truthy (bounded); return that."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        got = await check()
        if got:
            return got
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


@contextlib.contextmanager
def own_server(
    database_url: str | None, tmp: Path, extra_env: dict[str, str] | None = None, *args: str
) -> Iterator[Server]:
    """A server of the test's own, started like `start_server`; stopped on leaving, also when the test
    fails (stopping it earlier, say with SIGKILL, is fine: stopping again does nothing)."""
    s = start_server(database_url, tmp, extra_env, *args)
    try:
        yield s
    finally:
        s.stop()


def write_rules(tmp: Path, text: str, name: str = "rules.yaml") -> None:
    """Write fence YAML `text` as `name` into `tmp/geofences`, the folder a server started on `tmp` reads
    (and hot-reloads)."""
    folder = tmp / "geofences"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)
