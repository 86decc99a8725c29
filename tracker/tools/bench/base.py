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

The load generator runs as `python -m tracker.tools.bench.base --worker`, its settings on stdin and its result
as one JSON line on stdout, so that its CPU is its own and not counted in the server's or the parent's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import platform
import resource
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import asyncpg
import httpx

from tracker.errors import TrackerError

DEFAULT_BASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
WARMUP_S = 1.0
READY_TIMEOUT_S = 60.0
ACK_TIMEOUT_S = 30.0
DRAIN_TIMEOUT_S = 60.0
FLEET = "bench"
_WORKER_FLAG = "--worker"
_TS_SPAN_MS = 30 * 60 * 1000  # each tracker run (and its baseline) owns 30 minutes of fix times
CLK_TCK = os.sysconf("SC_CLK_TCK")

# The baseline table: a copy of the columns, defaults, key and indexes of `fixes` (made by the server's
# migrations before this runs), without partitions.
_BASELINE_TABLE = "CREATE TABLE bench_fixes (LIKE fixes INCLUDING DEFAULTS INCLUDING INDEXES)"

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


class BenchError(TrackerError, RuntimeError):
    """The benchmark could not run: the database, the server or the load generator failed."""


def progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# --- the command -------------------------------------------------------------------------------------


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
    if not 1 <= seconds <= 600:
        raise BenchError(f"--seconds must be between 1 and 600; got {seconds:g}")
    if not 1 <= devices <= 1000:
        raise BenchError(f"--devices must be between 1 and 1000; got {devices}")
    report = run_ingest(database_url or DEFAULT_BASE_URL, seconds, devices, sizes, extra_env, fence_stripes)
    text = json.dumps(report, indent=2)
    if out:
        Path(out).write_text(text + "\n")
        progress(f"report written to {out}")
    return text


def server_env(server_settings: Sequence[str]) -> dict[str, str]:
    """`--server-setting NAME=VALUE` pairs as the server's `TRACKER_NAME` environment variables."""
    env: dict[str, str] = {}
    for pair in server_settings:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise BenchError(f"--server-setting takes NAME=VALUE such as INGEST_WRITERS=2; got {pair!r}")
        env["TRACKER_" + name.strip().upper()] = value
    return env


def machine_facts() -> dict[str, Any]:
    """What every benchmark report says about the machine it ran on."""
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


