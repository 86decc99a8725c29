"""`tracker bench dry-run`: a rules file tried on a day of stored history, end to end, against baselines.

What it measures. A scratch database gets one day of N devices at one fix per 24 h / M (default 1,000
devices at 1 fix/5 s: 17.3 million fixes) through the project's bulk path (the history bench's dataset:
random walks through Munich, written in time order across devices). The real `tracker serve` then
answers `POST /api/geofences/dry-run` for that whole day with a realistic rules file (`rules.py`: the
city's districts, 200 depots, 20 bridges; enter, exit, speeding, dwell and cross rules), read as a stream
by a client that counts the events. Reported: fixes/s end to end (request to last byte; the goal is
GOAL_FIXES_PER_S), the CPU seconds of the server process and of the database's backends, the server's
peak RSS while streaming.

Baselines, in the same run on the same fixes: the chunked binary COPY alone (`store.history_fixes`, no
detection: the floor of reading), and PostGIS answering the spatial half of the question (which fence
covers which fix, `ST_Covers` with GiST) over the first `--baseline-hours`. An in-process pass over that
same sub-window splits the time into reading, the triage, making `Fix` objects (of the fixes it kept) and
detection.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson

from tracker.auth import hash_token, new_token
from tracker.geofence import dry_run
from tracker.geofence.ruleset import RuleSet
from tracker.model import Viewer
from tracker.store import Database, accounts, history_fixes
from tracker.store.database import DAY_MS
from tracker.store.history_fixes import chunks, device_fleets
from tracker.tools.bench.dry_run.rules import postgis_covers, rules_text
from tracker.tools.bench.flags import check_range
from tracker.tools.bench.history.dataset import FLEETS, Plan, load_history
from tracker.tools.bench.history.dataset import Settings as HistorySizes
from tracker.tools.bench.procfs import machine_jiffies, proc_cpu_s, rss_bytes
from tracker.tools.bench.report import DEFAULT_BASE_URL, BenchError, machine_facts, progress, write_report
from tracker.tools.bench.scratch import scratch_database
from tracker.tools.bench.server import start_server

GOAL_FIXES_PER_S = 200_000


@dataclass(frozen=True)
class Settings:
    """Sizes of one run."""

    devices: int = 1_000
    fixes_per_device: int = 17_280  # one fix every 5 s for 24 hours
    baseline_hours: float = 2.0
    keep: bool = False
    use_database: str | None = None  # a database an earlier run kept: skip loading


def bench_dry_run(database_url: str | None, settings: Settings, out: str | None) -> str:
    """Run the dry-run benchmark; return its JSON report (also written to `out` when given)."""
    check_range("--devices", settings.devices, 1, 100_000)
    check_range("--fixes-per-device", settings.fixes_per_device, 2, 100_000)
    check_range("--baseline-hours", settings.baseline_hours, 0.01, 24)
    return write_report(run(database_url or DEFAULT_BASE_URL, settings), out)


def run(base_url: str, settings: Settings) -> dict[str, Any]:
    """Load (or reuse) the day, start the server, time the dry-run and the baselines; the report."""
    started = time.perf_counter()
    loadavg = list(os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="tracker-bdr-") as tmp:
        if settings.use_database:
            report = _measure(settings.use_database, settings, Path(tmp), {}, None)
        else:
            with scratch_database(base_url, settings.keep) as (db_url, pg):
                sizes = HistorySizes(settings.devices, settings.fixes_per_device, settings.devices, 0, 0)
                plan = Plan.make(sizes)
                load = asyncio.run(load_history(db_url, plan))
                pg.update(load.pop("postgres"))
                load.pop("viewer_token")
                report = _measure(db_url, settings, Path(tmp), pg, load)
                report["settings"]["database_kept"] = db_url if settings.keep else None
    report["machine"]["loadavg_at_start"] = loadavg
    report["machine"]["loadavg_at_end"] = list(os.getloadavg())
    report["total_s"] = round(time.perf_counter() - started, 1)
    return report


def _measure(
    db_url: str, settings: Settings, tmp: Path, pg: dict[str, Any], load: dict[str, Any] | None
) -> dict[str, Any]:
    folder = tmp / "geofences"
    text, source = rules_text(folder)
    compiled = dry_run.compile_text(text, (), folder)
    if compiled.rules is None:
        raise BenchError(f"the bench's rules file is invalid: {compiled.errors[:3]}")
    token, from_ms, to_ms, fixes = asyncio.run(_prepare(db_url))
    server = start_server(db_url, tmp)
    try:
        end_to_end = _post(server.url, server.pid, db_url, token, text, from_ms, to_ms)
        server.check_alive()
    finally:
        server.stop()
    if end_to_end["fixes"] != fixes:
        end_to_end["fixes"] = fixes  # the window's fixes, counted by the database
    seconds = end_to_end["seconds"]
    end_to_end["fixes_per_s"] = round(fixes / seconds)
    cpu = end_to_end["server_cpu_s"]
    # On a shared machine the wall clock waits for other work; the server's CPU per fix does not.
    end_to_end["server_cpu_us_per_fix"] = round(cpu / fixes * 1e6, 2) if cpu and fixes else None
    end_to_end["fixes_per_server_cpu_s"] = round(fixes / cpu) if cpu else None
    baseline_to = min(to_ms, from_ms + int(settings.baseline_hours * 3_600_000))
    copy_only = asyncio.run(_copy_only(db_url, from_ms, to_ms))
    breakdown = asyncio.run(_in_process(db_url, compiled.rules, from_ms, baseline_to))
    postgis = asyncio.run(postgis_covers(db_url, list(compiled.rules.fences), from_ms, baseline_to))
    rate = end_to_end["fixes_per_s"]
    return {
        "machine": {**machine_facts(), **pg},
        "settings": {
            **{k: v for k, v in asdict(settings).items() if k != "use_database"},
            "database": "reused" if settings.use_database else "scratch",
            "fixes": fixes,
            "window_ms": [from_ms, to_ms],
            "rules": {
                "districts": source,
                "fences": len(compiled.rules.fences),
                "rules": [r.id for r in compiled.rules.rules],
                "yaml_bytes": len(text.encode()),
            },
            "viewer": f"a viewer token granting the {len(FLEETS)} fleets (every device)",
            "client": "httpx streaming POST, JSON answer, counted as it arrives",
        },
        "load": load,
        "dry_run": end_to_end,
        "baselines": {
            "copy_only": copy_only,
            "postgis_covers": postgis,
            "dry_run_vs_copy_only": round(rate / copy_only["fixes_per_s"], 3),
            "dry_run_vs_postgis": round(rate / postgis["fixes_per_s"], 3) if postgis["fixes_per_s"] else None,
        },
        "in_process_breakdown": breakdown,
        "goal": {
            "fixes_per_s": GOAL_FIXES_PER_S,
            "measured_fixes_per_s": rate,
            "met": rate >= GOAL_FIXES_PER_S,
        },
    }


async def _prepare(db_url: str) -> tuple[str, int, int, int]:
    """A viewer of every fleet, the day's window and its fixes (coroutine)."""
    db = await Database.connect(db_url, min_size=1, max_size=1)
    try:
        token = new_token()
        name = f"bench-dry-run-{new_token()[:8]}"
        await accounts.insert_viewer(db, Viewer(name, frozenset(FLEETS)), hash_token(token), actor="bench")
        newest = await db.pool.fetchval("SELECT (extract(epoch FROM max(ts)) * 1000)::bigint FROM fixes")
        if newest is None:
            raise BenchError("the database holds no fixes")
        to_ms = int(newest) + 1
        from_ms = to_ms - DAY_MS - 1
        fixes = await db.pool.fetchval(
            "SELECT count(*) FROM fixes WHERE ts >= timestamptz 'epoch' + $1 * interval '1 ms' "
            "AND ts < timestamptz 'epoch' + $2 * interval '1 ms' AND flag IS NULL",
            from_ms,
            to_ms,
        )
    finally:
        await db.close()
    return token, from_ms, to_ms, int(fixes)


