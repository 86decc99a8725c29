"""The measured sides of `tracker bench ingest-log`: the same fixes written straight into PostgreSQL,
published to a JetStream stream, and drained from the stream into PostgreSQL.

Policy: every side writes the same batches (batch j holds fixes j*b .. j*b+b-1; fix n is device n mod D,
1 ms after that device's previous fix), each side in its own span of fix times so that nothing is a
duplicate. `writers` batches are in flight at once on every side, as the server's ingest lanes are. A
side's figures are taken between two `Probe` snapshots: this process, nats-server and PostgreSQL's
processes (its backends on the bench database, and the shared background ones) separately.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from tracker.model import Fix
from tracker.store.database import Database
from tracker.store.fixes import fix_records, write_fixes
from tracker.tools.bench.probe import Probe, Snapshot
from tracker.tools.bench.procfs import CLK_TCK
from tracker.tools.bench.report import percentile, rounded

STREAM = "FIXES"
DRAIN_FIXES = 5000  # fixes a consumer writes per transaction at most: TRACKER_INGEST_BATCH_MAX's default
FETCH_TIMEOUT_S = 5.0
CELL = 0x8963A2D6553FFFF  # one H3 cell for every fix: cells are the server's work, not the write path's


@dataclass(frozen=True)
class Fixes:
    """The bench's fixes: `devices` ids, `batch` fixes per write, fix times from `ts_base` on."""

    devices: Sequence[str]
    batch: int
    ts_base: int

    def batch_of(self, j: int) -> list[Fix]:
        """Batch `j`: the next `batch` fixes in device round-robin order."""
        d = len(self.devices)
        out = []
        for n in range(j * self.batch, (j + 1) * self.batch):
            i, k = n % d, n // d
            out.append(
                Fix(
                    self.devices[i],
                    "bench",
                    self.ts_base + k,
                    52.0 + i * 1e-3 + k * 1e-6,
                    13.0 + i * 1e-3 + k * 1.5e-6,
                    speed=12.5,
                    heading=56.0,
                    accuracy=4.0,
                    cell=CELL,
                )
            )
        return out


def partition_of(device: str, partitions: int) -> int:
    """The stream partition of a device: a stable hash, so that one device's fixes stay in order."""
    return zlib.crc32(device.encode()) % partitions


def encode(fixes: Sequence[Fix]) -> bytes:
    """A message's payload: the fixes as JSON arrays in `fix_records`' column order."""
    return orjson.dumps(fix_records(fixes))


def decode(payload: bytes) -> list[Fix]:
    """The fixes of a message made by `encode`."""
    return [
        Fix(
            r[0],
            "",
            r[1],
            r[3],
            r[2],
            r[4],
            r[5],
            r[6],
            r[7],
            r[8],
            orjson.loads(r[9]) if r[9] else None,
            r[10],
        )
        for r in orjson.loads(payload)
    ]


async def run_batches(batches: int, writers: int, write: Callable[[int], Any]) -> list[float]:
    """Await `write(j)` for j in 0..batches-1, `writers` at a time, in order per writer; each one's ms."""
    latencies: list[float] = []
    counter = iter(range(batches))

    async def writer() -> None:
        for j in counter:
            t0 = time.perf_counter()
            await write(j)
            latencies.append((time.perf_counter() - t0) * 1000)

    await asyncio.gather(*(writer() for _ in range(writers)))
    return latencies


async def postgres_side(
    db: Database, probe: Probe, fixes: Fixes, seconds: float, writers: int
) -> tuple[dict[str, Any], int]:
    """Write batches through `write_fixes` for `seconds` (then let those in flight end); figures and the
    number of batches written."""
    done = stored = 0
    stop_at = 0.0
    latencies: list[float] = []

    async def writer() -> None:
        nonlocal done, stored
        while time.perf_counter() < stop_at:
            j = done
            done += 1
            batch = fixes.batch_of(j)
            async with db.pool.acquire() as conn:
                t0 = time.perf_counter()  # the write, not the wait for a connection (the drain has fewer)
                new = await write_fixes(conn, batch)
                latencies.append((time.perf_counter() - t0) * 1000)
            stored += len(new)  # not `+= len(await ...)`: that reads `stored` before the wait

    await probe.find_postgres()
    begin = await probe.snapshot()
    stop_at = begin.t + seconds
    await asyncio.gather(*(writer() for _ in range(writers)))
    end = await probe.snapshot()
    result = figures(done * fixes.batch, done, latencies, begin, end, probe.pg_kind)
    result["stored"] = stored  # new rows: every fix, unless spans of fix times overlapped
    return result, done


