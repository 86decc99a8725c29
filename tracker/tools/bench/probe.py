"""The two ends of a measured window: CPU counters of this process, the server and PostgreSQL's
processes, the whole machine, and the server's own metrics, read at the start and at the end.

Policy: a window's figures are differences between two `Snapshot`s, never running totals. PostgreSQL's
processes are found at the start of a window (`find_postgres`): the client backends of the bench's
database and the shared background processes (WAL writer, checkpointer, ...), not the probe's own.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx

from tracker.tools.bench.procfs import machine_jiffies, proc_cpu_s, self_cpu_s
from tracker.tools.bench.report import rounded


@dataclass
class Snapshot:
    """The counters at one instant (perf_counter `t`); None where a process could not be read."""

    t: float
    self_cpu: float
    server_cpu: float | None
    pg_cpu: dict[int, float | None]
    machine: tuple[int, int] | None
    metrics: dict[str, float] = field(default_factory=dict)


class Probe:
    """Reads the CPU counters (and the server's metrics) at the start and the end of a window."""

    def __init__(self, database_url: str, server_pid: int | None, server_url: str | None) -> None:
        self._database_url = database_url
        self._server_pid = server_pid
        self._server_url = server_url
        self._conn: Any = None
        self._http: httpx.AsyncClient | None = None
        self.pg_kind: dict[int, str] = {}  # pid -> "backend" (this database) or "background"

    async def open(self) -> None:
        self._conn = await asyncpg.connect(self._database_url, timeout=10)
        if self._server_url:
            self._http = httpx.AsyncClient(base_url=self._server_url, timeout=5)

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
        if self._http is not None:
            await self._http.aclose()

    async def find_postgres(self) -> None:
        """The PostgreSQL processes to watch: client backends of this database and the shared
        background processes (WAL writer, checkpointer, ...); not this probe's own backend."""
        rows = await self._conn.fetch(
            "SELECT pid, backend_type, datname = current_database() FROM pg_stat_activity "
            "WHERE pid <> pg_backend_pid() AND (datname = current_database() OR datname IS NULL)"
        )
        self.pg_kind = {
            int(r[0]): "backend" if r[1] == "client backend" and r[2] else "background" for r in rows
        }

    async def snapshot(self) -> Snapshot:
        snap = Snapshot(
            t=time.perf_counter(),
            self_cpu=self_cpu_s(),
            server_cpu=proc_cpu_s(self._server_pid) if self._server_pid else None,
            pg_cpu={pid: proc_cpu_s(pid) for pid in self.pg_kind},
            machine=machine_jiffies(),
        )
        if self._http is not None:
            try:
                snap.metrics = parse_metrics((await self._http.get("/metrics")).text)
            except httpx.HTTPError:
                pass
        return snap


def parse_metrics(text: str) -> dict[str, float]:
    """The unlabelled samples of a Prometheus text exposition, by name."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or "{" in line:
            continue
        parts = line.split()
        if len(parts) == 2:
            try:
                values[parts[0]] = float(parts[1])
            except ValueError:
                continue
    return values


def ingest_metric_deltas(before: dict[str, float], after: dict[str, float], wall: float) -> dict[str, Any]:
    """The server's own view of the window: transactions, their size and time, in-server ack time."""

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    batches = delta("tracker_ingest_batch_fixes_count")
    commit_s = delta("tracker_ingest_commit_seconds_sum")
    acks = delta("tracker_ingest_ack_seconds_count")
    return {
        "transactions": int(batches),
        "mean_fixes_per_transaction": rounded(
            delta("tracker_ingest_batch_fixes_sum") / batches if batches else None
        ),
        "mean_write_commit_ms": rounded(commit_s / batches * 1000 if batches else None),
        "write_commit_share_of_wall": rounded(commit_s / wall),
        "mean_in_server_ack_ms": rounded(
            delta("tracker_ingest_ack_seconds_sum") / acks * 1000 if acks else None
        ),
    }
