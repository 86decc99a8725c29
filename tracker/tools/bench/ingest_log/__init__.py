"""`tracker bench ingest-log`: what an ingest log between the sockets and PostgreSQL would cost, measured
on loopback against the write path it would stand in front of.

What it measures, per batch size, in one run on one scratch database and one private nats-server:
- `postgres`: batches of fixes written for `--seconds` through the server's own `write_fixes` (arrays for
  small batches, COPY for large ones) on `--writers` connections, each commit waiting for its WAL flush;
  the baseline, and what acks a device today.
- `postgres_async_commit`: the same with `synchronous_commit = off`, because JetStream acks a publish
  once the message is written to its file, without an fsync of its own (nats-server 2.9 has no setting
  for one; a cluster gets durability from three replicas instead).
- `log_publish`: the same number of batches published to a JetStream stream with file storage, one
  message per device partition (`fixes.<p>`, a stable hash of the device) that a batch touches, awaited
  for their acks: what would ack a device with a log in front of PostgreSQL.
- `log_drain`: one pull consumer per partition writes those fixes into PostgreSQL through `write_fixes`,
  up to 5,000 fixes per transaction, and acks after COMMIT: the work the log adds, not removes.

Each side reports fixes/s, write (or publish) latency, and CPU seconds and microseconds per fix of this
process, nats-server and PostgreSQL's backends and background processes; `*_vs_postgres` are rates and
CPU per fix against the baseline. This process plays both the socket server and the consumer, so its CPU
is the Python client's cost (nats-py or asyncpg), not the tracker's handling of a socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from tracker.tools.bench.report import BenchError

try:
    import nats
except ModuleNotFoundError:  # a bench-only dependency, not the server's
    raise BenchError("tracker bench ingest-log needs nats-py: pip install -e '.[bench]'") from None
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig

from tracker.store.database import DAY_MS, Database
from tracker.store.fixes import write_fixes
from tracker.tools.bench.flags import check_range, int_list
from tracker.tools.bench.ingest_log.nats_server import NatsServer
from tracker.tools.bench.ingest_log.sides import (
    STREAM,
    Fixes,
    drain_side,
    postgres_side,
    publish_side,
    run_batches,
)
from tracker.tools.bench.probe import Probe
from tracker.tools.bench.report import DEFAULT_BASE_URL, machine_facts, progress, rounded, write_report
from tracker.tools.bench.scratch import scratch_database

SPAN_MS = 3600 * 1000  # fix times of one side of one batch size; fix k of a device is base + k ms
SIDES = ("warmup", "postgres", "postgres_async_commit", "log")


def bench_ingest_log(
    database_url: str | None,
    seconds: float,
    devices: int,
    batch: str,
    partitions: int,
    writers: int,
    out: str | None,
) -> str:
    """Run the ingest-log benchmark; return its JSON report (also written to `out` when given)."""
    sizes = int_list("--batch", batch, 1, 5000, "10,1000", "sizes")
    check_range("--seconds", seconds, 0.5, 600)
    check_range("--devices", devices, 1, 100_000)
    check_range("--partitions", partitions, 1, 256)
    check_range("--writers", writers, 1, 32)
    base_url = database_url or DEFAULT_BASE_URL
    with (
        scratch_database(base_url) as (db_url, pg),
        tempfile.TemporaryDirectory(prefix="tracker-bench-") as tmp,
    ):
        server = NatsServer(Path(tmp) / "nats")
        server.start()
        try:
            results = asyncio.run(_run(db_url, server, seconds, devices, sizes, partitions, writers))
        finally:
            server.stop()
    report = {
        "machine": {
            **machine_facts(),
            "loadavg_at_start": list(os.getloadavg()),
            **pg,
            "nats": server.version,
        },
        "settings": {
            "seconds": seconds,
            "devices": devices,
            "batches": sizes,
            "partitions": partitions,
            "writers": writers,
            "order": "per batch size: postgres, postgres_async_commit, log_publish, log_drain, one round",
            "stream": "JetStream, file storage, 1 replica, subjects fixes.<partition>, payload JSON arrays",
            "baseline": "tracker.store.fixes.write_fixes into the partitioned fixes table",
        },
        "results": results,
    }
    return write_report(report, out)


@dataclass
class _Run:
    """What every batch size of a run shares."""

    db: Database
    lazy: Database  # the same database, synchronous_commit off
    probe: Probe
    js: JetStreamContext
    server: NatsServer
    ids: list[str]
    base: int
    seconds: float
    partitions: int
    writers: int

    def fixes(self, r: int, size: int, side: str) -> Fixes:
        """The fixes of `side` for the `r`-th batch size: its own span of fix times."""
        return Fixes(self.ids, size, self.base + (r * len(SIDES) + SIDES.index(side)) * SPAN_MS)

    async def one_size(self, r: int, size: int) -> dict[str, Any]:
        warm = self.fixes(r, size, "warmup")

        async def warm_up(j: int) -> None:  # both pools' connections prepare their statements
            async with (self.db if j % 2 else self.lazy).pool.acquire() as conn:
                await write_fixes(conn, warm.batch_of(j))

        await run_batches(4 * self.writers, 2 * self.writers, warm_up)
        progress(f"batch={size}: postgres for {self.seconds:g} s")
        pg, batches = await postgres_side(
            self.db, self.probe, self.fixes(r, size, "postgres"), self.seconds, self.writers
        )
        progress(f"batch={size}: postgres {pg['fixes_per_s']:,.0f} fixes/s; now synchronous_commit off")
        lazy, _ = await postgres_side(
            self.lazy, self.probe, self.fixes(r, size, "postgres_async_commit"), self.seconds, self.writers
        )
        await self.js.add_stream(
            StreamConfig(name=STREAM, subjects=["fixes.*"], storage=StorageType.FILE, num_replicas=1)
        )
        progress(f"batch={size}: publishing the same {batches * size:,} fixes")
        log = self.fixes(r, size, "log")
        pub, sent = await publish_side(self.js, self.probe, log, batches, self.writers, self.partitions)
        self.server.check_alive()
        stored = (await self.js.stream_info(STREAM)).state
        pub["stream_bytes_per_fix"] = rounded(stored.bytes / max(1, pub["fixes"]), 1)
        progress(f"batch={size}: publish {pub['fixes_per_s']:,.0f} fixes/s; draining into PostgreSQL")
        drain = await drain_side(self.js, self.db, self.probe, sent, pub["fixes"] / max(1, pub["messages"]))
        await self.js.delete_stream(STREAM)
        progress(f"batch={size}: drain {drain['fixes_per_s']:,.0f} fixes/s")
        return _compare(size, pg, lazy, pub, drain)


async def _run(
    db_url: str,
    server: NatsServer,
    seconds: float,
    devices: int,
    sizes: Sequence[int],
    partitions: int,
    writers: int,
) -> list[dict[str, Any]]:
    now = int(time.time() * 1000)
    base = now - (len(sizes) * len(SIDES) + 1) * SPAN_MS
    async with contextlib.AsyncExitStack() as stack:
        db = await Database.connect(db_url, min_size=writers, max_size=writers)
        stack.push_async_callback(db.close)
        lazy = await asyncpg.create_pool(
            db_url, min_size=writers, max_size=writers, server_settings={"synchronous_commit": "off"}
        )
        stack.push_async_callback(lazy.close)
        probe = Probe(db_url, server.pid, None)
        await probe.open()
        stack.push_async_callback(probe.close)
        nc = await nats.connect(server.url, max_reconnect_attempts=0)
        stack.push_async_callback(nc.close)
        await db.ensure_partitions(set(range(base // DAY_MS, now // DAY_MS + 1)))
        ids = [f"bench-{i:05d}" for i in range(devices)]
        run = _Run(db, Database(lazy), probe, nc.jetstream(), server, ids, base, seconds, partitions, writers)
        return [await run.one_size(r, size) for r, size in enumerate(sizes)]
    raise AssertionError("unreachable")  # for mypy: AsyncExitStack may swallow exceptions


def _compare(
    size: int, pg: dict[str, Any], lazy: dict[str, Any], pub: dict[str, Any], drain: dict[str, Any]
) -> dict[str, Any]:
    def ratio(a: float | None, b: float | None) -> float | None:
        return rounded(a / b) if a is not None and b else None

    log_cpu = (pub["total_cpu_us_per_fix"] or 0.0) + (drain["total_cpu_us_per_fix"] or 0.0)
    return {
        "batch": size,
        "postgres": pg,
        "postgres_async_commit": lazy,
        "log_publish": pub,
        "log_drain": drain,
        "postgres_async_commit_vs_postgres": ratio(lazy["fixes_per_s"], pg["fixes_per_s"]),
        "log_publish_vs_postgres": ratio(pub["fixes_per_s"], pg["fixes_per_s"]),
        "log_publish_p99_vs_postgres": ratio(pub["write_p99_ms"], pg["write_p99_ms"]),
        "log_drain_vs_postgres": ratio(drain["fixes_per_s"], pg["fixes_per_s"]),
        "log_cpu_per_fix_vs_postgres": ratio(log_cpu, pg["total_cpu_us_per_fix"]),
    }