async def publish_side(
    js: JetStreamContext, probe: Probe, fixes: Fixes, batches: int, writers: int, partitions: int
) -> tuple[dict[str, Any], list[int]]:
    """Publish `batches` batches, one message per partition a batch touches, each batch's messages at
    once and awaited for their acks; figures, and the messages sent to each partition."""
    part = {d: partition_of(d, partitions) for d in fixes.devices}
    sent = [0] * partitions
    payload_bytes = 0

    async def write(j: int) -> None:
        nonlocal payload_bytes
        groups: dict[int, list[Fix]] = {}
        for fix in fixes.batch_of(j):
            groups.setdefault(part[fix.device], []).append(fix)
        payloads = {p: encode(group) for p, group in groups.items()}
        for p, payload in payloads.items():
            sent[p] += 1
            payload_bytes += len(payload)
        await asyncio.gather(*(js.publish(f"fixes.{p}", data, stream=STREAM) for p, data in payloads.items()))

    await probe.find_postgres()
    begin = await probe.snapshot()
    latencies = await run_batches(batches, writers, write)
    end = await probe.snapshot()
    result = figures(batches * fixes.batch, batches, latencies, begin, end, probe.pg_kind)
    result["messages"] = sum(sent)
    result["payload_bytes_per_fix"] = rounded(payload_bytes / (batches * fixes.batch), 1)
    return result, sent


async def drain_side(
    js: JetStreamContext, db: Database, probe: Probe, sent: Sequence[int], fixes_per_message: float
) -> dict[str, Any]:
    """One pull consumer per partition writes what was published into `fixes` through `write_fixes`, up
    to DRAIN_FIXES fixes per transaction, and acks (AckAll) the last message after COMMIT; figures."""
    per_fetch = max(1, min(1000, int(DRAIN_FIXES / max(1.0, fixes_per_message))))
    written = stored = 0
    latencies: list[float] = []

    async def consumer(p: int) -> None:
        nonlocal written, stored
        config = ConsumerConfig(
            ack_policy=AckPolicy.ALL, deliver_policy=DeliverPolicy.ALL, max_ack_pending=-1
        )
        sub = await js.pull_subscribe(f"fixes.{p}", durable=f"drain-{p}", stream=STREAM, config=config)
        left = sent[p]
        while left > 0:
            msgs = await sub.fetch(batch=min(left, per_fetch), timeout=FETCH_TIMEOUT_S)
            batch = [fix for msg in msgs for fix in decode(msg.data)]
            async with db.pool.acquire() as conn:
                t0 = time.perf_counter()  # the write, not the wait for a connection (the drain has fewer)
                new = await write_fixes(conn, batch)
                latencies.append((time.perf_counter() - t0) * 1000)
            stored += len(new)  # not `+= len(await ...)`: that reads `stored` before the wait
            await msgs[-1].ack()
            written += len(batch)
            left -= len(msgs)
        await sub.unsubscribe()

    await probe.find_postgres()
    begin = await probe.snapshot()
    await asyncio.gather(*(consumer(p) for p in range(len(sent)) if sent[p]))
    end = await probe.snapshot()
    result = figures(written, len(latencies), latencies, begin, end, probe.pg_kind)
    result["stored"] = stored
    result["messages_per_fetch_max"] = per_fetch
    return result


def figures(
    fixes: int,
    writes: int,
    latencies_ms: list[float],
    begin: Snapshot,
    end: Snapshot,
    kinds: dict[int, str],
) -> dict[str, Any]:
    """A side's rate, write latency and CPU (seconds, and microseconds per fix) from its two snapshots."""
    wall = end.t - begin.t
    lat = sorted(latencies_ms)
    cpu: dict[str, float | None] = {"bench_process": end.self_cpu - begin.self_cpu}
    if begin.server_cpu is not None and end.server_cpu is not None:
        cpu["nats_server"] = end.server_cpu - begin.server_cpu
    for kind in ("backend", "background"):
        deltas = [
            after - before
            for pid, before in begin.pg_cpu.items()
            if kinds.get(pid) == kind and before is not None and (after := end.pg_cpu.get(pid)) is not None
        ]
        cpu[f"postgres_{kind}"] = sum(deltas) if deltas else None
    ours = sum(v or 0.0 for v in cpu.values())
    result: dict[str, Any] = {
        "fixes": fixes,
        "fixes_per_s": round(fixes / wall, 1) if wall > 0 else None,
        "writes": writes,
        "seconds": round(wall, 3),
        "write_p50_ms": rounded(percentile(lat, 50)),
        "write_p99_ms": rounded(percentile(lat, 99)),
        "write_max_ms": rounded(lat[-1] if lat else None),
        "cpu_s": {k: rounded(v) for k, v in cpu.items()},
        "cpu_us_per_fix": {
            k: rounded(v / fixes * 1e6, 2) if v is not None and fixes else None for k, v in cpu.items()
        },
        "total_cpu_us_per_fix": rounded(ours / fixes * 1e6, 2) if fixes else None,
    }
    if begin.machine and end.machine and wall > 0:
        busy = (end.machine[0] - begin.machine[0]) / CLK_TCK
        result["machine_busy_cores"] = round(busy / wall, 3)
        result["other_busy_cores"] = round(max(0.0, busy - ours) / wall, 3)  # other tenants of the machine
    return result