def _post(url: str, pid: int, db_url: str, token: str, text: str, from_ms: int, to_ms: int) -> dict[str, Any]:
    """One dry-run over HTTP, read as a stream: time to the first and last byte, events, CPU, RSS."""
    pg_before = asyncio.run(_backend_cpu(db_url))
    cpu0, jiffies0 = proc_cpu_s(pid), machine_jiffies()
    peak_rss = rss_bytes(pid) or 0
    body = {"yaml": text, "from": from_ms, "to": to_ms}
    progress("dry-run: POST /api/geofences/dry-run for the whole day")
    data = bytearray()
    first_byte = None
    t0 = time.perf_counter()
    next_sample = t0
    with (
        httpx.Client(base_url=url, timeout=3600) as http,
        http.stream(
            "POST", "/api/geofences/dry-run", json=body, headers={"Authorization": f"Bearer {token}"}
        ) as r,
    ):
        if r.status_code != 200:
            raise BenchError(f"dry-run answered {r.status_code}: {r.read()[:300]!r}")
        for part in r.iter_raw():
            now = time.perf_counter()
            first_byte = first_byte if first_byte is not None else now - t0
            data += part
            if now >= next_sample:
                peak_rss = max(peak_rss, rss_bytes(pid) or 0)
                next_sample = now + 0.25
    seconds = time.perf_counter() - t0
    cpu1, jiffies1 = proc_cpu_s(pid), machine_jiffies()
    pg_after = asyncio.run(_backend_cpu(db_url))
    answer = orjson.loads(data)
    if answer["errors"]:
        raise BenchError(f"the dry-run reported errors: {answer['errors'][:3]}")
    by_type: dict[str, int] = {}
    for event in answer["events"]:
        by_type[event["type"]] = by_type.get(event["type"], 0) + 1
    progress(f"dry-run: {len(answer['events']):,} events in {seconds:.1f} s")
    return {
        "seconds": round(seconds, 2),
        "first_byte_s": round(first_byte or 0.0, 3),
        "fixes": None,
        "events": len(answer["events"]),
        "events_by_type": by_type,
        "response_mb": round(len(data) / 2**20, 1),
        "server_cpu_s": round(cpu1 - cpu0, 1) if cpu0 is not None and cpu1 is not None else None,
        "postgres_backends_cpu_s": round(
            sum(pg_after.get(p, 0.0) - pg_before.get(p, 0.0) for p in pg_after), 1
        ),
        "machine_busy_cores": round((jiffies1[0] - jiffies0[0]) / 100 / seconds, 2)
        if jiffies0 and jiffies1
        else None,
        "server_peak_rss_mb": round(peak_rss / 2**20),
    }


