"""The webhook worker against a real PostGIS database and a real local HTTP receiver.

The module has its own database: the session's shared server runs a webhook worker of its own, which
would otherwise take this module's rows with other settings. Each test POSTs to its own receiver (its
own port) under its own path, and marks its leftover rows dead at the end, so one test's rows never
reach another test's worker as due work.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp import web
from harness import create_database, drop_database, free_port, uid
from multidict import CIMultiDict

from tracker.metrics import Metrics
from tracker.store import Database
from tracker.webhooks import WebhookWorker, outbox_summary

SECRET = "test-webhook-secret"
FAST = {"backoff_s": 0.05, "backoff_max_s": 0.2, "timeout_s": 2.0}


@dataclass
class Received:
    path: str
    headers: CIMultiDict[str]
    body: bytes
    at: float
    status: int = 0


@dataclass
class Receiver:
    """An aiohttp server that fails the first N requests of some paths, recording every request."""

    url: str = ""
    requests: list[Received] = field(default_factory=list)
    fail_first: dict[str, int] = field(default_factory=dict)  # path -> failures still to give
    always_fail: set[str] = field(default_factory=set)
    hang_first: set[str] = field(default_factory=set)  # paths whose first request never gets an answer
    delay: Callable[[], float] = lambda: 0.0
    in_flight: Counter[str] = field(default_factory=Counter)
    max_in_flight: Counter[str] = field(default_factory=Counter)  # per path, and "" for all paths
    released: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        rec = Received(request.path, CIMultiDict(request.headers), await request.read(), time.time())
        self.requests.append(rec)
        seen = sum(1 for r in self.requests if r.path == rec.path)
        if rec.path in self.hang_first and seen == 1:
            await self.released.wait()
        for key in (rec.path, ""):
            self.in_flight[key] += 1
            self.max_in_flight[key] = max(self.max_in_flight[key], self.in_flight[key])
        try:
            await asyncio.sleep(self.delay())
        finally:
            for key in (rec.path, ""):
                self.in_flight[key] -= 1
        if rec.path in self.always_fail or self.fail_first.get(rec.path, 0) > 0:
            self.fail_first[rec.path] = self.fail_first.get(rec.path, 0) - 1
            rec.status = 500
        else:
            rec.status = 200
        return web.Response(status=rec.status, text="ok" if rec.status == 200 else "nope")

    def to(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]

    def events(self, path: str, status: int | None = None) -> list[int]:
        """Event ids POSTed to `path` (answered with `status`, when given), in arrival order."""
        return [int(r.headers["X-Tracker-Event"]) for r in self.to(path) if status in (None, r.status)]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_route("POST", "/{tail:.*}", rec.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    rec.url = f"http://127.0.0.1:{port}"
    yield rec
    rec.released.set()
    await runner.cleanup()


@pytest.fixture(scope="module")
async def database_url(pg_base: str) -> AsyncIterator[str]:
    """A fresh database for this module (shadows the session's, whose servers run webhook workers too)."""
    url = await create_database(pg_base, "webhooks")
    yield url
    await drop_database(pg_base, url)


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    db = await Database.connect(database_url)
    yield db
    await db.close()


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(database_url)
    yield c
    await c.close()


@pytest.fixture
async def scoped(database_url: str) -> AsyncIterator[Callable[[str], str]]:
    """Makes URL prefixes unique to this test; at its end, the rows under them still pending become dead."""
    prefixes: list[str] = []

    def new(base: str) -> str:
        prefixes.append(f"{base}/{uid('hook')}")
        return prefixes[-1]

    yield new
    c = await asyncpg.connect(database_url)
    try:
        await c.execute(
            "UPDATE webhook_outbox SET state = 'dead', last_error = 'test cleanup' "
            "WHERE state = 'pending' AND url LIKE ANY($1::text[])",
            [p + "%" for p in prefixes],
        )
    finally:
        await c.close()


async def add_events(conn: asyncpg.Connection, url: str, n: int = 1, **fields: Any) -> list[tuple[int, int]]:
    """Insert `n` events with one outbox row each for `url`; return [(event id, outbox id)]."""
    out = []
    async with conn.transaction():
        for i in range(n):
            e = {"type": "enter", "rule_id": "r1", "fence_id": "depot", "device_id": uid("dev"),
                 "fleet": "fleet-a", "ts": 1_700_000_000_000 + i, "lat": 52.52, "lon": 13.405,
                 **fields}  # fmt: skip
            event_id = await conn.fetchval(
                "INSERT INTO events (type, rule_id, fence_id, device_id, fleet, ts, lat, lon) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
                *e.values(),
            )
            out.append((event_id, await add_outbox(conn, event_id, url)))
    return out


async def add_outbox(conn: asyncpg.Connection, event_id: int, url: str) -> int:
    return int(
        await conn.fetchval(
            "INSERT INTO webhook_outbox (event_id, url) VALUES ($1, $2) RETURNING id", event_id, url
        )
    )


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 30.0) -> None:
    """Wait (bounded) until `check()` is true, polling."""

    async def poll() -> None:
        while not await check():
            await asyncio.sleep(0.02)

    await asyncio.wait_for(poll(), timeout)


