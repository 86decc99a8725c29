"""One server under one mode's schedule: connect the fleet, run the load windows, drain, summarise.

Every mode follows the same steps, so the tracker and the bare server are measured alike: the viewer
subscribes (tracker only), the server's RSS is read, the devices connect (spread over seconds at the
generator's connect rate), the RSS is read again, then the load runs in named windows, each opened by a
`mark` sent to every generator at once together with a reading of the CPU counters:

- open: `warmup`, `measure` at `rate` fixes/s per device, random phase, whatever the answers;
- closed: `warmup`, `measure`, each device sending its next `batch` as soon as its ack arrives;
- overload: closed loop `warmup` and `capacity` (acked fixes/s), then open loop at 2x that rate
  (`overload`) and at 0.5x (`after`), the devices behaving like phones: a `retry` answer makes a device
  wait `retry_after_ms` (1 s without it) and send the same fixes again, joined by those that piled up.

After the last window the load stops and the generators wait up to `DRAIN_S` for the events still in
flight; what is left then is reported as unanswered.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg

from tracker.tools.bench.fleet import figures
from tracker.tools.bench.fleet.generators import Generators
from tracker.tools.bench.fleet.settings import AFTER_FACTOR, OVERLOAD_FACTOR, FleetSettings
from tracker.tools.bench.procfs import cpu_s, machine_jiffies, tree_pids, tree_rss_bytes
from tracker.tools.bench.report import BenchError, progress

DRAIN_S = 15.0
SETTLE_S = 2.0  # after the last connection, before the RSS is read
_REPORTED = {"open": ("measure",), "closed": ("measure",), "overload": ("capacity", "overload", "after")}


async def measure_server(
    name: str,
    url: str,
    pid: int,
    settings: FleetSettings,
    tokens: list[str],
    viewer_token: str | None,
    database_url: str | None = None,
) -> dict[str, Any]:
    """Run the mode's schedule against the server at `url` (process tree `pid`, PostgreSQL backends on
    `database_url`); its figures."""
    gens = await Generators.start(
        url, tokens, viewer_token, settings.generators, settings.connect_rate, settings.connect_concurrency
    )
    readings: dict[str, figures.Reading] = {}
    backends: list[int] = []

    def read() -> figures.Reading:
        jiffies = machine_jiffies()
        return figures.Reading(
            time.perf_counter(),
            cpu_s(tree_pids(pid)),
            cpu_s(backends),
            gens.cpu_s(),
            gens.cpu_by_process(),
            jiffies[0] if jiffies else None,
        )

    async def window(label: str, seconds: float) -> None:
        await gens.mark(label)
        readings[label] = read()
        await asyncio.sleep(seconds)

    extra: dict[str, Any] = {}
    try:
        viewer = await gens.connect_viewer()
        rss_before = tree_rss_bytes(pid)
        progress(f"{name}: connecting {len(tokens)} devices")
        connect = await gens.connect_devices(timeout=60 + 3 * len(tokens) / settings.connect_rate)
        progress(f"{name}: {connect['connected']} connected in {connect['connect_s']:.1f} s")
        if not connect["connected"]:
            raise BenchError(f"no device could connect to the {name} server: {connect['notes']}")
        await asyncio.sleep(SETTLE_S)
        rss_connected = tree_rss_bytes(pid)
        n = connect["connected"]
        if database_url is not None:
            backends = await backend_pids(database_url)
        if settings.mode == "open":
            await gens.load(mode="open", rate=settings.rate)
            await window("warmup", settings.warmup)
            await window("measure", settings.seconds)
        elif settings.mode == "closed":
            await gens.load(mode="closed", batch=settings.batch)
            await window("warmup", settings.warmup)
            await window("measure", settings.seconds)
        else:
            await gens.load(mode="closed", batch=1)
            await window("warmup", settings.warmup)
            await window("capacity", settings.capacity_seconds)
            await gens.mark("overload")
            readings["overload"] = read()
            so_far = await gens.report()
            capacity = so_far["windows"]["capacity"]["accepted"] / (
                readings["overload"].t - readings["capacity"].t
            )
            if capacity <= 0:
                raise BenchError(
                    f"the {name} server acked nothing in the closed loop: no capacity to offer 2x"
                )
            extra = {"capacity_fixes_per_s": round(capacity, 1), "devices": n}
            progress(f"{name}: capacity {capacity:.0f} fixes/s; offering {OVERLOAD_FACTOR:g}x")
            await gens.load(mode="open", rate=OVERLOAD_FACTOR * capacity / n, phone=True)
            await asyncio.sleep(settings.seconds)
            progress(f"{name}: dropping to {AFTER_FACTOR:g}x capacity")
            await window("after", 0)
            await gens.load(mode="open", rate=AFTER_FACTOR * capacity / n, phone=True)
            await asyncio.sleep(settings.after_seconds)
        await gens.mark("drain")
        readings["drain"] = read()
        rss_end = tree_rss_bytes(pid)
        await gens.load(mode="idle")
        drain_started = time.perf_counter()
        while time.perf_counter() - drain_started < DRAIN_S and await gens.in_flight():
            await asyncio.sleep(0.25)  # poll interval, bounded by DRAIN_S
        drained_s = time.perf_counter() - drain_started
        report = await gens.report()
    finally:
        await gens.close()

    labels = list(readings)
    result: dict[str, Any] = {}
    for label, following in zip(labels, labels[1:], strict=False):
        if label in _REPORTED[settings.mode]:
            result[label] = figures.window(report["windows"][label], readings[label], readings[following])
    if settings.mode == "overload":
        capacity = extra["capacity_fixes_per_s"]
        for label in ("overload", "after"):
            result[label]["offered_vs_capacity"] = figures.ratio(
                result[label]["offered_fixes_per_s"], capacity
            )
            result[label]["acked_vs_capacity"] = figures.ratio(result[label]["acked_fixes_per_s"], capacity)
    result["connect"] = connect
    if viewer is not None:
        result["viewer"] = {"subscribed": viewer["subscribed"], "connect_s": round(viewer["connect_s"], 3)}
    result["memory"] = {
        "rss_before_connect_mb": round(rss_before / 2**20, 1),
        "rss_connected_mb": round(rss_connected / 2**20, 1),
        "rss_at_end_mb": round(rss_end / 2**20, 1),
        "rss_per_connection_kb": round((rss_connected - rss_before) / n / 1024, 2),
        "processes": len(tree_pids(pid)),
    }
    result["drain"] = {"waited_s": round(drained_s, 2), "unanswered_events": report["in_flight"]}
    result["devices_connected_at_end"] = report["connected"]
    if report["notes"]:
        result["generator_notes"] = report["notes"]
    _say(name, settings.mode, result)
    return result


async def backend_pids(database_url: str) -> list[int]:
    """The PostgreSQL backends serving `database_url` (the server's pool), not this query's own."""
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await conn.close()
    return [int(r[0]) for r in rows]


def _say(name: str, mode: str, result: dict[str, Any]) -> None:
    for label in _REPORTED[mode]:
        w = result.get(label)
        if w is None:
            continue
        viewer = figures.get(w, "fix_to_viewer_ms", "p99")
        progress(
            f"{name} {label}: offered {w['offered_fixes_per_s']:.0f}/s, acked {w['acked_fixes_per_s']:.0f}/s "
            f"({w['acked_events_per_s']:.0f} events/s), "
            f"ack p50 {w['ack_ms']['p50']} p99 {w['ack_ms']['p99']} ms, "
            f"retries {w['retries']}, server {w['server_cpu_cores']} cores "
            f"(+{w['postgres_cpu_cores']} PostgreSQL), "
            f"other tenants {w.get('other_busy_cores')} cores, generators "
            f"{w['loadgen_cpu_cores']} cores"
            + (f", fix->viewer p99 {viewer} ms" if viewer is not None else "")
        )