def parse_batches(text: str) -> list[int]:
    """`"1,50"` -> [1, 50]; each size between 1 and 1000 (the largest `fix` event)."""
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise BenchError(f"--batch must be comma-separated integers such as 1,50; got {text!r}") from None
    if not sizes or any(not 1 <= s <= 1000 for s in sizes):
        raise BenchError(f"--batch sizes must be between 1 and 1000; got {text!r}")
    return sizes


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
            server = _Server.start(db_url, Path(tmp), server_env)
            try:
                ids = [f"bench-{i:04d}" for i in range(devices)]
                tokens = server.register(ids)
                pg["postgis"] = asyncio.run(_prepare_baseline(db_url))
                ts_base = int(time.time() * 1000) - (len(sizes) + 1) * _TS_SPAN_MS
                results = []
                for i, size in enumerate(sizes):
                    common = {
                        "database_url": db_url,
                        "devices": ids,
                        "batch": size,
                        "seconds": seconds,
                        "warmup": WARMUP_S,
                        "ts_base": ts_base + i * _TS_SPAN_MS,
                        "ts_span": _TS_SPAN_MS,
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
                            "tracker_vs_direct_insert": _round(ratio),
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


def _round(x: float | None, digits: int = 3) -> float | None:
    return None if x is None else round(x, digits)


@contextlib.contextmanager
def scratch_database(base_url: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """A new database on the server at `base_url`, dropped (with force) on exit: its URL and server facts."""
    name = f"tracker_bench_{secrets.token_hex(4)}"
    progress(f"creating database {name}")
    info = asyncio.run(_create_database(base_url, name))
    try:
        yield _database_url(base_url, name), info
    finally:
        progress(f"dropping database {name}")
        asyncio.run(_admin(base_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _database_url(base_url: str, name: str) -> str:
    return urlsplit(base_url)._replace(path="/" + name).geturl()


async def _admin(base_url: str, sql: str) -> None:
    conn = await asyncpg.connect(base_url, timeout=10)
    try:
        await conn.execute(sql, timeout=60)
    finally:
        await conn.close()


async def _create_database(base_url: str, name: str) -> dict[str, Any]:
    try:
        conn = await asyncpg.connect(base_url, timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        raise BenchError(f"cannot connect to PostgreSQL at {base_url}: {exc}") from exc
    try:
        info = {
            "postgres": await conn.fetchval("SHOW server_version"),
            "synchronous_commit": await conn.fetchval("SHOW synchronous_commit"),
            "fsync": await conn.fetchval("SHOW fsync"),
        }
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return info


async def _prepare_baseline(db_url: str) -> str:
    """Create the baseline table (PostGIS is there: the server's migration made it); its version."""
    conn = await asyncpg.connect(db_url, timeout=10)
    try:
        await conn.execute(_BASELINE_TABLE)
        version: str = await conn.fetchval("SELECT postgis_lib_version()")
    finally:
        await conn.close()
    return version


def _child_env() -> dict[str, str]:
    """This process's environment without TRACKER_* settings, so only the bench's own apply."""
    return {k: v for k, v in os.environ.items() if not k.startswith("TRACKER_")}


@dataclass
class _Server:
    """The real `tracker serve` in a subprocess on a free port."""

    ready_path: ClassVar[str] = "/readyz"  # what answers 200 once the server takes connections

    url: str
    admin_token: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @classmethod
    def start(
        cls, db_url: str, tmp: Path, extra_env: dict[str, str], serve_args: Sequence[str] = ()
    ) -> _Server:
        """Start `tracker serve` (with `serve_args`, e.g. `--workers 2`) and wait until it is ready."""
        port = _free_port()
        token = "bench-admin-" + secrets.token_hex(16)
        geofences = tmp / "geofences"
        geofences.mkdir(exist_ok=True)
        env = {
            **_child_env(),
            "TRACKER_DATABASE_URL": db_url,
            "TRACKER_PORT": str(port),
            "TRACKER_HOST": "127.0.0.1",
            "TRACKER_ADMIN_TOKEN": token,
            "TRACKER_GEOFENCES": str(geofences),
            # The load is many times a real phone's rate: measure the pipeline, not the per-device limit.
            "TRACKER_DEVICE_RATE": "1000000",
            **extra_env,
        }
        log = tmp / "server.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(
                [sys.executable, "-m", "tracker", "serve", *serve_args],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=sink,
            )
        server = cls(f"http://127.0.0.1:{port}", token, process, log)
        progress(f"server pid {process.pid} on {server.url}; waiting for /readyz")
        try:
            server._wait_ready()
        except BaseException:
            server.stop()
            raise
        return server

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        with httpx.Client(timeout=2) as http:
            while time.monotonic() < deadline:
                self.check_alive()
                try:
                    if http.get(self.url + self.ready_path).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)  # poll interval, bounded by the deadline
        raise BenchError(f"server not ready within {READY_TIMEOUT_S:.0f} s:\n{self.log_tail()}")

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise BenchError(f"server exited with {self.process.returncode}:\n{self.log_tail()}")

    def register(self, ids: Sequence[str]) -> list[str]:
        """Register `ids` in fleet `bench` through the admin API; their tokens."""
        tokens = []
        headers = {"Authorization": f"Bearer {self.admin_token}"}
        with httpx.Client(base_url=self.url, timeout=10, headers=headers) as http:
            for device in ids:
                r = http.post("/api/admin/devices", json={"id": device, "fleet": FLEET})
                if r.status_code != 201:
                    raise BenchError(f"registering {device} failed: {r.status_code} {r.text:.300}")
                tokens.append(str(r.json()["token"]))
        progress(f"registered {len(ids)} devices")
        return tokens

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    def log_error_lines(self) -> int:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return 0
        return sum(1 for line in text.splitlines() if "ERROR" in line or "Traceback" in line)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_worker(config: dict[str, Any]) -> dict[str, Any]:
    """Run one load generator in its own process; its result."""
    timeout = config["warmup"] + config["seconds"] + DRAIN_TIMEOUT_S + 120
    process = subprocess.Popen(
        [sys.executable, "-m", "tracker.tools.bench.base", _WORKER_FLAG],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=_child_env(),
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


STRIPE_FIXES = 100  # with --fence-stripes, a device crosses a stripe edge every this many fixes


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


# --- the load generator (runs in its own process) ----------------------------------------------------

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


def proc_cpu_s(pid: int) -> float | None:
    """utime + stime of process `pid` in seconds, or None when it cannot be read."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()  # fields[0] is the state, the 3rd field of the file
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_jiffies() -> tuple[int, int] | None:
    """(busy, steal) jiffies of all CPUs since boot; busy excludes idle, iowait and steal."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in first[1:9])
    return user + nice + system + irq + softirq, steal


def _self_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _parse_metrics(text: str) -> dict[str, float]:
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


@dataclass
class _Snapshot:
    t: float
    self_cpu: float
    server_cpu: float | None
    pg_cpu: dict[int, float | None]
    machine: tuple[int, int] | None
    metrics: dict[str, float] = field(default_factory=dict)


class _Probe:
    """Reads the CPU counters (and the server's metrics) at the start and the end of the window."""

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

    async def snapshot(self) -> _Snapshot:
        snap = _Snapshot(
            t=time.perf_counter(),
            self_cpu=_self_cpu_s(),
            server_cpu=proc_cpu_s(self._server_pid) if self._server_pid else None,
            pg_cpu={pid: proc_cpu_s(pid) for pid in self.pg_kind},
            machine=machine_jiffies(),
        )
        if self._http is not None:
            try:
                snap.metrics = _parse_metrics((await self._http.get("/metrics")).text)
            except httpx.HTTPError:
                pass
        return snap


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


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
    config: dict[str, Any], send: Send, probe: _Probe, label: str
) -> tuple[_Tally, _Snapshot, _Snapshot]:
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
    mode: str, tally: _Tally, begin: _Snapshot, end: _Snapshot, kinds: dict[int, str]
) -> dict[str, Any]:
    wall = end.t - begin.t
    inside = [a for a in tally.acks if begin.t <= a[1] < end.t]
    latencies = sorted((a[1] - a[0]) * 1000 for a in inside)
    accepted = sum(a[2] for a in inside)
    rate_key = "fixes_per_s" if mode == "tracker" else "rows_per_s"
    result: dict[str, Any] = {
        rate_key: round(accepted / wall, 1),
        "events_per_s": round(len(inside) / wall, 1),
        "p50_ms": _round(percentile(latencies, 50)),
        "p90_ms": _round(percentile(latencies, 90)),
        "p99_ms": _round(percentile(latencies, 99)),
        "max_ms": _round(latencies[-1] if latencies else None),
        "mean_ms": _round(sum(latencies) / len(latencies) if latencies else None),
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
        result["server_metrics"] = _metric_deltas(begin.metrics, end.metrics, wall)
    if tally.samples:
        result["samples"] = tally.samples
    return result


_OUR_CPU_KEYS = ("loadgen_cpu_s", "server_cpu_s", "postgres_backend_cpu_s", "postgres_background_cpu_s")


def _metric_deltas(before: dict[str, float], after: dict[str, float], wall: float) -> dict[str, Any]:
    """The server's own view of the window: transactions, their size and time, in-server ack time."""

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    batches = delta("tracker_ingest_batch_fixes_count")
    commit_s = delta("tracker_ingest_commit_seconds_sum")
    acks = delta("tracker_ingest_ack_seconds_count")
    return {
        "transactions": int(batches),
        "mean_fixes_per_transaction": _round(
            delta("tracker_ingest_batch_fixes_sum") / batches if batches else None
        ),
        "mean_write_commit_ms": _round(commit_s / batches * 1000 if batches else None),
        "write_commit_share_of_wall": _round(commit_s / wall),
        "mean_in_server_ack_ms": _round(
            delta("tracker_ingest_ack_seconds_sum") / acks * 1000 if acks else None
        ),
    }


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

    probe = _Probe(config["database_url"], config["pid"], config["url"])
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

    probe = _Probe(config["database_url"], None, None)
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


def _worker_main() -> None:
    """The hidden entry of the load generator: settings on stdin, one JSON line on stdout."""
    config = json.loads(sys.stdin.read())
    result = asyncio.run(_worker(config))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    if sys.argv[1:] != [_WORKER_FLAG]:
        sys.exit("tracker.tools.bench.base is run by `tracker bench ingest`")
    _worker_main()
