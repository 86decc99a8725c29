"""Test harness: a fresh PostGIS database per test session, real `tracker serve` processes on free ports,
real Socket.IO and HTTP clients. Nothing here mocks the database or the server.

Servers are started, waited for and stopped by `tracker.tools.server_process`, the harness the benchmarks
use too. A test's `server` is one such process, or, in modules marked `cluster`, also a `Cluster`: several
processes on one database and one Redis, used as one server (see `Cluster`); `Server` is what both offer."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import secrets
import signal
import ssl
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import asyncpg
import httpx
import pytest
import socketio
from playwright.async_api import Browser, Page

from tracker.tools.server_process import ServerProcess, spawn_tracker
from tracker.tools.server_process import free_port as free_port  # tests import it from here

UNLIMITED_FAILURES = 10**9
# A test's server answers `retry` while its event loop runs this late: far beyond what a busy CI machine
# causes (at the default 100 ms, a test's seed fixes were refused while other work shared the 2 cores).
# The lag refusal itself is tested on its own (test_admission.py, test_socket_gate.py).
LOOP_LAG_MAX_MS = 5_000
ROOT = Path(__file__).resolve().parent.parent
# The shared folder beside the project (contract, real data): next to the checkout, else /work/shared.
SHARED = Path(
    os.environ.get("TRACKER_SHARED")
    or next((p for p in (ROOT.parent / "shared", Path("/work/shared")) if p.is_dir()), Path("/work/shared"))
)
REALDATA = SHARED / "realdata"
ADMIN_TOKEN = "test-admin-" + secrets.token_hex(16)
BASE_PG = os.environ.get("TRACKER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TRACKER_TEST_REDIS", "redis://127.0.0.1:6379/0")
CLUSTER_SIZE = 3  # processes of the session's cluster (tests/test_cluster.py starts 2 and 3 of its own)


class Server(Protocol):
    """What a test asks of its server: a `ServerProcess`, or a `Cluster` of them."""

    @property
    def url(self) -> str: ...

    def check_alive(self) -> None: ...

    def stop(self, sig: int = ...) -> None: ...

    def log_text(self) -> str: ...

    def log_tail(self, lines: int = ...) -> str: ...

    def log_size(self) -> int: ...

    def log_error_lines(self, since: int = 0) -> int: ...

    def log_error_samples(self, limit: int = 5, since: int = 0) -> list[str]: ...


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
) -> ServerProcess:
    """Start a server (on `port`, else a free one) and wait (bounded) until /readyz answers 200. Every
    test connects from 127.0.0.1 and many present bad tokens on purpose, so the failures one address may
    make before it is slowed are out of reach (test_refusals.py tests the slowing on servers of its own);
    and the loop-lag refusal waits for a lag no busy test machine causes (`LOOP_LAG_MAX_MS`). Closed days
    are not compacted: the tests share one database, whose partitions other tests drop, and the rebuilds
    would only load the machine (test_compaction.py's servers opt in)."""
    return spawn_tracker(database_url, tmp, _settings(extra_env), args, port=port, cwd=ROOT).wait_ready()


def _settings(extra_env: dict[str, str] | None) -> dict[str, str]:
    return {
        "TRACKER_ADMIN_TOKEN": ADMIN_TOKEN,
        "TRACKER_AUTH_FAILURE_BURST": str(UNLIMITED_FAILURES),
        "TRACKER_LOOP_LAG_MAX_MS": str(LOOP_LAG_MAX_MS),
        "TRACKER_COMPACT_AFTER_S": "0",
        **(extra_env or {}),
    }


class Cluster:
    """Several `tracker serve` processes on one database and one Redis, used as one server.

    Each kind of client gets the live processes in turn, from its own starting process: HTTP (`url`) from
    the first, devices from the second, viewers from the third (`url_for`). So with three processes a
    test's first HTTP call, device and viewer land on three different processes, and its later ones move
    on, without the test saying so; `turn_again` (at each test's start) makes that hold for every test. A
    test that needs one process in particular takes it from `processes`. The log accessors cover every
    process; `stop` stops them all."""

    KINDS = ("http", "/device", "/viewer")

    def __init__(self, processes: list[ServerProcess]) -> None:
        self.processes = processes
        self._turns: dict[str, Iterator[int]] = {}
        self._marks: list[list[int]] = []  # log_size() marks: each process's log size then
        self.turn_again()

    def turn_again(self) -> None:
        """Start handing out processes from the beginning again."""
        self._turns = {kind: itertools.count(i) for i, kind in enumerate(self.KINDS)}

    @property
    def url(self) -> str:
        return self.url_for("http")

    def url_for(self, kind: str) -> str:
        """The URL of the next live process for `kind` (one of KINDS; a Socket.IO namespace for clients)."""
        live = [p for p in self.processes if p.process.poll() is None] or self.processes
        return live[next(self._turns[kind]) % len(live)].url

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def check_alive(self) -> None:
        for p in self.processes:
            p.check_alive()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        for p in self.processes:
            p.stop(sig)

    def log_text(self) -> str:
        return "\n".join(p.log_text() for p in self.processes)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(f"--- {p.url}\n{p.log_tail(lines)}" for p in self.processes)

    def log_size(self) -> int:
        """A mark for `since=`: it stands for every process's log size now."""
        self._marks.append([p.log_size() for p in self.processes])
        return len(self._marks)  # 0 stays "from the start"

    def log_error_lines(self, since: int = 0) -> int:
        return len(self._error_samples(10**9, since))

    def log_error_samples(self, limit: int = 5, since: int = 0) -> list[str]:
        return self._error_samples(limit, since)

    def _error_samples(self, limit: int, since: int) -> list[str]:
        starts = self._marks[since - 1] if since else [0] * len(self.processes)
        found: list[str] = []
        for p, start in zip(self.processes, starts, strict=True):
            found += p.log_error_samples(limit, since=start)
        return found[:limit]


def start_cluster(
    database_url: str | None, tmp: Path, size: int, extra_env: dict[str, str] | None = None, *args: str
) -> Cluster:
    """Start `size` servers sharing rooms through the Redis at REDIS_URL, each in `tmp/<i>` but all reading
    fence rules from `tmp/geofences` (`write_rules(tmp, ...)`), and wait (bounded) until each is ready.
    They are started together: each one's start-up overlaps the others'."""
    _redis_answers(REDIS_URL)
    rules = tmp / "geofences"
    rules.mkdir(parents=True, exist_ok=True)
    env = _settings({"TRACKER_REDIS_URL": REDIS_URL, "TRACKER_GEOFENCES": str(rules), **(extra_env or {})})
    spawned: list[ServerProcess] = []
    try:
        for i in range(size):
            folder = tmp / str(i)
            folder.mkdir(parents=True, exist_ok=True)
            spawned.append(spawn_tracker(database_url, folder, env, args, cwd=ROOT))
        for p in spawned:
            p.wait_ready()
    except BaseException:
        for p in spawned:
            p.stop()
        raise
    return Cluster(spawned)


def _redis_answers(url: str) -> None:
    """Fail the test, saying what is missing, unless Redis answers at `url` (processes would start without
    it, each serving only its own clients)."""
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.exceptions.RedisError as exc:
        pytest.fail(f"a cluster needs Redis at {url} (.ci/run starts one; or set TRACKER_TEST_REDIS): {exc}")


@contextlib.contextmanager
def own_cluster(
    database_url: str | None, tmp: Path, size: int, extra_env: dict[str, str] | None = None, *args: str
) -> Iterator[Cluster]:
    """A cluster of the test's own (`start_cluster`), stopped on leaving, also when the test fails."""
    c = start_cluster(database_url, tmp, size, extra_env, *args)
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="session")
def single_server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The shared server process of this session."""
    s = start_server(database_url, tmp_path_factory.mktemp("server"))
    yield s
    s.stop()


@pytest.fixture(scope="session")
def cluster_server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The shared cluster of this session: CLUSTER_SIZE processes on the session's database and on Redis
    at REDIS_URL, started when a test first asks for it.

    Its Redis channels and keys carry the namespace of the session's database, so tests that start
    processes of their own on that database exchange traffic with this cluster: positions of their devices
    reach its live index, and its catch-up answers reach theirs. That changes no answer a test checks: they
    serve the same database (so it knows those devices anyway, and loads them at start-up), and every
    test's fleets and devices are its own (`uid`). Processes on a database of their own are a deployment
    of their own (test_redis_namespace.py)."""
    c = start_cluster(database_url, tmp_path_factory.mktemp("cluster"), CLUSTER_SIZE)
    yield c
    c.stop()


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Server:
    """The test's server: the session's single process, or in a module (or test) marked `cluster` once
    that and once the session's cluster (`pytest_generate_tests`)."""
    if getattr(request, "param", "single") == "cluster":
        cluster: Cluster = request.getfixturevalue("cluster_server")
        cluster.turn_again()
        return cluster
    return request.getfixturevalue("single_server")  # type: ignore[no-any-return]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests marked `cluster` that use `server` run against a single process and against a cluster."""
    if "server" in metafunc.fixturenames and metafunc.definition.get_closest_marker("cluster"):
        metafunc.parametrize("server", ["single", "cluster"], indirect=True)


