"""The cluster's promises (issue 15), on clusters of two and of three `tracker serve` processes sharing this
module's own PostGIS database (so no other server's webhook worker takes its outbox rows) and Redis:
every process answers /api/nearby and /api/geofences/{id}/inside alike, message statuses and bbox
subscriptions reach viewers on any process as one process would deliver them, webhooks go out once for the
cluster, and a process killed with SIGKILL under load loses nothing: its devices go to the others and
resend, every acked fix is stored, fence events are exactly what the fixes imply, undelivered messages are
delivered by the process that now holds the device, and webhooks still go out once each, but for the one
POST the victim may have made and not recorded (at least once: repeated under its delivery id).

`online` in /api/devices is tests/test_presence.py's."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import socketio
from aiohttp import web
from harness import (
    ADMIN_TOKEN,
    Client,
    Cluster,
    add_device,
    add_viewer,
    create_database,
    device_client,
    drop_database,
    now_ms,
    own_cluster,
    uid,
    until,
    viewer_client,
    web_client,
    write_rules,
)

from tracker.tools.server_process import ServerProcess

RULES = """
fences:
  - id: depot
    polygon: [[13.40, 52.52], [13.41, 52.52], [13.41, 52.53], [13.40, 52.53]]
rules:
  - id: arrive
    on: enter
    fences: [depot]
    notify: [viewers, "{hook}"]
  - id: leave
    on: exit
    fences: [depot]