async def states(conn: asyncpg.Connection, ids: list[int]) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT * FROM webhook_outbox WHERE id = ANY($1::bigint[]) ORDER BY id", ids
    )
    return rows


async def settled(conn: asyncpg.Connection, ids: list[int]) -> bool:
    return all(r["state"] != "pending" for r in await states(conn, ids))


@contextlib.asynccontextmanager
async def running(*workers: WebhookWorker) -> AsyncIterator[list[asyncio.Task[None]]]:
    tasks = [asyncio.create_task(w.run()) for w in workers]
    try:
        yield tasks
    finally:
        for t in tasks:
            t.cancel()
        for t, w in zip(tasks, workers, strict=True):
            with contextlib.suppress(asyncio.CancelledError):
                await t
            await w.close()


def worker(db: Database, metrics: Metrics | None = None, **kw: Any) -> WebhookWorker:
    options: dict[str, Any] = {"secret": SECRET, "attempts": 5, **FAST, **kw}
    return WebhookWorker(db, metrics or Metrics(), **options)


def sample(metrics: Metrics, result: str) -> float:
    return metrics.registry.get_sample_value("tracker_webhook_deliveries_total", {"result": result}) or 0.0


async def test_delivers_after_failures_with_signed_event_json(
    scoped: Callable[[str], str], database: Database, conn: asyncpg.Connection, receiver: Receiver
) -> None:
    url = scoped(receiver.url) + "/flaky"
    path = url.removeprefix(receiver.url)
    receiver.fail_first[path] = 2
    [(event_id, outbox_id)] = await add_events(conn, url, device_id="truck-7", ts=1_700_000_123_456)
    metrics = Metrics()
    w = worker(database, metrics)
    async with running(w):
        w.wake()
        await eventually(lambda: settled(conn, [outbox_id]))

    [row] = await states(conn, [outbox_id])
    assert (row["state"], row["attempts"]) == ("delivered", 3)
    assert row["delivered"] is not None and row["last_error"] == "HTTP 500"
    assert [r.status for r in receiver.to(path)] == [500, 500, 200]
    got = receiver.to(path)[-1]
    assert orjson.loads(got.body) == {
        "id": str(event_id), "type": "enter", "rule": "r1", "fence": "depot", "device": "truck-7",
        "fleet": "fleet-a", "ts": 1_700_000_123_456, "lat": 52.52, "lon": 13.405,
    }  # fmt: skip
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["User-Agent"] == "tracker-webhooks"
    assert got.headers["X-Tracker-Event"] == str(event_id)
    assert got.headers["X-Tracker-Delivery"] == str(outbox_id)
    # Stripe-style: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + raw body)>
    parts = dict(p.split("=", 1) for p in got.headers["X-Tracker-Signature"].split(","))
    t = int(parts["t"])
    assert abs(time.time() - t) < 60
    expected = hmac.new(SECRET.encode(), f"{t}.".encode() + got.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(parts["v1"], expected)
    wrong = hmac.new(b"other secret", f"{t}.".encode() + got.body, hashlib.sha256).hexdigest()
    assert parts["v1"] != wrong
    assert sample(metrics, "delivered") >= 1 and sample(metrics, "retry") >= 2


async def test_always_failing_url_goes_dead_after_the_last_attempt(
    scoped: Callable[[str], str],
    database: Database,
    conn: asyncpg.Connection,
    receiver: Receiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="tracker.webhooks")
    prefix = scoped(receiver.url)
    down, up = prefix + "/down", prefix + "/up"
    receiver.always_fail.add(down.removeprefix(receiver.url))
    [(event_id, outbox_id)] = await add_events(conn, down)
    metrics = Metrics()
    w = worker(database, metrics, attempts=3, secret=None)
    async with running(w):
        w.wake()
        await eventually(lambda: settled(conn, [outbox_id]))
        # One more delivery proves the worker went on without trying the dead row again.
        [(_, marker)] = await add_events(conn, up)
        w.wake()
        await eventually(lambda: settled(conn, [marker]))

    [row] = await states(conn, [outbox_id])
    assert (row["state"], row["attempts"], row["last_error"]) == ("dead", 3, "HTTP 500")
    assert row["delivered"] is None
    assert receiver.events(down.removeprefix(receiver.url)) == [event_id] * 3
    assert all("X-Tracker-Signature" not in r.headers for r in receiver.requests)  # no secret, no signature
    mine = [r for r in caplog.records if f"event {event_id} " in r.getMessage()]
    assert [r.levelno for r in mine] == [logging.WARNING, logging.WARNING, logging.ERROR]
    assert "attempt 2 of 3" in mine[1].getMessage() and "/down" in mine[2].getMessage()
    assert sample(metrics, "dead") >= 1


async def test_connection_refused_counts_as_a_failure(
    scoped: Callable[[str], str], database: Database, conn: asyncpg.Connection
) -> None:
    url = scoped(f"http://127.0.0.1:{free_port()}")  # nothing listens there
    [(_, outbox_id)] = await add_events(conn, url)
    w = worker(database, attempts=2)
    async with running(w):
        w.wake()
        await eventually(lambda: settled(conn, [outbox_id]))
    [row] = await states(conn, [outbox_id])
    assert (row["state"], row["attempts"]) == ("dead", 2)
    assert row["last_error"].startswith("ConnectError")


async def test_rows_of_one_url_arrive_in_event_order_even_across_a_retry(
    scoped: Callable[[str], str], database: Database, conn: asyncpg.Connection, receiver: Receiver
) -> None:
    prefix = scoped(receiver.url)
    a, b = prefix + "/a", prefix + "/b"
    pa, pb = a.removeprefix(receiver.url), b.removeprefix(receiver.url)
    receiver.fail_first[pa] = 1
    receiver.delay = lambda: random.uniform(0, 0.01)
    # Events interleaved between the URLs; outbox rows inserted in shuffled order, so outbox ids do not
    # follow event ids.
    events = await add_events(conn, a, 8) + await add_events(conn, b, 8)
    targets = [(eid, a) for eid, _ in events[:8]] + [(eid, b) for eid, _ in events[8:]]
    await conn.execute("DELETE FROM webhook_outbox WHERE id = ANY($1::bigint[])", [o for _, o in events])
    random.Random(7).shuffle(targets)
    ids = [await add_outbox(conn, eid, url) for eid, url in targets]
    w = worker(database, backoff_s=0.5)  # long enough for later rows to overtake, were they not held
    async with running(w):
        w.wake()
        await eventually(lambda: settled(conn, ids))

    a_events, b_events = sorted(e for e, _ in events[:8]), sorted(e for e, _ in events[8:])
    assert receiver.events(pa) == [a_events[0], *a_events]  # the failed first one, then all in order
    assert receiver.events(pb) == b_events
    assert receiver.max_in_flight[pa] == 1 and receiver.max_in_flight[pb] == 1
    assert all(r["state"] == "delivered" for r in await states(conn, ids))


async def test_concurrency_bounds_requests_in_flight(
    scoped: Callable[[str], str], database: Database, conn: asyncpg.Connection, receiver: Receiver
) -> None:
    prefix = scoped(receiver.url)
    receiver.delay = lambda: 0.3
    ids = [o for i in range(6) for _, o in await add_events(conn, f"{prefix}/{i}")]
    w = worker(database, concurrency=3)
    async with running(w):
        w.wake()
        await eventually(lambda: settled(conn, ids))
    assert receiver.max_in_flight[""] == 3
    assert len(receiver.requests) == 6


async def test_two_workers_deliver_each_row_exactly_once(
    scoped: Callable[[str], str],
    database_url: str,
    database: Database,
    conn: asyncpg.Connection,
    receiver: Receiver,
) -> None:
    prefix = scoped(receiver.url)
    receiver.delay = lambda: random.uniform(0, 0.005)
    ids = [o for i in range(5) for _, o in await add_events(conn, f"{prefix}/{i}", 40)]
    other = await Database.connect(database_url)  # a second process's pool
    m1, m2 = Metrics(), Metrics()
    w1, w2 = worker(database, m1, batch_size=7), worker(other, m2, batch_size=7)
    try:
        async with running(w1, w2):
            w1.wake()
            w2.wake()
            await eventually(lambda: settled(conn, ids), timeout=60)
    finally:
        await other.close()

    per_delivery = Counter(r.headers["X-Tracker-Delivery"] for r in receiver.requests)
    assert sorted(int(d) for d in per_delivery) == sorted(ids)
    assert set(per_delivery.values()) == {1}
    per_event = Counter((r.path, r.headers["X-Tracker-Event"]) for r in receiver.requests)
    assert len(per_event) == 200 and set(per_event.values()) == {1}
    rows = await states(conn, ids)
    assert {(r["state"], r["attempts"]) for r in rows} == {("delivered", 1)}
    assert sample(m1, "delivered") > 0 and sample(m2, "delivered") > 0  # both took part


async def test_a_crash_mid_post_leaves_the_row_to_be_retried_after_its_lease(
    scoped: Callable[[str], str], database: Database, conn: asyncpg.Connection, receiver: Receiver
) -> None:
    url = scoped(receiver.url) + "/slow"
    path = url.removeprefix(receiver.url)
    receiver.hang_first.add(path)
    [(_, outbox_id)] = await add_events(conn, url)
    lease: dict[str, Any] = {"timeout_s": 1.0, "lease_s": 5.0}
    first = worker(database, **lease)
    async with running(first):
        first.wake()

        async def posted() -> bool:
            return len(receiver.to(path)) == 1

        await eventually(posted)
    # `first` is gone mid-POST; the row is pending and leased
    [row] = await states(conn, [outbox_id])
    assert (row["state"], row["attempts"]) == ("pending", 0)
    second = worker(database, **lease)
    async with running(second):
        second.wake()
        await eventually(lambda: settled(conn, [outbox_id]))
    [row] = await states(conn, [outbox_id])
    assert (row["state"], row["attempts"]) == ("delivered", 1)
    crashed, retried = receiver.to(path)
    assert crashed.headers["X-Tracker-Delivery"] == retried.headers["X-Tracker-Delivery"] == str(outbox_id)
    assert retried.at - crashed.at > 3.5  # not before the lease ended


async def test_a_database_error_does_not_stop_the_worker(
    scoped: Callable[[str], str],
    database: Database,
    conn: asyncpg.Connection,
    receiver: Receiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="tracker.webhooks")
    url = scoped(receiver.url) + "/after-outage"
    w = worker(database, db_retry_s=0.1)
    await conn.execute("ALTER TABLE webhook_outbox RENAME TO webhook_outbox_away")
    try:
        async with running(w) as [task]:

            async def failed_round() -> bool:
                return any("webhook round failed" in r.getMessage() for r in caplog.records)

            await eventually(failed_round)
            await conn.execute("ALTER TABLE webhook_outbox_away RENAME TO webhook_outbox")
            [(_, outbox_id)] = await add_events(conn, url)
            w.wake()
            await eventually(lambda: settled(conn, [outbox_id]))
            assert not task.done()
    finally:
        await conn.execute("ALTER TABLE IF EXISTS webhook_outbox_away RENAME TO webhook_outbox")
    [row] = await states(conn, [outbox_id])
    assert row["state"] == "delivered"


async def test_outbox_summary_counts_rows_by_state(
    scoped: Callable[[str], str], database: Database, conn: asyncpg.Connection
) -> None:
    url = scoped("http://127.0.0.1:9")
    before = await outbox_summary(database)
    assert set(before) == {"pending", "delivered", "dead"}
    ids = [o for _, o in await add_events(conn, url, 3)]
    await conn.execute(
        "UPDATE webhook_outbox SET state = 'delivered', delivered = now() WHERE id = $1", ids[0]
    )
    await conn.execute("UPDATE webhook_outbox SET state = 'dead' WHERE id = $1", ids[1])
    after = await outbox_summary(database)
    assert {k: after[k] - before[k] for k in after} == {"pending": 1, "delivered": 1, "dead": 1}


async def test_a_round_claims_at_most_one_batch(
    scoped: Callable[[str], str], database: Database, conn: asyncpg.Connection, receiver: Receiver
) -> None:
    url = scoped(receiver.url) + "/batch"
    ids = [o for _, o in await add_events(conn, url, 10)]
    w = worker(database, batch_size=4)
    try:
        assert await w.deliver_due() == 4  # without the run loop: one round
    finally:
        await w.close()
    assert [r["state"] for r in await states(conn, ids)] == ["delivered"] * 4 + ["pending"] * 6
    assert len(receiver.requests) == 4