@pytest.fixture
async def server_http(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the session's server, for tests that also use the process (a Socket.IO client,
    its log); tests that need HTTP only take `app_http` (in_process.py)."""
    async with web_client(server.url) as client:
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


# An httpx client loads certifi's CA bundle into a new TLS context each time one is made (about 30 ms), and
# the tests make hundreds of clients of plain-HTTP local servers: they share one context.
_TLS = ssl.create_default_context()


def web_client(base_url: str = "", **kwargs: Any) -> httpx.AsyncClient:
    """An HTTP client (of `base_url`) on the tests' one TLS context: build clients with this."""
    return httpx.AsyncClient(base_url=base_url, verify=_TLS, **kwargs)


@contextlib.asynccontextmanager
async def http_client(server: Server | httpx.AsyncClient) -> AsyncIterator[httpx.AsyncClient]:
    """A client of `server`: the client itself when given one (the in-process app's `app_http`), else a
    new one on the server process's URL, closed on leaving."""
    if isinstance(server, httpx.AsyncClient):
        yield server
        return
    async with web_client(server.url) as http:
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
        url = server.url_for(self.namespace) if isinstance(server, Cluster) else server.url
        await self.sio.connect(
            url, namespaces=[self.namespace], auth={"token": token}, transports=["websocket"]
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
) -> Iterator[ServerProcess]:
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


SCREENSHOTS = ROOT / "docs" / "screenshots"


def screenshot_file(name: str) -> Path:
    """Where a browser test saves its view `name`: docs/screenshots/<name>.png, which the README shows,
    when TRACKER_UPDATE_SCREENSHOTS=1 (how they are made); else a scratch file, so that a test run leaves
    the checkout as it found it (every run's pixels differ a little)."""
    if os.environ.get("TRACKER_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        return SCREENSHOTS / f"{name}.png"
    folder = Path(tempfile.gettempdir()) / f"tracker-screenshots-{os.getpid()}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{name}.png"


@contextlib.asynccontextmanager
async def server_tab(browser: Browser, server: Server, viewport: Any, **options: Any) -> AsyncIterator[Page]:
    """A browser tab of its own (storage included) that reaches `server` only (map tiles and anything else
    blocked); on leaving it is closed, and the test fails if the page threw."""
    context = await browser.new_context(viewport=viewport, **options)
    tab = await context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda e: errors.append(str(e)))

    async def route(r: Any) -> None:
        await (r.continue_() if r.request.url.startswith(server.url) else r.abort())

    await tab.route("**/*", route)
    try:
        yield tab
    finally:
        await context.close()
    assert not errors, errors
