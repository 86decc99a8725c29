"""`tracker bench trips`: what trips cost the ingest path, and how close their ETA comes.

Policy, ingest: the server's own ingest core (`Ingestor` with its writer lanes, the geofence engine that
evaluates trips, the PostGIS writes) runs in this process on a scratch database, without sockets, so the
figure is the trip evaluation's share of the core alone (sockets would only add to both sides and make
the share smaller), under the server's garbage-collector policy. DEVICES devices each send one fix per
round, a round being FIX_INTERVAL_S of fix time, all submitted at once as the lanes would get them from
connections. Runs go ABBA ABBA (A: no
trips; B: one active trip per device, a destination 50 km on, so none arrives; progress is written every
TRACKER_TRIP_PROGRESS_S of fix time, as in production), so that the table growing and the machine
drifting cost both kinds alike; the ratio is the median over neighbouring pairs of B's fixes/s over
A's, after an untimed warm-up run (into an empty table, the first run is the fastest). CPU seconds of
this process (the server's side of ingest) are reported too. The first round of each run (no heads yet)
is not timed.

Whole server: `server.measure_server` (a real `tracker serve` holding DEVICES trips, single-fix events).
ETA accuracy: `accuracy.measure` on the simulated shifts of the given seeds.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from tracker.admission import LoopLag
from tracker.broadcast import Broadcaster
from tracker.gc_policy import GcPolicy
from tracker.geofence.engine import GeofenceEngine
from tracker.index import LiveIndex
from tracker.ingest import Ingestor
from tracker.metrics import Metrics
from tracker.model import Fix
from tracker.notify import Notifier
from tracker.settings import load_settings
from tracker.store import Database
from tracker.tools.bench.procfs import self_cpu_s
from tracker.tools.bench.report import DEFAULT_BASE_URL, BenchError, machine_facts, progress, write_report
from tracker.tools.bench.scratch import scratch_database
from tracker.tools.bench.trips.accuracy import measure
from tracker.tools.bench.trips.server import measure_server

FIX_INTERVAL_S = 5
PAIRS_OF_PAIRS = 2  # runs: ABBA twice
SPEED_MPS = 10.0
M_PER_DEG = 111_277.0


class _Nobody:
    """A transport with no listeners: the bench measures ingest, not delivery."""

    def listening(self, room: str) -> bool:
        return False

    async def emit(self, event: str, data: Any, room: str | list[str]) -> None:
        return None


def bench_trips(
    database_url: str | None,
    devices: int,
    rounds: int,
    seeds: list[int],
    out: str | None,
    *,
    senders: int = 200,
    seconds: float = 8.0,
) -> str:
    """Run the trips benchmark; return its JSON report (also written to `out` when given). `senders` and
    `seconds`: the whole-server part (`tracker.tools.bench.trips.server`; 0 senders: skipped)."""
    if not 100 <= devices <= 100_000 or not 2 <= rounds <= 1000:
        raise BenchError("--devices must be 100..100000 and --rounds 2..1000")
    if not 0 <= senders < devices or not 1 <= seconds <= 600:
        raise BenchError("--senders must be 0..devices-1 and --seconds 1..600")
    progress(f"ETA accuracy on the simulated shifts of seeds {seeds}")
    eta = measure_seeds(seeds)
    with scratch_database(database_url or DEFAULT_BASE_URL) as (db_url, info):
        ingest = asyncio.run(_ingest(db_url, devices, rounds))
    whole = None
    if senders:
        with (
            scratch_database(database_url or DEFAULT_BASE_URL) as (db_url, _),
            tempfile.TemporaryDirectory() as tmp,
        ):
            whole = measure_server(db_url, Path(tmp), devices, senders, seconds)
    report = {
        "benchmark": "trips",
        "machine": {**machine_facts(), **info},
        "ingest": ingest,
        "server": whole,
        "eta": eta,
    }
    return write_report(report, out)


def measure_seeds(seeds: list[int]) -> dict[str, Any]:
    """`accuracy.measure` on each seed's shifts (30 couriers and 15 vans each), one report per seed."""
    return {str(seed): measure(seed=seed, couriers=30, vans=15) for seed in seeds}


async def _ingest(db_url: str, devices: int, rounds: int) -> dict[str, Any]:
    db = await Database.connect(db_url)
    try:
        await db.pool.execute(
            "INSERT INTO devices (id, fleet) SELECT 'trip-' || g, 'bench' FROM generate_series(0, $1 - 1) g",
            devices,
        )
        runs = []
        order = [False, True, True, False] * PAIRS_OF_PAIRS  # ABBA ABBA: a drift costs both alike
        progress(f"warm-up run: {devices} devices, no trips (not reported)")
        await _run(db, devices, rounds, -1, len(order))  # into an empty table, a run is the fastest
        for i, trips in enumerate(order):
            await _set_trips(db, trips)
            progress(
                f"run {i + 1} of {len(order)}: {devices} devices, {'one trip each' if trips else 'no trips'}"
            )
            runs.append({"trips": devices if trips else 0, **await _run(db, devices, rounds, i, len(order))})
    finally:
        await db.close()
    # Each pair of neighbouring runs holds one of each kind: its ratio, then the median over the pairs.
    pairs = [(runs[k], runs[k + 1]) for k in range(0, len(runs), 2)]
    ratios = sorted(
        (b if b["trips"] else a)["fixes_per_s"] / (a if b["trips"] else b)["fixes_per_s"] for a, b in pairs
    )
    ratio = statistics.median(ratios)
    base = statistics.median(r["fixes_per_s"] for r in runs if not r["trips"])
    with_trips = statistics.median(r["fixes_per_s"] for r in runs if r["trips"])
    cpu_base = statistics.median(r["cpu_us_per_fix"] for r in runs if not r["trips"])
    cpu_trips = statistics.median(r["cpu_us_per_fix"] for r in runs if r["trips"])
    return {
        "devices": devices,
        "rounds": rounds,
        "runs": runs,
        "fixes_per_s_no_trips": round(base),
        "fixes_per_s_with_trips": round(with_trips),
        "pair_ratios": [round(r, 3) for r in ratios],
        "ratio_to_no_trips": round(ratio, 3),
        "trip_cost_share": round(1 - ratio, 3),
        "cpu_us_per_fix_no_trips": round(cpu_base, 1),
        "cpu_us_per_fix_with_trips": round(cpu_trips, 1),
        "goal": "trip_cost_share <= 0.10",
    }


