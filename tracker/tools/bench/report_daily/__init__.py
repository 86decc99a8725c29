"""`tracker bench report`: how long the daily report of a whole fleet takes, on one fleet-day of 1,000
devices at a fix every 5 s (17.3 million fixes).

What it measures. A scratch database is filled through the project's bulk path (see `dataset`). Then,
alternating (ABAB, `--runs` times each), in this process on a pool like the server's:
- the baseline: a plain PostgreSQL aggregate over the same rows, per device count(*), min(ts), max(ts)
  and max(speed) of the day, which reads every fix once and computes nothing;
- the report: `tracker.reports.daily`, what `GET /api/reports/daily?fleet=...` and `tracker report daily`
  run: every unflagged fix of the fleet's day streamed out, stops and trips found per device, events and
  messages counted.
The figure is the median wall time of each, and their ratio; the CPU seconds of this process and of the
PostgreSQL backends say where the time went. The figures are of the day as production reads it in the
morning: compacted (`tracker.store.compaction`, which the server runs an hour after a UTC day ended).
When the day is not compacted yet (a fresh load, or a kept database measured for the first time) the same
runs are first timed on the day as ingest left it (`bloated`), then it is compacted as the server would
and the time that took is reported (`compaction`). Then a sample of devices is checked against the per-device
path of `/stops` and `/trips` (`history.track`, then `tracker.stops`): the report must agree exactly.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import numpy as np

from tracker import reports
from tracker.model import Device
from tracker.reports import local_day
from tracker.settings import Settings as ServerSettings
from tracker.stops import DEFAULT_MIN_DURATION_S, DEFAULT_RADIUS_M, find_stops, find_trips, trip_item
from tracker.store import compaction, history
from tracker.store.database import Database, migrate, ms_to_datetime
from tracker.tools.bench.flags import check_range
from tracker.tools.bench.procfs import proc_cpu_s
from tracker.tools.bench.report import (
    DEFAULT_BASE_URL,
    BenchError,
    machine_facts,
    progress,
    rounded,
    write_report,
)
from tracker.tools.bench.report_daily.dataset import (
    CITY,
    FLAG_EVERY,
    FLEET,
    SEED,
    TZ,
    Settings,
    bench_day,
    device_ids,
    load_day,
)
from tracker.tools.bench.scratch import scratch_database

__all__ = ["Settings", "bench_report"]

GOAL_S = 10.0
SAMPLE = 10  # devices checked against the per-device path

_BASELINE = """
SELECT device_id, count(*), min(ts), max(ts), max(speed) FROM fixes
WHERE device_id = ANY($1::text[]) AND ts >= $2 AND ts < $3
GROUP BY device_id
"""


def bench_report(database_url: str | None, settings: Settings, keep: bool, out: str | None) -> str:
    """Run the report benchmark; return its JSON report (also written to `out` when given)."""
    check_range("--devices", settings.devices, 1, 100_000)
    check_range("--interval-s", settings.interval_s, 0.5, 3600, " s")
    check_range("--runs", settings.runs, 1, 50)
    started = time.perf_counter()
    loadavg = list(os.getloadavg())
    if settings.use_database:
        db_url = settings.use_database
        day, pg = asyncio.run(_kept_day(db_url, settings))
        load: dict[str, Any] = {"reused": db_url}
        timed = asyncio.run(_measure_as_production(db_url, day, settings))
    else:
        day = bench_day()
        with scratch_database(database_url or DEFAULT_BASE_URL, keep) as (db_url, pg):
            load = asyncio.run(load_day(db_url, day, settings))
            pg.update(load.pop("postgres"))
            timed = asyncio.run(_measure_as_production(db_url, day, settings))
            if keep:
                progress(f"database kept: {db_url} (measure it again with --use-database)")
    report_s, baseline_s = timed["report"]["median_s"], timed["baseline"]["median_s"]
    report = {
        "machine": {
            **machine_facts(),
            "numpy": np.__version__,
            "asyncpg": asyncpg.__version__,
            "loadavg_at_start": loadavg,
            "loadavg_at_end": list(os.getloadavg()),
            **pg,
        },
        "settings": {
            **{k: v for k, v in vars(settings).items() if k != "use_database"},
            "fleet": FLEET,
            "date": day.date.isoformat(),
            "tz": day.tz,
            "fixes_per_device": timed.pop("fixes") // settings.devices,
            "city_bbox": list(CITY),
            "seed": SEED,
            "flagged": f"one fix in {FLAG_EVERY}, by time",
            "radius_m": DEFAULT_RADIUS_M,
            "min_duration_s": DEFAULT_MIN_DURATION_S,
            "database_kept": db_url if keep else None,
        },
        "load": load,
        **timed,
        "ratio_report_to_baseline": rounded(report_s / baseline_s, 2) if baseline_s else None,
        "goal_s": GOAL_S,
        "goal_met": report_s < GOAL_S,
        "total_s": round(time.perf_counter() - started, 1),
    }
    return write_report(report, out)


async def _kept_day(db_url: str, settings: Settings) -> tuple[reports.LocalDay, dict[str, Any]]:
    """The day a kept database holds (the local day of its first fix), and the server's facts."""
    conn = await asyncpg.connect(db_url)
    try:
        first = await conn.fetchval("SELECT min(ts) FROM fixes WHERE device_id = $1", device_ids(1)[0])
        devices = await conn.fetchval("SELECT count(*) FROM devices WHERE fleet = $1", FLEET)
        facts = {
            "postgres": await conn.fetchval("SHOW server_version"),
            "postgis": await conn.fetchval("SELECT postgis_lib_version()"),
            "shared_buffers": await conn.fetchval("SHOW shared_buffers"),
            "jit": await conn.fetchval("SHOW jit"),
        }
    finally:
        await conn.close()
    if first is None or devices != settings.devices:
        raise BenchError(f"{db_url} holds no bench day of {settings.devices} devices (--devices)")
    return local_day(first.astimezone(ZoneInfo(TZ)).date().isoformat(), TZ), facts


