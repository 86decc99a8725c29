"""`tracker bench ingest`: how many GPS fixes per second the real server acks, and at what latency.

What it measures. A fresh database is created on a PostgreSQL server, the real `tracker serve` runs on
it as a subprocess, and N devices are registered through the admin API. For each batch size a load
generator, in its own process, opens N Socket.IO device connections; each device sends `fix` events one
after the other (send, wait for the ack, send the next), so an ack is the server's word that the fixes
are committed. After a short warm-up it counts, over a fixed window, the accepted fixes, events, busy
answers and errors, and the latency of each ack (send to ack). It also reads the CPU seconds spent in
the window by the load generator itself (getrusage), by the server process and by the PostgreSQL
processes (/proc), by the whole machine (/proc/stat), and the server's own ingest metrics (/metrics).

Why a baseline. The machine is small, shared and noisy: an absolute number such as "3000 fixes/s" says
little on its own and cannot be compared between runs or machines. So each run also measures, on the
same PostgreSQL server and right after the tracker (tracker, baseline, tracker, baseline, ...), the
same load shape written straight into PostgreSQL: N asyncpg connections, each inserting the same fix
rows one event per transaction (`INSERT ... ON CONFLICT DO NOTHING` into an unpartitioned table with
the same columns, key and indexes, PostGIS point included). `tracker_vs_direct_insert` is the ratio of
the two rates: what the server costs (or saves, since it groups concurrent events into one commit)
compared with devices that would write to the database themselves.

The load generator (`load`) runs as `python -m tracker.tools.bench.ingest --worker`, its settings on
stdin and its result as one JSON line on stdout, so that its CPU is its own and not counted in the
server's or the parent's.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncpg

from tracker.tools.bench.flags import check_range, int_list
from tracker.tools.bench.ingest.load import DRAIN_TIMEOUT_S, WORKER_FLAG
from tracker.tools.bench.report import (
    DEFAULT_BASE_URL,
    BenchError,
    machine_facts,
    progress,
    rounded,
    write_report,
)
from tracker.tools.bench.scratch import scratch_database
from tracker.tools.bench.server import register_devices, server_env, start_server
from tracker.tools.server_process import clean_env

WARMUP_S = 1.0
TS_SPAN_MS = 30 * 60 * 1000  # each tracker run (and its baseline) owns 30 minutes of fix times
STRIPE_FIXES = 100  # with --fence-stripes, a device crosses a stripe edge every this many fixes

# The baseline table: a copy of the columns, defaults, key and indexes of `fixes` (made by the server's
# migrations before this runs), without partitions.
_BASELINE_TABLE = "CREATE TABLE bench_fixes (LIKE fixes INCLUDING DEFAULTS INCLUDING INDEXES)"


def bench_ingest(
    database_url: str | None,
    seconds: float,
    devices: int,
    batch: str,
    out: str | None,
    server_settings: Sequence[str] = (),
    fence_stripes: bool = False,
) -> str:
    """Run the ingest benchmark; return its JSON report (also written to `out` when given).

    `server_settings` are `NAME=VALUE` pairs given to the server as `TRACKER_NAME` variables, to compare
    settings such as `INGEST_WRITERS=1` across runs.
    """
    sizes = parse_batches(batch)
    extra_env = server_env(server_settings)
    check_range("--seconds", seconds, 1, 600)
    check_range("--devices", devices, 1, 1000)
    report = run_ingest(database_url or DEFAULT_BASE_URL, seconds, devices, sizes, extra_env, fence_stripes)
    return write_report(report, out)


def parse_batches(text: str) -> list[int]:
    """`"1,50"` -> [1, 50]; each size between 1 and 1000 (the largest `fix` event)."""
    return int_list("--batch", text, 1, 1000, "1,50", "sizes")


def run_ingest(
    base_url: str,
    seconds: float,
    devices: int,
    sizes: Sequence[int],
    server_env: dict[str, str],
    fence_stripes: bool = False,
) -> dict[str, Any]:
    """Create the database, start the server, run tracker and baseline per batch size, clean up."""
    with scratch_database(base_url) as (db_url, pg):
        with tempfile.TemporaryDirectory(prefix="tracker-bench-") as tmp:
            stripes = _write_stripes(Path(tmp) / "geofences", devices) if fence_stripes else 0
            server = start_server(db_url, Path(tmp), server_env)
            try:
                ids = [f"bench-{i:04d}" for i in range(devices)]
                tokens = asyncio.run(register_devices(server, ids))
                pg["postgis"] = asyncio.run(_prepare_baseline(db_url))
                ts_base = int(time.time() * 1000) - (len(sizes) + 1) * TS_SPAN_MS
                results = []
                for i, size in enumerate(sizes):
                    common = {
                        "database_url": db_url,
                        "devices": ids,
                        "batch": size,
                        "seconds": seconds,
                        "warmup": WARMUP_S,
                        "ts_base": ts_base + i * TS_SPAN_MS,
                        "ts_span": TS_SPAN_MS,
                    }
                    tracker = _run_worker(
                        {**common, "mode": "tracker", "url": server.url, "tokens": tokens, "pid": server.pid}
                    )
                    server.check_alive()
                    direct = _run_worker({**common, "mode": "direct"})
                    ratio = tracker["fixes_per_s"] / direct["rows_per_s"] if direct["rows_per_s"] else None
                    progress(
                        f"batch={size}: tracker {tracker['fixes_per_s']:.0f} fixes/s, "
                        f"direct insert {direct['rows_per_s']:.0f} rows/s, ratio {_fmt(ratio)}"
                    )
                    results.append(
                        {
                            "batch": size,
                            "tracker": tracker,
                            "direct_insert": direct,
                            "tracker_vs_direct_insert": rounded(ratio),
                        }
                    )
            finally:
                server.stop()
            log_errors = server.log_error_lines()
    return {
        "machine": {**machine_facts(), "loadavg_at_start": list(os.getloadavg()), **pg},
        "settings": {
            "seconds": seconds,
            "warmup_s": WARMUP_S,
            "devices": devices,
            "batches": list(sizes),
            "fence_stripes": stripes,
            "server_env": server_env,
            "order": "per batch size: tracker then direct insert, back-to-back, one round",
            "sender": "each device sends sequentially: next event only after the previous ack",
            "transport": "python-socketio AsyncClient, websocket only, one process for all devices",
            "baseline": "one asyncpg connection per device, one INSERT ... ON CONFLICT DO NOTHING "
            "(autocommit) per event, unpartitioned table with the same columns, key and indexes",
        },
        "results": results,
        "server_log_error_lines": log_errors,
    }


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


async def _prepare_baseline(db_url: str) -> str:
    """Create the baseline table (PostGIS is there: the server's migration made it); its version."""
    conn = await asyncpg.connect(db_url, timeout=10)
    try:
        await conn.execute(_BASELINE_TABLE)
        version: str = await conn.fetchval("SELECT postgis_lib_version()")
    finally:
        await conn.close()
    return version


def _run_worker(config: dict[str, Any]) -> dict[str, Any]:
    """Run one load generator in its own process; its result."""
    timeout = config["warmup"] + config["seconds"] + DRAIN_TIMEOUT_S + 120
    process = subprocess.Popen(
        [sys.executable, "-m", "tracker.tools.bench.ingest", WORKER_FLAG],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=clean_env(),
    )
    try:
        out, _ = process.communicate(json.dumps(config).encode(), timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchError(
            f"the {config['mode']} load generator did not finish within {timeout:.0f} s"
        ) from None
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    if process.returncode != 0:
        raise BenchError(f"the {config['mode']} load generator exited with {process.returncode}")
    lines = out.decode().strip().splitlines()
    if not lines:
        raise BenchError(f"the {config['mode']} load generator printed no result")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def _write_stripes(folder: Path, devices: int) -> int:
    """Fence rules that make every device enter or exit a fence every STRIPE_FIXES fixes; return fences.

    Stripes are bands of latitude across every device's path (a device moves 1e-6° north per fix), so
    the server evaluates thousands of fences and commits fence state and events with 1 % of fixes.
    """
    width = STRIPE_FIXES * 1e-6
    east = 13.0 + devices * 0.01 + 0.2
    count = int((devices * 0.01 + 0.06) / (2 * width))
    lines = ["fences:"]
    for j in range(count):
        south = 52.0 + j * 2 * width
        north = south + width
        lines.append(
            f"  - {{id: s{j}, tags: [stripe], polygon: [[12.9, {south:.6f}], [{east:.4f}, {south:.6f}], "
            f"[{east:.4f}, {north:.6f}], [12.9, {north:.6f}]]}}"
        )
    lines += [
        "rules:",
        "  - {id: in, on: enter, fence_tags: [stripe]}",
        "  - {id: out, on: exit, fence_tags: [stripe]}",
        "",
    ]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "stripes.yaml").write_text("\n".join(lines))
    return count
