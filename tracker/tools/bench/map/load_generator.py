"""The load generator of the server feed, in its own process (`--worker`): N Socket.IO device connections
sending one fix per period each, staggered, without waiting for acks but skipping a device's tick while
too many fixes are unacked (counted), so that an overloaded server shows as a lower acked rate."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from tracker.tools.bench.line_protocol import answer, stdin_reader
from tracker.tools.bench.map.processes import rss_mb
from tracker.tools.bench.map.walk import Active, Walk
from tracker.tools.bench.procfs import self_cpu_s
from tracker.tools.bench.report import percentile, rounded

MAX_IN_FLIGHT_DEVICE = 2  # a device with this many unacked fixes skips its tick (counted)
MAX_IN_FLIGHT = 500  # nor does any device send while this many fixes are unacked in all
CLIENT_PING_TOLERANCE_S = 60.0


@dataclass
class _Counters:
    sent: int = 0
    acks: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    retries: int = 0
    errors: int = 0
    skipped: int = 0
    late_cycles: int = 0
    disconnected: int = 0  # ticks of devices whose connection failed or was lost
    ack_ms: list[float] = field(default_factory=list)
    samples: list[str] = field(default_factory=list)

    def note(self, message: str) -> None:
        if len(self.samples) < 5 and message not in self.samples:
            self.samples.append(message[:300])


class _Fleet:
    """N Socket.IO device connections in one process, each sending one fix per period, staggered."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.url: str = config["url"]
        self.tokens: list[str] = config["tokens"]
        self.period = 1.0 / float(config["rate"])
        self.concurrency: int = config.get("connect_concurrency", 50)
        self.walk = Walk(len(self.tokens), config.get("seed", 1))
        self.clients: list[Any] = []
        self.in_flight = [0] * len(self.tokens)
        self.total_in_flight = 0
        self.stored = [False] * len(self.tokens)  # has an acked fix
        self.devices_stored = 0
        self.last_sent = [0.0] * len(self.tokens)
        self.counters = _Counters()
        self.active = Active(len(self.tokens))
        self.unplaced_only = False
        self._http: Any = None

    async def connect(self) -> dict[str, Any]:
        import aiohttp
        import socketio

        # One HTTP session for all (python-socketio makes one per client otherwise), without its
        # default limit of 100 connections.
        self._http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        sem = asyncio.Semaphore(self.concurrency)
        latencies: list[float] = []
        failures: list[str] = []

        async def one(token: str) -> Any:
            client = socketio.AsyncClient(reconnection=False, handle_sigint=False, http_session=self._http)
            async with sem:
                for _attempt in range(3):
                    t0 = time.perf_counter()
                    try:
                        await client.connect(
                            self.url,
                            namespaces=["/device"],
                            auth={"token": token},
                            transports=["websocket"],
                            wait_timeout=30,
                        )
                    except Exception as exc:  # retried, then counted
                        failures.append(f"{type(exc).__name__}: {exc}")
                        await asyncio.sleep(0.5)
                        continue
                    latencies.append((time.perf_counter() - t0) * 1000)
                    # python-engineio drops a client that has had nothing to send for 5 s past the ping
                    # interval: a server ping late by 5 s (a busy server) would kill an idle device. Give
                    # it 60 s; the server's own ping timeout still drops devices that do not answer.
                    client.eio.ping_timeout = max(client.eio.ping_timeout or 0, CLIENT_PING_TOLERANCE_S)
                    return client
            return None

        t0, cpu0 = time.perf_counter(), self_cpu_s()
        self.clients = list(await asyncio.gather(*(one(t) for t in self.tokens)))
        wall = time.perf_counter() - t0
        latencies.sort()
        connected = sum(1 for c in self.clients if c is not None)
        return {
            "event": "connected",
            "connected": connected,
            "failed": len(self.tokens) - connected,
            "connect_attempt_failures": len(failures),
            "failure_samples": sorted(set(failures))[:5],
            "connect_s": round(wall, 2),
            "connects_per_s": round(connected / wall, 1) if wall else None,
            "connect_ms_p50": rounded(percentile(latencies, 50)),
            "connect_ms_p95": rounded(percentile(latencies, 95)),
            "connect_cpu_s": round(self_cpu_s() - cpu0, 2),
            "rss_mb": rounded(rss_mb(), 1),
            "concurrency": self.concurrency,
        }

    def set_active(self, k: int, unplaced_only: bool = False) -> None:
        """Let the first k devices send (with `unplaced_only`, those without a stored fix yet)."""
        self.unplaced_only = unplaced_only
        self.active.set(k)

    async def run(self) -> None:
        """The sender: device i of the k active ones sends at i/k of each period."""
        async for k in self.active.rounds():
            start = time.perf_counter()
            while not self.active.changed.is_set():
                sent = 0
                while sent < k and not self.active.changed.is_set():
                    now = time.perf_counter()
                    due = min(k, int((now - start) / self.period * k) + 1)
                    while sent < due:
                        await self._send(sent, now)
                        sent += 1
                    await asyncio.sleep(0.005)
                start += self.period
                if time.perf_counter() > start + self.period:  # a whole period behind: skip ahead
                    self.counters.late_cycles += 1
                    start = time.perf_counter()
                await asyncio.sleep(max(0.0, start - time.perf_counter()))

    async def _send(self, i: int, now: float) -> None:
        c = self.counters
        client = self.clients[i]
        if self.unplaced_only and self.stored[i]:
            return
        if client is None or not client.connected:
            c.disconnected += 1
            return
        if self.in_flight[i] >= MAX_IN_FLIGHT_DEVICE or self.total_in_flight >= MAX_IN_FLIGHT:
            c.skipped += 1
            return
        dt = now - self.last_sent[i] if self.last_sent[i] else self.period
        self.last_sent[i] = now
        fix = self.walk.step(i, min(dt, 10 * self.period))
        sent_at = time.perf_counter()

        def on_ack(ack: Any = None) -> None:
            self.in_flight[i] -= 1
            self.total_in_flight -= 1
            c.ack_ms.append((time.perf_counter() - sent_at) * 1000)
            if not isinstance(ack, dict):
                c.errors += 1
                c.note(f"unexpected ack {ack!r}")
            elif ack.get("retry"):
                c.retries += 1
                c.note(f"retry: {ack.get('error')}")
            elif "error" in ack:
                c.errors += 1
                c.note(f"refused: {ack.get('error')}")
            else:
                c.acks += 1
                if not self.stored[i] and ack.get("accepted"):
                    self.stored[i] = True
                    self.devices_stored += 1
                c.accepted += int(ack.get("accepted", 0))
                c.duplicates += int(ack.get("duplicates", 0))
                c.rejected += len(ack.get("rejected", []))

        try:
            await client.emit("fix", fix, namespace="/device", callback=on_ack)
        except Exception as exc:  # a dropped connection: counted
            c.errors += 1
            c.note(f"{type(exc).__name__}: {exc}")
            return
        self.in_flight[i] += 1
        self.total_in_flight += 1
        c.sent += 1

    def stats(self) -> dict[str, Any]:
        c = self.counters
        ack_ms = sorted(c.ack_ms)
        c.ack_ms = []
        return {
            "sent": c.sent,
            "acks": c.acks,
            "accepted": c.accepted,
            "duplicates": c.duplicates,
            "rejected": c.rejected,
            "retries": c.retries,
            "errors": c.errors,
            "skipped": c.skipped,
            "late_cycles": c.late_cycles,
            "disconnected": c.disconnected,
            "in_flight": self.total_in_flight,
            "devices_stored": self.devices_stored,
            "connected": sum(1 for cl in self.clients if cl is not None and cl.connected),
            "ack_ms_p50": rounded(percentile(ack_ms, 50)),
            "ack_ms_p95": rounded(percentile(ack_ms, 95)),
            "ack_ms_max": rounded(ack_ms[-1] if ack_ms else None),
            "cpu_s": round(self_cpu_s(), 3),
            "rss_mb": rounded(rss_mb(), 1),
            "samples": list(c.samples),
        }

    async def close(self) -> None:
        await asyncio.gather(*(c.disconnect() for c in self.clients if c is not None), return_exceptions=True)
        if self._http is not None:
            await self._http.close()


async def load_generator_worker() -> None:
    """Settings on the first stdin line; then one command per line, each answered by one JSON line."""
    reader = await stdin_reader()
    fleet = _Fleet(json.loads(await reader.readline()))
    answer(await fleet.connect())
    sender = asyncio.create_task(fleet.run())
    try:
        while line := await reader.readline():
            cmd = json.loads(line)
            if cmd["cmd"] == "send":
                fleet.set_active(int(cmd["active"]), bool(cmd.get("unplaced_only")))
                answer({"ok": True, "active": fleet.active.count})
            elif cmd["cmd"] == "stats":
                answer(fleet.stats())
            elif cmd["cmd"] == "quit":
                break
    finally:
        sender.cancel()
        fleet.set_active(0)
        await fleet.close()
    answer({"event": "closed", "cpu_s": round(self_cpu_s(), 3)})