async def _measure_as_production(db_url: str, day: reports.LocalDay, settings: Settings) -> dict[str, Any]:
    """The runs on the compacted day; before them, when it is not compacted yet, the same runs on the day
    as ingest left it and the compaction the server would do."""
    names = [f"fixes_p{day.date + timedelta(days=d):%Y%m%d}" for d in (-1, 0, 1)]
    conn = await asyncpg.connect(db_url)
    try:
        await migrate(conn)  # a database kept before compaction existed
        done = await conn.fetchval(
            "SELECT count(*) FROM compacted_partitions WHERE partition = ANY($1::text[])", names
        )
        held = await conn.fetchval("SELECT count(*) FROM pg_class WHERE relname = ANY($1::text[])", names)
    finally:
        await conn.close()
    bloated: dict[str, Any] | None = None
    if done < held:
        progress("the day as ingest left it (not compacted)")
        first = await _measure(db_url, day, settings)
        ratio = first["report"]["median_s"] / first["baseline"]["median_s"]
        bloated = {"baseline": first["baseline"], "report": first["report"], "ratio": rounded(ratio, 2)}
    after_s = ServerSettings.model_fields["compact_after_s"].default
    started = time.perf_counter()
    compacted = await compaction.compact(db_url, int(time.time() * 1000), after_s)
    work = {
        "what": f"tracker.store.compaction.compact as the server runs it, {after_s:.0f} s after a UTC day "
        "ended: VACUUM of each closed day's partition and REINDEX INDEX CONCURRENTLY of its primary key",
        "s": round(time.perf_counter() - started, 1),
        "partitions": [vars(c) for c in compacted],
    }
    if compacted:
        progress(f"compacted {len(compacted)} partitions in {work['s']} s; the day as production reads it")
    timed = await _measure(db_url, day, settings)
    return {**timed, "compacted": True, "compaction": work, "bloated": bloated}


async def _backend_cpu(db: Database) -> float | None:
    rows = await db.pool.fetch(
        "SELECT pid FROM pg_stat_activity "
        "WHERE datname = current_database() AND backend_type = 'client backend'"
    )
    values = [proc_cpu_s(int(r[0])) for r in rows]
    return None if any(v is None for v in values) else sum(v for v in values if v is not None)


