"""The load generator of `tracker bench ingest`, in its own process (`python -m tracker.tools.bench.ingest
--worker`): settings on stdin, one JSON line of figures on stdout.

Policy: every device sends sequentially, its next event only after the previous ack (or, in the direct
mode, the previous INSERT), so that an ack's latency is the server's and nothing queues in the client.
Fix times are 1 ms apart from the run's own `ts_base`, so that runs and baselines never collide. Only
what was acked inside the window counts; busy answers and errors are retried with the same rows and
counted apart.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from tracker.tools.bench.probe import Probe, Snapshot, ingest_metric_deltas
from tracker.tools.bench.procfs import CLK_TCK
from tracker.tools.bench.report import BenchError, percentile, progress, rounded

WORKER_FLAG = "--worker"
ACK_TIMEOUT_S = 30.0
DRAIN_TIMEOUT_S = 60.0
_OUR_CPU_KEYS = ("loadgen_cpu_s", "server_cpu_s", "postgres_backend_cpu_s", "postgres_background_cpu_s")

# The baseline's statements: the same rows as the tracker's, into the copy of `fixes` the bench made.
_INSERT_ONE = """
INSERT INTO bench_fixes (device_id, ts, geom, speed, heading, accuracy, cell)
VALUES ($1, timestamptz 'epoch' + $2::bigint * interval '1 millisecond',
        ST_SetSRID(ST_MakePoint($3, $4), 4326), $5, $6, $7, 0)
ON CONFLICT (device_id, ts) DO NOTHING
"""

_INSERT_MANY = """
INSERT INTO bench_fixes (device_id, ts, geom, speed, heading, accuracy, cell)
SELECT d, timestamptz 'epoch' + t * interval '1 millisecond', ST_SetSRID(ST_MakePoint(x, y), 4326),
       s, h, a, 0
FROM unnest($1::text[], $2::bigint[], $3::float8[], $4::float8[], $5::real[], $6::real[], $7::real[])
     AS u(d, t, x, y, s, h, a)
ON CONFLICT (device_id, ts) DO NOTHING
"""


# send(device index, fix rows) -> (accepted, duplicates, rejection messages, busy)
Send = Callable[[int, list[dict[str, Any]]], Awaitable[tuple[int, int, list[str], bool]]]


def _fix_rows(device: int, start: int, count: int, ts_base: int) -> list[dict[str, Any]]:
    """Fixes `start`.. of one device: 1 ms apart from `ts_base` on, creeping north-east."""
    return [
        {
            "ts": ts_base + k,
            "lat": 52.0 + device * 0.01 + k * 1e-6,
            "lon": 13.0 + device * 0.01 + k * 1.5e-6,
            "speed": 12.5,
            "heading": 56.0,
            "accuracy": 4.0,
        }
        for k in range(start, start + count)
    ]


@dataclass
class _Tally:
    # (sent, acked, accepted, duplicates, rejected) per acked event
    acks: list[tuple[float, float, int, int, int]] = field(default_factory=list)
    busy: list[float] = field(default_factory=list)
    errors: list[tuple[float, str]] = field(default_factory=list)
    samples: list[str] = field(default_factory=list)
    ts_exhausted: int = 0

    def note(self, message: str) -> None:
        if len(self.samples) < 5 and message not in self.samples:
            self.samples.append(message)


async def _drive(
    config: dict[str, Any], send: Send, probe: Probe, label: str
) -> tuple[_Tally, Snapshot, Snapshot]:
    """Every device sends sequentially until the window closes; the tally and the window's ends."""
    n = len(config["devices"])
    batch: int = config["batch"]
    ts_base: int = config["ts_base"]
    ts_span: int = config["ts_span"]
    stop = asyncio.Event()
    tally = _Tally()

    async def device(i: int) -> None:
        k = 0
        while not stop.is_set():
            if k + batch > ts_span:
                tally.ts_exhausted += 1
                return
            rows = _fix_rows(i, k, batch, ts_base)
            sent = time.perf_counter()
            try:
                accepted, duplicates, rejected, busy = await send(i, rows)
            except Exception as exc:  # counted and reported; the same rows are sent again
                tally.errors.append((time.perf_counter(), f"{type(exc).__name__}: {exc}"))
                tally.note(f"{type(exc).__name__}: {exc}"[:300])
                await asyncio.sleep(0.1)  # back off before retrying
                continue
            acked = time.perf_counter()
            if busy:
                tally.busy.append(acked)
                await asyncio.sleep(0.01)  # back off before retrying the same rows
                continue
            for message in rejected:
                tally.note(f"rejected: {message}"[:300])
            tally.acks.append((sent, acked, accepted, duplicates, len(rejected)))
            k += batch

    tasks = [asyncio.create_task(device(i)) for i in range(n)]
    try:
        started = time.perf_counter()
        await asyncio.sleep(config["warmup"])  # warm-up: a fixed duration, not counted
        await probe.find_postgres()
        begin = await probe.snapshot()
        progress(f"{label}: warm-up {begin.t - started:.1f} s done; measuring {config['seconds']:g} s")
        await asyncio.sleep(max(0.0, begin.t + config["seconds"] - time.perf_counter()))
        end = await probe.snapshot()
        stop.set()
        done, pending = await asyncio.wait(tasks, timeout=DRAIN_TIMEOUT_S)
        for task in done:
            if task.exception() is not None:
                tally.note(f"device task failed: {task.exception()!r}"[:300])
        if pending:
            tally.note(
                f"{len(pending)} devices still waiting for an ack {DRAIN_TIMEOUT_S:.0f} s after the end"
            )
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return tally, begin, end


