"""`tracker bench messages`: how fast a dispatcher's message reaches a device.

Policy: the real `tracker serve` runs in its own process on a scratch database; this process is the
dispatcher and the device (Socket.IO clients), and its CPU is reported. The baseline, measured in the
same run over the same device connection, is the device's own `fix` round trip (a store and an ack),
so the ratio says what a message costs beyond one committed write and one Socket.IO round trip.
Then a backlog of messages waits for an offline device, which connects and takes them all.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import socketio

from tracker.tools.bench.procfs import proc_cpu_s, self_cpu_s
from tracker.tools.bench.report import (
    DEFAULT_BASE_URL,
    BenchError,
    machine_facts,
    percentile,
    progress,
    write_report,
)
from tracker.tools.bench.scratch import scratch_database
from tracker.tools.bench.server import FLEET, register_devices, register_viewer, start_server

DEVICE = "bench-device"
VIEWER = "bench-dispatcher"
WARMUP = 50
TIMEOUT_S = 60.0


def bench_messages(database_url: str | None, count: int, backlog: int, out: str | None) -> str:
    """Run the message benchmark; return its JSON report (also written to `out` when given)."""
    if not 10 <= count <= 100_000 or not 1 <= backlog <= 100_000:
        raise BenchError("--messages must be 10..100000 and --backlog 1..100000")
    with (
        scratch_database(database_url or DEFAULT_BASE_URL) as (db_url, info),
        tempfile.TemporaryDirectory() as tmp,
    ):
        server = start_server(db_url, Path(tmp))
        try:
            (device_token,) = asyncio.run(register_devices(server, [DEVICE]))
            viewer_token = register_viewer(server, VIEWER, [FLEET])
            cpu_before, self_before = proc_cpu_s(server.pid), self_cpu_s()
            wall = time.monotonic()
            figures = asyncio.run(_measure(server.url, device_token, viewer_token, count, backlog))
            wall = time.monotonic() - wall
            cpu_after, self_after = proc_cpu_s(server.pid), self_cpu_s()
            server.check_alive()
            errors = server.log_error_lines()
        finally:
            server.stop()
    report = {
        "benchmark": "messages",
        "machine": {**machine_facts(), **info},
        **figures,
        "cpu": {
            "wall_s": round(wall, 2),
            "server_s": None if cpu_before is None or cpu_after is None else round(cpu_after - cpu_before, 2),
            "clients_s": round(self_after - self_before, 2),
            "note": "clients = this process: the dispatcher and the device",
        },
        "server_error_lines": errors,
    }
    return write_report(report, out)


class _Device:
    """The device's connection: the time each message arrived, by id, in arrival order."""

    def __init__(self) -> None:
        self.sio = socketio.AsyncClient(reconnection=False)
        self.arrived: dict[str, asyncio.Future[float]] = {}
        self.order: list[str] = []
        self.sio.on("message", self._message, namespace="/device")

    def arrival(self, message_id: str) -> asyncio.Future[float]:
        return self.arrived.setdefault(message_id, asyncio.get_running_loop().create_future())

    async def _message(self, data: dict[str, Any]) -> dict[str, bool]:
        self.order.append(data["id"])
        future = self.arrival(data["id"])
        if not future.done():
            future.set_result(time.perf_counter())
        return {"ok": True}

    async def connect(self, url: str, token: str) -> None:
        await self.sio.connect(url, namespaces=["/device"], auth={"token": token}, transports=["websocket"])


def _latencies(values: list[float]) -> dict[str, Any]:
    ms = sorted(v * 1000 for v in values)
    return {
        "count": len(ms),
        "p50_ms": round(percentile(ms, 50) or 0, 3),
        "p95_ms": round(percentile(ms, 95) or 0, 3),
        "p99_ms": round(percentile(ms, 99) or 0, 3),
    }


async def _measure(
    url: str, device_token: str, viewer_token: str, count: int, backlog: int
) -> dict[str, Any]:
    device = _Device()
    viewer = socketio.AsyncClient(reconnection=False)
    await device.connect(url, device_token)
    await viewer.connect(url, namespaces=["/viewer"], auth={"token": viewer_token}, transports=["websocket"])
    try:
        progress(f"baseline: {count} fix round trips")
        fix_rtt = []
        t_fix = int(time.time() * 1000) - 10 * count
        for i in range(WARMUP + count):
            t0 = time.perf_counter()
            ack = await device.sio.call(
                "fix", {"lat": 52.5, "lon": 13.4, "ts": t_fix + i}, namespace="/device"
            )
            if ack.get("accepted") != 1:
                raise BenchError(f"a baseline fix was not accepted: {ack}")
            if i >= WARMUP:
                fix_rtt.append(time.perf_counter() - t0)

        progress(f"{count} messages to a connected device")
        to_device, send_ack = [], []
        for i in range(WARMUP + count):
            t0 = time.perf_counter()
            ack = await viewer.call("send", {"device": DEVICE, "body": {"n": i}}, namespace="/viewer")
            t1 = time.perf_counter()
            if not ack.get("ok"):
                raise BenchError(f"send refused: {ack}")
            arrived = await asyncio.wait_for(device.arrival(ack["id"]), TIMEOUT_S)
            if i >= WARMUP:
                send_ack.append(t1 - t0)
                to_device.append(arrived - t0)

        progress(f"a backlog of {backlog} messages for an offline device")
        await device.sio.disconnect()
        t0 = time.perf_counter()
        ids = []
        for i in range(backlog):
            ack = await viewer.call("send", {"device": DEVICE, "body": {"backlog": i}}, namespace="/viewer")
            ids.append(ack["id"])
        queued_s = time.perf_counter() - t0
        device = _Device()
        t0 = time.perf_counter()
        await device.connect(url, device_token)
        await asyncio.wait_for(asyncio.gather(*(device.arrival(i) for i in ids)), TIMEOUT_S)
        delivered_s = time.perf_counter() - t0
        acked_s = await _all_acked(url, viewer_token, t0)
    finally:
        await viewer.disconnect()
        await device.sio.disconnect()
    message = _latencies(to_device)
    baseline = _latencies(fix_rtt)
    return {
        "connected": {
            "send_to_device": message,
            "send_ack": _latencies(send_ack),
            "baseline_fix_round_trip": baseline,
            "ratio_p50_to_baseline": round(message["p50_ms"] / baseline["p50_ms"], 2),
            "ratio_p95_to_baseline": round(message["p95_ms"] / baseline["p95_ms"], 2),
        },
        "offline_backlog": {
            "messages": backlog,
            "queue_s": round(queued_s, 3),
            "queued_per_s": round(backlog / queued_s, 1),
            "connect_to_all_received_s": round(delivered_s, 3),
            "received_per_s": round(backlog / delivered_s, 1),
            "connect_to_all_acked_s": round(acked_s, 3),
            "in_order": device.order == ids,
        },
    }


async def _all_acked(url: str, viewer_token: str, since: float) -> float:
    """Seconds from `since` until no message of the device is pending (polled, bounded)."""
    headers = {"Authorization": f"Bearer {viewer_token}"}
    deadline = time.perf_counter() + TIMEOUT_S
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=10) as http:
        while time.perf_counter() < deadline:
            r = await http.get(f"/api/devices/{DEVICE}/messages", params={"state": "pending", "limit": 1})
            if r.status_code == 200 and not r.json()["messages"]:
                return time.perf_counter() - since
            await asyncio.sleep(0.01)
    raise BenchError(f"messages still pending {TIMEOUT_S:.0f} s after the device connected")