async def _set_trips(db: Database, on: bool) -> None:
    """One active trip per device (destination 50 km north), or none."""
    await db.pool.execute("UPDATE trips SET status = 'cancelled' WHERE status IN ('started', 'approaching')")
    if on:
        now = int(time.time() * 1000)
        await db.pool.execute(
            """
            INSERT INTO trips (device_id, fleet, status, dest_lat, dest_lon, radius_m, approach_m, created_by,
                               created_ts, expires_ts)
            SELECT id, fleet, 'started', 53.0, 13.4, 50, 1000, 'bench', $1::bigint, $1::bigint + 86400000
            FROM devices
            """,
            now,
        )


async def _run(db: Database, devices: int, rounds: int, run: int, runs: int) -> dict[str, Any]:
    # Admission would refuse a whole round submitted at once (a lane's backlog over its max wait): this
    # bench measures what the lanes store, not what they refuse.
    settings = load_settings(ingest_max_wait_ms=600_000, ingest_queue_max=1_000_000)
    metrics = Metrics()
    nobody = _Nobody()
    with tempfile.TemporaryDirectory() as folder:
        engine = GeofenceEngine(
            Path(folder),
            db,
            metrics,
            trip_detour=settings.trip_detour,
            trip_progress_ms=round(settings.trip_progress_s * 1000),
        )
        await engine.start({})
        notifier = Notifier(nobody, nobody, lambda rule: None, lambda: None)
        ingestor = Ingestor(
            settings,
            db,
            LiveIndex(settings.h3_resolution),
            Broadcaster(nobody, settings.broadcast_interval_ms, metrics),
            metrics,
            lag=LoopLag(settings.loop_lag_max_ms / 1000),
            engine=engine,
            notifier=notifier,
        )
        # The server's garbage-collector policy, as `tracker serve` runs it (the trips held are frozen
        # with everything else that lives long).
        gc_policy = GcPolicy(settings.gc_freeze_interval_s, settings.gc_full_interval_s)
        gc_policy.apply()
        gc_task = asyncio.create_task(gc_policy.run())
        task = asyncio.create_task(ingestor.run())
        # Each run's fixes come after the previous run's, so every fix is new and moves its trip.
        t0 = int(time.time() * 1000) - (runs - run) * (rounds + 1) * FIX_INTERVAL_S * 1000 - 60_000
        ids = [f"trip-{i}" for i in range(devices)]
        try:
            await _round(ingestor, ids, t0, 0)
            cpu, started = self_cpu_s(), time.perf_counter()
            for r in range(1, rounds + 1):
                await _round(ingestor, ids, t0, r)
            wall = time.perf_counter() - started
            cpu = self_cpu_s() - cpu
        finally:
            ingestor.close()
            await task
            gc_task.cancel()
        held = len(engine.trips)
    fixes = devices * rounds
    written = await db.pool.fetchval("SELECT count(*) FROM trips WHERE progress_ts IS NOT NULL")
    return {
        "fixes": fixes,
        "seconds": round(wall, 2),
        "fixes_per_s": round(fixes / wall),
        "cpu_s_this_process": round(cpu, 2),
        "cpu_us_per_fix": round(cpu / fixes * 1e6, 1),
        "evaluation_s": round(_histogram_sum(metrics), 3),
        "trips_held": held,
        "trips_with_stored_progress": written,
    }


def _histogram_sum(metrics: Metrics) -> float:
    """Seconds spent evaluating fences and trips (the engine's `geofence_seconds` histogram)."""
    for metric in metrics.geofence_seconds.collect():
        for sample in metric.samples:
            if sample.name.endswith("_sum"):
                return float(sample.value)
    return 0.0


async def _round(ingestor: Ingestor, ids: list[str], t0: int, r: int) -> None:
    """One fix of every device, FIX_INTERVAL_S after its last, each moving north at SPEED_MPS."""
    ts = t0 + r * FIX_INTERVAL_S * 1000
    lat = 52.5 + r * FIX_INTERVAL_S * SPEED_MPS / M_PER_DEG
    await asyncio.gather(
        *(
            ingestor.submit([Fix(d, "bench", ts, lat, 13.0 + i * 1e-4, speed=SPEED_MPS)])
            for i, d in enumerate(ids)
        )
    )