def _summarize(
    mode: str, tally: _Tally, begin: Snapshot, end: Snapshot, kinds: dict[int, str]
) -> dict[str, Any]:
    wall = end.t - begin.t
    inside = [a for a in tally.acks if begin.t <= a[1] < end.t]
    latencies = sorted((a[1] - a[0]) * 1000 for a in inside)
    accepted = sum(a[2] for a in inside)
    rate_key = "fixes_per_s" if mode == "tracker" else "rows_per_s"
    result: dict[str, Any] = {
        rate_key: round(accepted / wall, 1),
        "events_per_s": round(len(inside) / wall, 1),
        "p50_ms": rounded(percentile(latencies, 50)),
        "p90_ms": rounded(percentile(latencies, 90)),
        "p99_ms": rounded(percentile(latencies, 99)),
        "max_ms": rounded(latencies[-1] if latencies else None),
        "mean_ms": rounded(sum(latencies) / len(latencies) if latencies else None),
        "measured_s": round(wall, 3),
        "events": len(inside),
        "accepted": accepted,
        "duplicates": sum(a[3] for a in inside),
        "rejected": sum(a[4] for a in inside),
        "busy": sum(1 for t in tally.busy if begin.t <= t < end.t),
        "errors": sum(1 for t, _ in tally.errors if begin.t <= t < end.t),
        "errors_total": len(tally.errors),
        "devices_out_of_ts_budget": tally.ts_exhausted,
        "loadgen_cpu_s": round(end.self_cpu - begin.self_cpu, 3),
        "loadgen_cpu_share": round((end.self_cpu - begin.self_cpu) / wall, 3),
    }
    if begin.server_cpu is not None and end.server_cpu is not None:
        result["server_cpu_s"] = round(end.server_cpu - begin.server_cpu, 3)
        result["server_cpu_share"] = round((end.server_cpu - begin.server_cpu) / wall, 3)
    for kind in ("backend", "background"):
        deltas = [
            after - before
            for pid, before in begin.pg_cpu.items()
            if kinds.get(pid) == kind and before is not None and (after := end.pg_cpu.get(pid)) is not None
        ]
        result[f"postgres_{kind}_cpu_s"] = round(sum(deltas), 3) if deltas else None
    if begin.machine and end.machine:
        busy = (end.machine[0] - begin.machine[0]) / CLK_TCK
        ours = sum(result.get(k) or 0.0 for k in _OUR_CPU_KEYS)
        result["machine_busy_cores"] = round(busy / wall, 3)
        result["machine_steal_cores"] = round((end.machine[1] - begin.machine[1]) / CLK_TCK / wall, 3)
        # busy CPU not spent by the load generator, the server or PostgreSQL: other tenants' load
        result["other_busy_cores"] = round(max(0.0, busy - ours) / wall, 3)
    if begin.metrics and end.metrics:
        result["server_metrics"] = ingest_metric_deltas(begin.metrics, end.metrics, wall)
    if tally.samples:
        result["samples"] = tally.samples
    return result


