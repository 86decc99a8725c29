"""`tracker bench near`: what an `on: near` rule costs per ingest batch, against the same batches without it.

Why in process. Proximity is a detector cost, paid in `detect()` per batch; sockets and PostgreSQL
would only add noise around it on a small shared machine. So the bench builds what the engine holds (a
live index seeded with every device, the near pairs, fence states, heads) and runs the batches live
ingest forms through `detect()` exactly as `GeofenceEngine.evaluate` calls it, then applies each detection
as the engine does after COMMIT, so that pairs come near and go far and the index moves.

What is compared. 10,000 devices over Berlin (`city`), 1,000 of them in the near rule's fleets (500 vans
near 500 bikes), each sending a fix every 5 s: about 200 fixes per 100 ms batch. Per set of fences (none,
and the project's `geofences/` folder) the baseline is that set's rules alone; each near distance adds one
near rule to it. Every configuration sees the very same batches, interleaved batch by batch (their
order rotating), so that the machine's other load falls on all of them alike. The first INTERVAL_MS of
simulated time is a warm-up (every device reports once, and pairs that start near fire), not measured.

The report: per configuration the batch cost (p50, p99, max, mean; wall ms of `detect()`), its CPU,
fixes/s through `detect()`, events per minute of simulated time, live-index lookups; per near
configuration the ratios to its baseline and the added ms (median of the per-batch differences); and
the process's CPU over the whole run.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Any

import h3
import numpy as np

from tracker.geofence.config import FenceLoader
from tracker.index import assign_cells
from tracker.model import Fence, Rule
from tracker.tools.bench.flags import check_range, int_list
from tracker.tools.bench.near.city import BATCH_MS, INTERVAL_MS, SIDE_A, SIDE_B, City, Fleets
from tracker.tools.bench.near.worlds import World
from tracker.tools.bench.report import BenchError, machine_facts, percentile, progress, write_report

__all__ = ["bench_near"]

SEED = 20260318
RESOLUTION = 9  # TRACKER_H3_RESOLUTION's default, the live index's
DEFAULT_GEOFENCES = Path(__file__).resolve().parents[4] / "geofences"


def bench_near(
    devices: int,
    near_devices: int,
    distances: str,
    minutes: float,
    geofences: str | None,
    out: str | None,
) -> str:
    """Run the benchmark; its JSON report (also written to `out`)."""
    check_range("--devices", devices, 10, 1_000_000)
    check_range("--near-devices", near_devices, 2, devices)
    check_range("--minutes", minutes, 0.2, 600)
    distance_list = int_list("--distances", distances, 1, 20_000, "100,500", "distances (m)")
    folder = Path(geofences) if geofences else DEFAULT_GEOFENCES
    fences, rules = _load(folder, "--geofences" if geofences else "the project's geofences/ folder")
    return write_report(run(devices, near_devices, distance_list, minutes, (folder.name, fences, rules)), out)


def _load(folder: Path, what: str) -> tuple[tuple[Fence, ...], tuple[Rule, ...]]:
    if not folder.is_dir():
        raise BenchError(f"{what} {folder} is not a directory")
    result = FenceLoader(folder).load()
    if result.errors:
        raise BenchError(f"{what} {folder} has errors: {'; '.join(result.errors)}")
    return result.fences, tuple(r for r in result.rules if r.on != "near")


def run(
    devices: int,
    near_devices: int,
    distances: list[int],
    minutes: float,
    fenced: tuple[str, tuple[Fence, ...], tuple[Rule, ...]],
) -> dict[str, Any]:
    """Build the city and the configurations, run every batch through each; the report."""
    started, cpu_started = time.perf_counter(), time.process_time()
    load_at_start = list(os.getloadavg())
    fleets = Fleets.split(devices, near_devices)
    city = City(fleets, SEED)
    seed = city.seed_fixes()
    assign_cells(seed, RESOLUTION)  # as the ingest loop does before a batch is evaluated
    fence_sets = [("none", (), ()), fenced]
    worlds: list[World] = []
    for label, fences, rules in fence_sets:
        worlds.append(World.make(f"{label}", label, fences, rules, None, seed, RESOLUTION))
        for d in distances:
            near = Rule(
                f"near-{d}m",
                "near",
                (),
                fleets=frozenset({SIDE_A}),
                near_fleets=frozenset({SIDE_B}),
                distance_m=float(d),
            )
            worlds.append(World.make(f"{label}+near-{d}m", label, fences, rules, near, seed, RESOLUTION))
    progress(f"{devices} devices, {near_devices} in the near rule, {len(worlds)} configurations")
    warmup_batches = INTERVAL_MS // BATCH_MS
    batch_sizes: list[int] = []
    for b, fixes in enumerate(city.batches(minutes * 60 + INTERVAL_MS / 1000)):
        assign_cells(fixes, RESOLUTION)
        measured = b >= warmup_batches
        if b == warmup_batches:
            for w in worlds:
                w.reset_counts()
        if measured:
            batch_sizes.append(len(fixes))
        for k in range(len(worlds)):
            worlds[(b + k) % len(worlds)].run(fixes, measured)
        if b % 600 == 0:
            progress(f"{b * BATCH_MS / 1000:.0f} s of simulated time")
    results = {w.name: w.summary(minutes) for w in worlds}
    for w in worlds:
        if w.distance_m is not None:
            base = next(x for x in worlds if x.fences == w.fences and x.distance_m is None)
            results[w.name]["vs_baseline"] = _versus(w, base)
            progress(f"{w.name}: {results[w.name]['vs_baseline']}")
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    return {
        "machine": {**machine_facts(), "numpy": np.__version__, "h3": h3.__version__},
        "settings": {
            "devices": devices,
            "near_devices": near_devices,
            "near_rule": f"fleets [{SIDE_A}] ({near_devices // 2}) near_fleets [{SIDE_B}] "
            f"({near_devices - near_devices // 2})",
            "distances_m": distances,
            "simulated_minutes": minutes,
            "fix_interval_s": INTERVAL_MS / 1000,
            "batch_ms": BATCH_MS,
            "offered_fixes_per_s": round(devices * 1000 / INTERVAL_MS),
            "fixes_per_batch": {
                "mean": round(statistics.fmean(batch_sizes), 1) if batch_sizes else None,
                "max": max(batch_sizes, default=None),
            },
            "h3_resolution": RESOLUTION,
            "fences": {label: {"fences": len(f), "rules": len(r)} for label, f, r in fence_sets},
            "city": f"normal around Berlin Mitte, {city.spread_m:.0f} m standard deviation; 20 % parked "
            "(3 m GPS noise), the rest walking 1-2, cycling 3-6 or driving 6-14 m/s, turning 25 deg per "
            "fix; 1 % per fix park or set off",
            "warmup": f"the first {INTERVAL_MS / 1000:g} s of simulated time (every device once), "
            "not measured",
            "timed": "detect(rules, states, heads, fixes, None, (index, pairs)) per batch, as the engine "
            "calls it; applying its result is not timed; configurations interleaved per batch",
            "seed": SEED,
        },
        "results": results,
        "process": {
            "wall_s": round(wall, 1),
            "cpu_s": round(cpu, 1),
            "cpu_share": round(cpu / wall, 2) if wall else None,
            "loadavg_at_start": load_at_start,
            "loadavg_at_end": list(os.getloadavg()),
        },
    }


def _versus(world: World, base: World) -> dict[str, Any]:
    """A near configuration against its baseline: ratios of p50, p99 and mean, and the added ms."""
    mine, theirs = sorted(world.wall_ms), sorted(base.wall_ms)

    def ratio(q: float) -> float | None:
        a, b = percentile(mine, q), percentile(theirs, q)
        return round(a / b, 2) if a and b else None

    added = [a - b for a, b in zip(world.wall_ms, base.wall_ms, strict=True)]
    mean_mine, mean_base = statistics.fmean(mine), statistics.fmean(theirs)
    cpu_mine, cpu_base = statistics.fmean(world.cpu_ms), statistics.fmean(base.cpu_ms)
    return {
        "p50_ratio": ratio(50),
        "p99_ratio": ratio(99),
        "mean_ratio": round(mean_mine / mean_base, 2) if mean_base else None,
        "added_ms_p50": round(statistics.median(added), 3),
        "added_ms_mean": round(statistics.fmean(added), 3),
        "cpu_mean_ratio": round(cpu_mine / cpu_base, 2) if cpu_base else None,
        "added_cpu_ms_mean": round(cpu_mine - cpu_base, 3),
    }
