"""The redis feed, in its own process (`--feed-worker`): `positions` events as the server's broadcaster
would emit them to room `all` of `/viewer`, published through python-socketio's write-only
`AsyncRedisManager` into the server's Socket.IO rooms: every interval, the newest position of each device
that moved."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from tracker.rooms import ALL_ROOM  # where a viewer of all fleets watching the whole world is
from tracker.settings import Settings
from tracker.tools.bench.line_protocol import answer, stdin_reader
from tracker.tools.bench.map.processes import rss_mb
from tracker.tools.bench.map.redis_server import REDIS_READY_TIMEOUT_S
from tracker.tools.bench.map.walk import FLEETS, Active, Walk, device_id
from tracker.tools.bench.procfs import self_cpu_s
from tracker.tools.bench.report import percentile, rounded

# The redis feed: the server's own defaults, so that its events look like the broadcaster's.
BROADCAST_INTERVAL_MS = int(Settings.model_fields["broadcast_interval_ms"].default)
H3_RESOLUTION = int(Settings.model_fields["h3_resolution"].default)
REDIS_NAMESPACE = "bench-map"  # the server's TRACKER_REDIS_NAMESPACE in the redis feed's run
SIO_CHANNEL = f"{REDIS_NAMESPACE}:socketio"  # where `tracker serve` puts its Socket.IO rooms' traffic
VIEWER_NAMESPACE = "/viewer"


class _CountingJson:
    """orjson for the write-only manager's messages, counting the bytes it publishes."""

    def __init__(self) -> None:
        self.bytes = 0

    def dumps(self, obj: Any, **_: Any) -> str:
        import orjson

        text = orjson.dumps(obj).decode()
        self.bytes += len(text)
        return text

    def loads(self, s: str | bytes, **_: Any) -> Any:
        import orjson

        return orjson.loads(s)


class _ErrorCount(logging.Handler):
    """python-socketio logs a failed publish and goes on: count those as errors."""

    def __init__(self, note: Callable[[str], None]) -> None:
        super().__init__(logging.ERROR)
        self.count = 0
        self._note = note

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        self._note(record.getMessage())


class _Feed:
    """`positions` events as the server's broadcaster would emit them for room `all`, straight into the
    server's Socket.IO rooms through Redis: every interval, the newest position of each device that moved."""

    def __init__(
        self, config: dict[str, Any], emit: Callable[[list[dict[str, Any]]], Awaitable[Any]]
    ) -> None:
        n = int(config["devices"])
        self.period = 1.0 / float(config["rate"])
        self.interval = float(config["interval_ms"]) / 1000
        self.walk = Walk(n, config.get("seed", 1))
        self.ids = [device_id(i) for i in range(n)]
        self.fleets = [FLEETS[i % len(FLEETS)] for i in range(n)]
        self.last = [0.0] * n
        self.placed = [False] * n
        self.devices_placed = 0
        self._emit = emit
        self.active = Active(n)
        self.events = self.positions = self.skipped = self.late_ticks = self.errors = 0
        self.lateness_ms: list[float] = []
        self.emit_ms: list[float] = []
        self.sizes: list[int] = []
        self.samples: list[str] = []

    def note(self, message: str) -> None:
        if len(self.samples) < 5 and message[:300] not in self.samples:
            self.samples.append(message[:300])

    def entry(self, i: int, now: float) -> dict[str, Any]:
        """Device i's next position, in the contract's shape."""
        import h3

        dt = now - self.last[i] if self.last[i] else self.period
        self.last[i] = now
        fix = self.walk.step(i, min(dt, 10 * self.period))
        lat, lon = fix["lat"], fix["lon"]
        if not self.placed[i]:
            self.placed[i] = True
            self.devices_placed += 1
        return {
            "device": self.ids[i],
            "fleet": self.fleets[i],
            "lat": lat,
            "lon": lon,
            "ts": fix["ts"],
            "speed": fix["speed"],
            "heading": fix["heading"],
            "cell": h3.latlng_to_cell(lat, lon, H3_RESOLUTION),
        }

    async def emit(self, entries: list[dict[str, Any]]) -> None:
        t0 = time.perf_counter()
        try:
            await self._emit(entries)
        except Exception as exc:  # counted; the feed goes on
            self.errors += 1
            self.note(f"{type(exc).__name__}: {exc}")
            return
        self.emit_ms.append((time.perf_counter() - t0) * 1000)
        self.events += 1
        self.positions += len(entries)
        self.sizes.append(len(entries))

    async def place(self) -> dict[str, Any]:
        """Every device once, over one period: one event per interval holding the next slice of devices."""
        n = len(self.ids)
        slices = max(1, round(self.period / self.interval))
        size = math.ceil(n / slices)
        t0 = time.perf_counter()
        events0 = self.events
        for j, first in enumerate(range(0, n, size)):
            await asyncio.sleep(max(0.0, t0 + j * self.interval - time.perf_counter()))
            now = time.perf_counter()
            await self.emit([self.entry(i, now) for i in range(first, min(n, first + size))])
        return {"ok": True, "seconds": round(time.perf_counter() - t0, 3), "events": self.events - events0}

    async def run(self) -> None:
        """With k devices active: at each interval's end, device i moves when its slot i/k of the period
        passed since the last tick; a tick more than one interval late is counted and the schedule moves on,
        and devices more than one full round behind are skipped (counted)."""
        async for k in self.active.rounds():
            start = time.perf_counter()
            done = tick = 0
            while not self.active.changed.is_set():
                tick += 1
                target = start + tick * self.interval
                await asyncio.sleep(max(0.0, target - time.perf_counter()))
                if self.active.changed.is_set():
                    break
                now = time.perf_counter()
                late = now - target
                self.lateness_ms.append(late * 1000)
                if late > self.interval:
                    self.late_ticks += 1
                    tick = int((now - start) / self.interval)
                due = int((now - start) / self.period * k)
                if due - done > k:
                    self.skipped += due - done - k
                    done = due - k
                if due > done:
                    await self.emit([self.entry(c % k, now) for c in range(done, due)])
                    done = due

    def stats(self, published_bytes: int) -> dict[str, Any]:
        lateness, emit_ms, sizes = sorted(self.lateness_ms), sorted(self.emit_ms), sorted(self.sizes)
        self.lateness_ms, self.emit_ms, self.sizes = [], [], []

        def dist(values: list[float]) -> dict[str, Any]:
            return {
                "p50": rounded(percentile(values, 50)),
                "p95": rounded(percentile(values, 95)),
                "max": rounded(values[-1] if values else None),
            }

        return {
            "active": self.active.count,
            "events": self.events,
            "positions": self.positions,
            "bytes": published_bytes,
            "skipped": self.skipped,
            "late_ticks": self.late_ticks,
            "errors": self.errors,
            "devices_placed": self.devices_placed,
            "lateness_ms": dist(lateness),
            "emit_ms": dist(emit_ms),
            "positions_per_event": {
                "p50": percentile(sizes, 50),
                "min": sizes[0] if sizes else None,
                "max": sizes[-1] if sizes else None,
            },
            "cpu_s": round(self_cpu_s(), 3),
            "rss_mb": rounded(rss_mb(), 1),
            "samples": list(self.samples),
        }