async def _tracker_load(config: dict[str, Any]) -> dict[str, Any]:
    import socketio

    label = f"tracker batch={config['batch']}"
    clients = [socketio.AsyncClient(reconnection=False) for _ in config["tokens"]]

    async def connect(client: Any, token: str) -> None:
        await client.connect(
            config["url"],
            namespaces=["/device"],
            auth={"token": token},
            transports=["websocket"],
            wait_timeout=30,
        )

    async def send(i: int, rows: list[dict[str, Any]]) -> tuple[int, int, list[str], bool]:
        payload: Any = rows[0] if len(rows) == 1 else rows
        ack = await clients[i].call("fix", payload, namespace="/device", timeout=ACK_TIMEOUT_S)
        if not isinstance(ack, dict):
            raise BenchError(f"unexpected ack {ack!r:.200}")
        if ack.get("retry"):
            return 0, 0, [], True
        if "error" in ack:
            raise BenchError(f"event refused: {ack['error']}")
        rejected = [str(r.get("error")) for r in ack.get("rejected", [])]
        return int(ack["accepted"]), int(ack["duplicates"]), rejected, False

    probe = Probe(config["database_url"], config["pid"], config["url"])
    await probe.open()
    try:
        progress(f"{label}: connecting {len(clients)} devices")
        await asyncio.wait_for(
            asyncio.gather(*(connect(c, t) for c, t in zip(clients, config["tokens"], strict=True))),
            timeout=60,
        )
        tally, begin, end = await _drive(config, send, probe, label)
        return _summarize("tracker", tally, begin, end, probe.pg_kind)
    finally:
        await asyncio.gather(*(c.disconnect() for c in clients), return_exceptions=True)
        await probe.close()


async def _direct_load(config: dict[str, Any]) -> dict[str, Any]:
    label = f"direct insert batch={config['batch']}"
    ids: list[str] = config["devices"]
    sql = _INSERT_ONE if config["batch"] == 1 else _INSERT_MANY
    conns: list[Any] = []

    async def send(i: int, rows: list[dict[str, Any]]) -> tuple[int, int, list[str], bool]:
        if len(rows) == 1:
            r = rows[0]
            args: tuple[Any, ...] = (
                ids[i],
                r["ts"],
                r["lon"],
                r["lat"],
                r["speed"],
                r["heading"],
                r["accuracy"],
            )
        else:
            args = (
                [ids[i]] * len(rows),
                [r["ts"] for r in rows],
                [r["lon"] for r in rows],
                [r["lat"] for r in rows],
                [r["speed"] for r in rows],
                [r["heading"] for r in rows],
                [r["accuracy"] for r in rows],
            )
        status: str = await conns[i].execute(sql, *args, timeout=ACK_TIMEOUT_S)
        accepted = int(status.rsplit(" ", 1)[1])  # "INSERT 0 <rows>"
        return accepted, len(rows) - accepted, [], False

    probe = Probe(config["database_url"], None, None)
    await probe.open()
    try:
        progress(f"{label}: opening {len(ids)} connections")
        conns.extend(
            await asyncio.wait_for(
                asyncio.gather(*(asyncpg.connect(config["database_url"], timeout=30) for _ in ids)),
                timeout=60,
            )
        )
        tally, begin, end = await _drive(config, send, probe, label)
        return _summarize("direct", tally, begin, end, probe.pg_kind)
    finally:
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)
        await probe.close()


async def _worker(config: dict[str, Any]) -> dict[str, Any]:
    if config["mode"] == "tracker":
        return await _tracker_load(config)
    return await _direct_load(config)


def worker_main() -> None:
    """The hidden entry of the load generator: settings on stdin, one JSON line on stdout."""
    config = json.loads(sys.stdin.read())
    result = asyncio.run(_worker(config))
    sys.stdout.write(json.dumps(result) + "\n")