async def _backend_cpu(db_url: str) -> dict[int, float]:
    """CPU seconds of each backend of the database (the server's pool), by pid."""
    conn = await asyncpg.connect(db_url, timeout=10)
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await conn.close()
    return {int(r[0]): cpu for r in rows if (cpu := proc_cpu_s(int(r[0]))) is not None}


async def _copy_only(db_url: str, from_ms: int, to_ms: int) -> dict[str, Any]:
    """The dry-run's read alone, in this process: every chunk of the day, parsed, nothing detected."""
    db = await Database.connect(db_url, min_size=1, max_size=2)
    try:
        scope = await device_fleets(db, None, None)
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        fixes = n_chunks = 0
        async for _, _, columns in chunks(db, list(scope), from_ms, to_ms):
            fixes += len(columns)
            n_chunks += 1
        seconds = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
    finally:
        await db.close()
    progress(f"copy only: {fixes:,} fixes in {seconds:.1f} s")
    return {
        "fixes": fixes,
        "chunks": n_chunks,
        "seconds": round(seconds, 2),
        "fixes_per_s": round(fixes / seconds),
        "bench_cpu_s": round(cpu, 1),
    }


async def _in_process(db_url: str, rules: RuleSet, from_ms: int, to_ms: int) -> dict[str, Any]:
    """The dry-run's steps, one after the other in this process over [from_ms, to_ms): this process's
    CPU per fix in each (reading: the client's side of COPY and the numpy parse). A second run feeds the
    detector every fix of the same chunks (no triage, untimed): its events must be the same."""
    db = await Database.connect(db_url, min_size=1, max_size=2)
    try:
        scope = await device_fleets(db, None, None)
        devices = list(scope)
        fleets = [scope[d] for d in devices]
        run = dry_run.DryRun(rules)
        every_fix = dry_run.DryRun(rules, triage=False)
        read = triage = to_fixes = detect = 0.0
        events = kept = 0
        same = True
        t = time.process_time()
        async for _, _, columns in chunks(db, devices, from_ms, to_ms):
            t1 = time.process_time()
            plan = run.plan(columns, devices, fleets)
            t2 = time.process_time()
            if plan is None:
                fixes = history_fixes.to_fixes(columns, devices, fleets)
                t3 = time.process_time()
                fired = run.feed(fixes)
            else:
                fixes, crossed = dry_run.kept_fixes(plan, columns, devices, fleets)
                t3 = time.process_time()
                fired = run.feed_kept(fixes, crossed, len(columns))
            kept += len(fixes)
            events += len(fired)
            t4 = time.process_time()
            read, triage = read + t1 - t, triage + t2 - t1
            to_fixes, detect = to_fixes + t3 - t2, detect + t4 - t3
            same = same and fired == every_fix.feed_columns(columns, devices, fleets)
            t = time.process_time()
    finally:
        await db.close()
    n = max(run.fixes, 1)
    return {
        "window_ms": [from_ms, to_ms],
        "fixes": run.fixes,
        "events": events,
        "fixes_detected": kept,  # those the triage kept: only these become Fix objects
        "same_events_as_every_fix_detected": same and run.states == every_fix.states,
        "cpu_us_per_fix": {
            "read_copy_and_parse": round(read / n * 1e6, 2),
            "triage": round(triage / n * 1e6, 2),
            "make_fix_objects": round(to_fixes / n * 1e6, 2),
            "detect_and_apply": round(detect / n * 1e6, 2),
        },
    }