async def feed_worker() -> None:
    """Settings on the first stdin line, answered once Redis answers; then one command per line (place,
    send, stats, quit), each answered by one JSON line."""
    import redis.asyncio as aioredis
    import socketio

    reader = await stdin_reader()
    config = json.loads(await reader.readline())
    url = config["redis_url"]
    t0 = time.perf_counter()
    probe = aioredis.Redis.from_url(url)
    await probe.ping()
    codec = _CountingJson()
    log = logging.getLogger("tracker.tools.bench.map.feed")
    log.propagate = False
    manager = socketio.AsyncRedisManager(url, channel=SIO_CHANNEL, write_only=True, json=codec, logger=log)

    async def publish(entries: list[dict[str, Any]]) -> None:
        await manager.emit("positions", entries, room=ALL_ROOM, namespace=VIEWER_NAMESPACE)

    async def subscribers() -> int:
        """Processes listening on the channel: the server's manager subscribes at its first connection."""
        deadline = time.perf_counter() + REDIS_READY_TIMEOUT_S
        while True:
            count = int(dict(await probe.pubsub_numsub(SIO_CHANNEL)).get(SIO_CHANNEL.encode(), 0))
            if count or time.perf_counter() > deadline:
                return count
            await asyncio.sleep(0.1)

    feed = _Feed(config, publish)
    failures = _ErrorCount(feed.note)
    log.addHandler(failures)
    answer(
        {
            "event": "ready",
            "channel": SIO_CHANNEL,
            "ready_s": round(time.perf_counter() - t0, 3),
            "devices": len(feed.ids),
            "interval_ms": config["interval_ms"],
            "rss_mb": rounded(rss_mb(), 1),
        }
    )
    sender = asyncio.create_task(feed.run())
    try:
        while line := await reader.readline():
            cmd = json.loads(line)
            if cmd["cmd"] == "place":
                listening = await subscribers()
                if not listening:
                    answer({"error": f"nobody subscribed to {SIO_CHANNEL!r} on {url}: is the server on it?"})
                    continue
                answer({**await feed.place(), "subscribers": listening})
            elif cmd["cmd"] == "send":
                feed.active.set(int(cmd["active"]))
                answer({"ok": True, "active": feed.active.count})
            elif cmd["cmd"] == "stats":
                feed.errors += failures.count
                failures.count = 0
                answer(feed.stats(codec.bytes))
            elif cmd["cmd"] == "quit":
                break
    finally:
        sender.cancel()
        for client in (probe, manager.redis):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.aclose()
    answer({"event": "closed", "cpu_s": round(self_cpu_s(), 3)})