async def _measure(db_url: str, day: reports.LocalDay, settings: Settings) -> dict[str, Any]:
    """Baseline and report, alternating; then the sample check."""
    # The server's pool size: the report's streams and look-ups take connections from it.
    db = await Database.connect(db_url, min_size=10, max_size=10)
    try:
        devices = [Device(d, FLEET, None) for d in device_ids(settings.devices)]
        ids = [d.id for d in devices]
        lo, hi = ms_to_datetime(day.from_ms), ms_to_datetime(day.to_ms)
        runs: dict[str, list[dict[str, float | None]]] = {"baseline": [], "report": []}
        result: reports.DailyReport | None = None
        fixes = 0
        for i in range(settings.runs):
            for name in ("baseline", "report"):
                cpu0, pg0, t0 = time.process_time(), await _backend_cpu(db), time.perf_counter()
                if name == "baseline":
                    rows = await db.pool.fetch(_BASELINE, ids, lo, hi)
                    fixes = sum(int(r[1]) for r in rows)
                else:
                    result = await reports.daily(db, devices, day, DEFAULT_RADIUS_M, DEFAULT_MIN_DURATION_S)
                wall = time.perf_counter() - t0
                pg1 = await _backend_cpu(db)
                runs[name].append(
                    {
                        "s": round(wall, 3),
                        "bench_cpu_s": round(time.process_time() - cpu0, 2),
                        "postgres_cpu_s": rounded(pg1 - pg0, 2)
                        if pg0 is not None and pg1 is not None
                        else None,
                    }
                )
                progress(f"run {i + 1}: {name} {wall:.2f} s")
        assert result is not None
        agree = await _check(db, result, day, devices[:: max(1, len(devices) // SAMPLE)][:SAMPLE])
    finally:
        await db.close()
    rows_ = result.days
    fleet = result.fleets[0] if result.fleets else {}
    return {
        "fixes": fixes,
        "baseline": _summary(runs["baseline"], "per device count, min(ts), max(ts), max(speed) in SQL"),
        "report": _summary(runs["report"], "tracker.reports.daily over the whole fleet"),
        "result": {
            "devices": len(rows_),
            "stops": fleet.get("stops"),
            "distance_km": rounded(fleet.get("distance_m", 0) / 1000, 1),
            "moving_h": rounded(fleet.get("moving_s", 0) / 3600, 1),
            "stopped_h": rounded(fleet.get("stopped_s", 0) / 3600, 1),
        },
        "agrees_with_stops_and_trips": agree,
        "cpu_note": "bench_cpu_s is this process; postgres_cpu_s the pool's client backends, not the "
        "parallel workers PostgreSQL may start for the baseline's aggregate",
    }


def _summary(runs: list[dict[str, float | None]], what: str) -> dict[str, Any]:
    walls = [float(r["s"] or 0.0) for r in runs]
    return {"what": what, "median_s": round(statistics.median(walls), 3), "min_s": min(walls), "runs": runs}


async def _check(
    db: Database, result: reports.DailyReport, day: reports.LocalDay, sample: list[Device]
) -> dict[str, Any]:
    """Whether the report's rows of `sample` are what the per-device path of /stops and /trips gives."""
    by_id = {row["device"]: row for row in result.days}
    wrong: list[str] = []
    min_ms = round(DEFAULT_MIN_DURATION_S * 1000)
    for d in sample:
        track = await history.track(db, d.id, day.from_ms, day.to_ms, 10_000_000)
        assert track is not None
        stops = find_stops(track, DEFAULT_RADIUS_M, min_ms)
        trips = [trip_item(track, s) for s in find_trips(track, stops, DEFAULT_RADIUS_M)]
        row = by_id[d.id]
        expected = (
            len(stops),
            round(sum(t["distance_m"] for t in trips), 3),
            len(track) and int(track.ts[0]),
        )
        got = (row["stops"], row["distance_m"], row["first_ts"] or 0)
        if abs(expected[1] - got[1]) > 1e-3 or expected[0] != got[0] or expected[2] != got[2]:
            wrong.append(f"{d.id}: expected {expected}, got {got}")
    return {"devices": len(sample), "disagree": wrong, "ok": not wrong}