"""
IN = {"lat": 52.525, "lon": 13.405}
OUT = {"lat": 52.50, "lon": 13.30}
BOX = [13.30, 52.45, 13.50, 52.55]  # Berlin, holding IN and OUT
FAR = {"lat": 48.14, "lon": 11.58}  # Munich
# Webhook leases outlast one POST by 30 s plus twice its timeout: a short timeout keeps the wait for a
# killed process's leased rows short.
SETTINGS = {"TRACKER_WEBHOOK_TIMEOUT_S": "2", "TRACKER_WEBHOOK_BACKOFF_S": "0.05"}
LEASE_S = 2 * 2 + 30


def auth(token: str = ADMIN_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Hooks:
    """A local webhook receiver: every POST, by path, with its event and delivery ids."""

    url: str = ""
    posts: list[tuple[str, int, int]] = field(default_factory=list)  # (path, event id, delivery id)

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        event, delivery = request.headers["X-Tracker-Event"], request.headers["X-Tracker-Delivery"]
        self.posts.append((request.path, int(event), int(delivery)))
        return web.Response(text="ok")

    def at(self, path: str) -> list[tuple[int, int]]:
        return [(event, delivery) for p, event, delivery in self.posts if p == path]


@pytest.fixture(scope="module")
async def database_url(pg_base: str) -> AsyncIterator[str]:
    """A fresh database for this module (shadows the session's, whose servers run webhook workers too)."""
    url = await create_database(pg_base, "cluster")
    yield url
    await drop_database(pg_base, url)


@pytest.fixture(scope="module")
async def hooks() -> AsyncIterator[Hooks]:
    rec = Hooks()
    app = web.Application()
    app.router.add_route("POST", "/{tail:.*}", rec.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    rec.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield rec
    await runner.cleanup()


def start(database_url: str, tmp: Path, size: int, hook: str) -> contextlib.AbstractContextManager[Cluster]:
    """A cluster of `size` (`own_cluster`) whose rules POST `arrive` events to `hook`."""
    write_rules(tmp, RULES.replace("{hook}", hook))
    return own_cluster(database_url, tmp, size, SETTINGS)


async def holds(condition: Callable[[], bool], timeout: float = 15) -> None:
    """Wait (bounded) until `condition()` is true."""

    async def check() -> bool:
        return condition()

    await until(check, timeout)


@pytest.fixture(scope="module", params=[2, 3], ids=lambda n: f"{n}-processes")
def cluster(
    request: pytest.FixtureRequest, database_url: str, hooks: Hooks, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """A cluster of this module's own (two processes, then three), its rules' webhook on `hooks`."""
    size: int = request.param
    with start(database_url, tmp_path_factory.mktemp(f"cluster{size}"), size, f"{hooks.url}/{size}") as c:
        yield c


async def get_json(p: ServerProcess, path: str, token: str = ADMIN_TOKEN, **query: Any) -> Any:
    async with web_client(base_url=p.url) as http:
        r = await http.get(path, params=query, headers=auth(token))
    assert r.status_code == 200, r.text
    return r.json()


async def test_nearby_and_inside_answer_alike_on_every_process_right_after_an_ack(
    cluster: Cluster, clients: list[Client]
) -> None:
    fleet = uid("fleet")
    viewer = await add_viewer(cluster, [fleet])
    t = now_ms() - 10_000
    moved: list[str] = []
    for i, p in enumerate(cluster.processes):  # a device on each process; the first one inside the depot
        device, token = await add_device(p, fleet)
        d = await device_client(p, token, clients)
        fix = IN if i == 0 else {"lat": IN["lat"] + 0.01 * i, "lon": IN["lon"]}
        assert (await d.call("fix", {**fix, "ts": t + i}))["accepted"] == 1
        moved.append(device)
        # No waiting: the ack means committed, and every process answers for the cluster.
        near = [
            await get_json(p, "/api/nearby", viewer, lat=IN["lat"], lon=IN["lon"], radius_m=5000)
            for p in cluster.processes
        ]
        assert [x["id"] for x in near[0]["devices"]] == moved, near
        assert all(x == near[0] for x in near), near
        inside = [await get_json(p, "/api/geofences/depot/inside", viewer) for p in cluster.processes]
        assert inside[0] == {"devices": [{"id": moved[0], "fleet": fleet, "since_ts": t}]}, inside
        assert all(x == inside[0] for x in inside), inside


async def test_message_status_reaches_viewers_on_every_process(
    cluster: Cluster, clients: list[Client]
) -> None:
    """A viewer on A sends to a device on C (A again with two processes); viewers on every process see
    queued, sent and acked, in that order, once each."""
    a, c = cluster.processes[0], cluster.processes[2 % len(cluster.processes)]
    fleet = uid("fleet")
    device, token = await add_device(a, fleet)
    viewer_token = await add_viewer(a, [fleet])
    watchers = []
    for p in cluster.processes:
        w = await viewer_client(p, viewer_token, clients)
        assert await w.call("subscribe", {"fleet": fleet}) == {"ok": True}
        watchers.append(w)
    d = await device_client(c, token, clients)
    sender = await viewer_client(a, viewer_token, clients)
    ack = await sender.call("send", {"device": device, "body": "via three processes"})
    assert ack["ok"] is True, ack
    assert (await d.next("message"))["id"] == ack["id"]
    for w in watchers:
        steps = [await w.next("message_status") for _ in range(3)]
        assert [(s["id"], s["state"]) for s in steps] == [(ack["id"], s) for s in ("queued", "sent", "acked")]
    await until(lambda: _acked(a, viewer_token, device))  # recorded: no further status can come
    for w in watchers:
        assert w.pending("message_status") == []


async def _acked(p: ServerProcess, token: str, device: str) -> bool:
    rows = (await get_json(p, f"/api/devices/{device}/messages", token))["messages"]
    return bool(rows) and all(m["state"] == "acked" for m in rows)


async def test_bbox_viewers_on_every_process_get_what_one_process_gives(
    cluster: Cluster, clients: list[Client]
) -> None:
    """Devices on every process move in and out of a box; a box viewer on each process gets the same
    snapshot and, per device, the same positions: each move inside the box once, nothing outside it."""
    fleet = uid("fleet")
    viewer_token = await add_viewer(cluster, [fleet])
    devices: list[tuple[str, Client]] = []
    first: dict[str, int] = {}
    t = itertools.count(now_ms() - 60_000, 1000)
    for i, p in enumerate(cluster.processes):
        device, token = await add_device(p, fleet)
        d = await device_client(p, token, clients)
        start = IN if i % 2 == 0 else FAR
        first[device] = next(t)
        assert (await d.call("fix", {**start, "ts": first[device]}))["accepted"] == 1
        devices.append((device, d))
    viewers, snapshots = [], []
    for p in cluster.processes:
        v = await viewer_client(p, viewer_token, clients)
        assert await v.call("subscribe", {"bbox": BOX}) == {"ok": True}
        viewers.append(v)
        snapshots.append(sorted((x["device"], x["ts"]) for x in await v.next("positions")))
    assert all(s == snapshots[0] for s in snapshots), snapshots
    assert [device for device, _ in snapshots[0]] == sorted(
        d for i, (d, _) in enumerate(devices) if i % 2 == 0
    )

    # Each device in turn: to another place in the box, out of it, and back in; each move waited for, so
    # that no two of a device's moves are coalesced into one event.
    expected: dict[str, list[int]] = {device: [] for device, _ in devices}
    seen: list[list[tuple[str, int]]] = [[] for _ in viewers]

    def saw(device: str, ts: int) -> bool:
        for i, v in enumerate(viewers):
            seen[i] += [(p["device"], p["ts"]) for event in v.pending("positions") for p in event]
        return all((device, ts) in got for got in seen)

    for device, d in devices:
        for where in (OUT, FAR, IN):
            ts = next(t)
            assert (await d.call("fix", {**where, "ts": ts}))["accepted"] == 1
            if where is not FAR:
                expected[device].append(ts)
                await holds(partial(saw, device, ts))
    marker_device, marker = devices[0][0], next(t)  # a last move: whatever came before it has arrived
    assert (await devices[0][1].call("fix", {**IN, "ts": marker}))["accepted"] == 1
    expected[marker_device].append(marker)
    await holds(lambda: saw(marker_device, marker))
    # The first fixes came before the subscriptions; the broadcast of one may still reach a viewer just
    # after its snapshot (as on one process), ahead of everything else.
    for got in seen:
        by_device = {device: [ts for d, ts in got if d == device] for device in expected}
        for device, stamps in by_device.items():
            if stamps[:1] == [first[device]]:
                del stamps[0]
        assert by_device == expected
    fresh = []
    for p in cluster.processes:
        v = await viewer_client(p, viewer_token, clients)
        assert await v.call("subscribe", {"bbox": BOX}) == {"ok": True}
        fresh.append(sorted((x["device"], x["ts"]) for x in await v.next("positions")))
    assert fresh == [sorted((device, ts[-1]) for device, ts in expected.items())] * len(fresh)


async def test_a_webhook_goes_out_once_for_the_cluster(
    cluster: Cluster, hooks: Hooks, clients: list[Client], db: asyncpg.Connection
) -> None:
    path = f"/{len(cluster.processes)}"
    fleet = uid("fleet")
    t = now_ms() - 10_000
    for p in cluster.processes:  # a device entering the depot through each process
        device, token = await add_device(p, fleet)
        d = await device_client(p, token, clients)
        assert (await d.call("fix", [{**OUT, "ts": t}, {**IN, "ts": t + 1000}]))["accepted"] == 2
    events = [
        r["id"]
        for r in await db.fetch(
            "SELECT e.id FROM events e WHERE e.fleet = $1 AND e.type = 'enter' ORDER BY e.id", fleet
        )
    ]
    assert len(events) == len(cluster.processes)
    await until(lambda: _settled(db, events))  # every row delivered: none can go out again
    posts = Counter(event for event, _ in hooks.at(path) if event in events)
    assert posts == Counter(events), posts


async def _settled(db: asyncpg.Connection, events: list[int]) -> bool:
    states = await db.fetch("SELECT state FROM webhook_outbox WHERE event_id = ANY($1::bigint[])", events)
    return len(states) == len(events) and all(r["state"] == "delivered" for r in states)


class Streamer:
    """A device streaming fixes with acks, as a phone does: on a lost connection it connects to another live
    process of the cluster and sends the unacked fix again. Its first connection holds every message's ack
    (a message on it is handed over, never acked); later connections ack at once."""

    def __init__(
        self, cluster: Cluster, home: int, device: str, token: str, fixes: list[dict[str, Any]]
    ) -> None:
        self.cluster, self.at, self.device, self.token, self.fixes = cluster, home, device, token, fixes
        self.acked: list[int] = []  # ts of the fixes acked
        self.messages: list[tuple[int, str]] = []  # (connection number, message id) as received
        self.connections = 0
        self.sio: socketio.AsyncClient | None = None
        self.release = asyncio.Event()  # lets the first connection's held message handlers return

    async def _connect(self) -> socketio.AsyncClient:
        while True:
            p = self.cluster.processes[self.at % len(self.cluster.processes)]
            if p.process.poll() is None:
                break
            self.at += 1
        sio = socketio.AsyncClient(reconnection=False)
        self.connections += 1
        number = self.connections

        async def on_message(data: Any) -> None:
            self.messages.append((number, data["id"]))
            if number == 1:
                await self.release.wait()

        sio.on("message", on_message, namespace="/device")
        await sio.connect(p.url, namespaces=["/device"], auth={"token": self.token}, transports=["websocket"])
        return sio

    async def run(self, pause_s: float) -> None:
        i = 0
        while i < len(self.fixes):
            if self.sio is None:
                try:
                    self.sio = await self._connect()
                except socketio.exceptions.ConnectionError:
                    self.at += 1
                    continue
            try:
                ack = await self.sio.call("fix", self.fixes[i], namespace="/device", timeout=5)
            except (socketio.exceptions.SocketIOError, OSError):
                await self.sio.disconnect()
                self.sio = None
                self.at += 1  # the process is gone: another one
                continue
            if ack.get("retry"):
                await asyncio.sleep(0.05)
                continue
            assert ack["accepted"] + ack["duplicates"] == 1, ack
            self.acked.append(self.fixes[i]["ts"])
            i += 1
            await asyncio.sleep(pause_s)

    async def close(self) -> None:
        self.release.set()
        if self.sio is not None:
            await self.sio.disconnect()


def _connected(s: Streamer) -> bool:
    return s.sio is not None


def path_fixes(start: int, count: int, every: int) -> list[dict[str, Any]]:
    """`count` fixes a second apart from `start`: `every` outside the depot, `every` inside, and so on."""
    return [{**(OUT if (i // every) % 2 == 0 else IN), "ts": start + i * 1000} for i in range(count)]


def implied_events(fixes: list[dict[str, Any]]) -> list[tuple[str, str, int]]:
    """(type, rule, ts) of the depot events a device's fixes imply, in time order (first fix outside)."""
    out, inside = [], False
    for f in sorted(fixes, key=lambda f: f["ts"]):
        now = f["lat"] == IN["lat"]
        if now != inside:
            out.append(("enter", "arrive", f["ts"]) if now else ("exit", "leave", f["ts"]))
        inside = now
    return out


@pytest.mark.timeout(240)
@pytest.mark.parametrize("size", [2, 3])
async def test_a_process_killed_under_load_loses_nothing(
    size: int, database_url: str, hooks: Hooks, tmp_path: Path, db: asyncpg.Connection
) -> None:
    path = f"/killed-{size}"
    fleet = uid("fleet")
    per_process, count = 2, 60
    start_ts = now_ms() - 3_600_000
    with start(database_url, tmp_path, size, hooks.url + path) as cluster:
        victim = cluster.processes[0]
        streamers = []
        for i in range(per_process * size):
            device, token = await add_device(victim, fleet)
            streamers.append(Streamer(cluster, i % size, device, token, path_fixes(start_ts, count, 4)))
        on_victim = [s for s in streamers if s.at == 0]
        viewer_token = await add_viewer(victim, [fleet])
        running = [asyncio.create_task(s.run(pause_s=0.03)) for s in streamers]
        try:
            # Under load: a message handed to each device on the victim (never acked there), then SIGKILL.
            handed = {}
            for s in on_victim:
                await holds(partial(_connected, s))
                handed[s.device] = await _send(cluster.processes[-1], viewer_token, s.device, "handed")
            await holds(lambda: all(len(m.messages) == 1 for m in on_victim))
            await holds(lambda: all(len(m.acked) >= count // 3 for m in streamers))
            victim.stop(signal.SIGKILL)
            queued = {
                s.device: await _send(cluster.processes[-1], viewer_token, s.device, "queued")
                for s in on_victim
            }
            await asyncio.wait_for(asyncio.gather(*running), 120)
        finally:
            for task in running:
                task.cancel()
            for s in streamers:
                await s.close()

        for s in streamers:
            assert s.acked == [f["ts"] for f in s.fixes]  # every fix acked in the end (resent after the kill)
            stored = [r[0] for r in await db.fetch(_STORED, s.device)]
            assert stored == s.acked, s.device
        assert all(s.connections >= 2 for s in on_victim)
        # Undelivered messages: handed on the victim (unacked) and sent after it died, delivered in order on
        # the device's next connection, by the process that holds it now, and acked there.
        for s in on_victim:
            later = [m for n, m in s.messages if n > 1]
            assert later[:2] == [handed[s.device], queued[s.device]], s.messages
            await until(partial(_acked, cluster.processes[-1], viewer_token, s.device))
        # Fence events: exactly those the fixes imply, none twice, none missed.
        for s in streamers:
            rows = await db.fetch(_EVENTS, s.device)
            assert [tuple(r) for r in rows] == implied_events(s.fixes), s.device
        # Webhooks: each enter event POSTed once by the cluster; a row the victim had leased goes out when
        # its lease ends.
        enters = [r[0] for r in await db.fetch(_ENTERS, fleet)]
        assert len(enters) == len(streamers) * len(implied_events(streamers[0].fixes)) // 2
        await until(lambda: _settled(db, enters), timeout=LEASE_S + 30)
        posts = Counter(hooks.at(path))
        assert {event for event, _ in posts} == set(enters)
        assert len(posts) == len(enters), posts  # one outbox row (delivery id) per event
        # Delivery is at least once: a POST the victim made but was killed before recording is repeated by a
        # survivor under the same delivery id (receivers dedupe on it). The victim POSTs one URL's rows one at
        # a time, so at most one row can be caught that way; every other event arrives exactly once.
        repeated = [key for key, n in posts.items() if n > 1]
        assert len(repeated) <= 1 and all(posts[key] == 2 for key in repeated), posts
        for survivor in cluster.processes[1:]:
            survivor.check_alive()
            assert survivor.log_error_samples() == []


_STORED = "SELECT (extract(epoch FROM ts) * 1000)::bigint FROM fixes WHERE device_id = $1 ORDER BY ts"
_EVENTS = "SELECT type, rule_id, ts FROM events WHERE device_id = $1 ORDER BY ts, id"
_ENTERS = "SELECT id FROM events WHERE fleet = $1 AND type = 'enter' ORDER BY id"


async def _send(p: ServerProcess, token: str, device: str, body: Any) -> str:
    async with web_client(base_url=p.url) as http:
        r = await http.post(f"/api/devices/{device}/messages", json={"body": body}, headers=auth(token))
    assert r.status_code == 201, r.text
    return str(r.json()["id"])
