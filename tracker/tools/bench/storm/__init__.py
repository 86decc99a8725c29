"""`tracker bench storm`: a connected fleet through a graceful restart and a crash of the server.

What it measures. N devices (default 10,000), each on its own websocket from the fleet bench's Node
generator, send a fix every `--interval` s to `tracker serve` on a scratch database, and behave like
phones: on a `retry` they wait and send again; when the connection drops they keep what was not acked
and what they take offline, and reconnect with socket.io-client's jittered backoff. After `--warmup` s
the server is stopped with SIGTERM (it drains and exits), then with `kill -9`, and each time started
again on the same port and database while the devices keep coming back (`restart`). Per restart: time
until every device has had a fix acked on a new socket (goal 60 s), fix events answered `retry`,
dropped with their connection, or left unanswered on an open one (the server must refuse rather than
stall), acked fixes missing from PostGIS (goal 0) and fence events stored twice (goal 0; the devices
cross the run's fence every `--cross-every` fixes), and the server's RSS, descriptors and asyncio tasks
before the signal and after recovery (memory back to its level). The generator's CPU is reported next
to the servers'.

The pieces: `settings` (the checked flags), `restart` (one restart and its window's CPU), `ledger`
(acked fixes and fence events checked in PostGIS); the generator and its phones are the fleet bench's
(`tracker.tools.bench.fleet.generators`).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from tracker.tools.bench.fleet.figures import latency, ratio
from tracker.tools.bench.fleet.generators import Generators, Phones, node_modules
from tracker.tools.bench.report import (
    DEFAULT_BASE_URL,
    BenchError,
    machine_facts,
    progress,
    rounded,
    write_report,
)
from tracker.tools.bench.scratch import scratch_database
from tracker.tools.bench.server import raise_fd_limit, register_devices, start_server
from tracker.tools.bench.storm.ledger import acked_rows, check_acked, check_events, write_fence
from tracker.tools.bench.storm.restart import Clock, ServerCpu, restart, watching
from tracker.tools.bench.storm.settings import RECOVERY_GOAL_S, RSS_GOAL, StormSettings, build_settings
from tracker.tools.server_process import ServerProcess

__all__ = ["bench_storm", "build_settings"]

DRAIN_S = 30.0  # after the last restart: the longest wait for the phones to send what they hold
DEVICE_PREFIX = "storm-"


def bench_storm(database_url: str | None, settings: StormSettings, out: str | None) -> str:
    """Run the storm as `settings` (`build_settings` checks them) say; return its JSON report (also
    written to `out` when given)."""
    node_modules()
    fd_limit = raise_fd_limit(settings.devices + 1024)
    report = run(database_url or DEFAULT_BASE_URL, settings, fd_limit)
    return write_report(report, out)


def run(base_url: str, settings: StormSettings, fd_limit: int) -> dict[str, Any]:
    """The whole run on a scratch database of `base_url`; the report."""
    loadavg = list(os.getloadavg())
    ids = [f"{DEVICE_PREFIX}{i:05d}" for i in range(settings.devices)]
    with tempfile.TemporaryDirectory(prefix="tracker-bench-storm-") as tmp:
        with scratch_database(base_url) as (db_url, pg):
            folder = Path(tmp)
            if settings.cross_every:
                write_fence(folder / "geofences")
            servers = [start_server(db_url, folder, settings.server_env)]
            try:
                tokens = asyncio.run(register_devices(servers[0], ids))
                result = asyncio.run(_storm(servers, settings, tokens, ids))
                servers[-1].check_alive()
            finally:
                for server in servers:
                    server.stop()
            progress(f"looking up {len(result['rows'])} acked fixes in PostGIS")
            acked = asyncio.run(check_acked(db_url, result.pop("rows"), DEVICE_PREFIX + "%"))
            events = asyncio.run(check_events(db_url, list(result["clock"].started_ms.items())))
        # read while the logs are there
        result["servers"] = [
            {
                "pid": s.pid,
                "exit_code": s.process.returncode,
                "log_error_lines": s.log_error_lines(),
                "log_error_samples": s.log_error_samples(3),
            }
            for s in servers
        ]
    return _report(
        settings,
        result,
        acked,
        events,
        {**machine_facts(), "loadavg_at_start": loadavg, "fd_limit": fd_limit, **pg},
    )


async def _storm(
    servers: list[ServerProcess], settings: StormSettings, tokens: list[str], ids: list[str]
) -> dict[str, Any]:
    """Connect the fleet, load it, restart the server as asked (appending each new one to `servers`),
    drain; what the report is made of."""
    ts_base = int(time.time() * 1000)
    phones = Phones(record_acks=True, cross_every=settings.cross_every, ts_base=ts_base)
    gens = await Generators.start(
        servers[0].url,
        tokens,
        None,
        settings.generators,
        settings.connect_rate,
        settings.connect_concurrency,
        phones=phones,
    )
    clock = Clock(gens, ServerCpu(servers[0]))
    restarts: dict[str, dict[str, Any]] = {}
    try:
        async with watching(clock.cpu):
            progress(f"connecting {len(tokens)} devices")
            connect = await gens.connect_devices(timeout=60 + 3 * len(tokens) / settings.connect_rate)
            progress(f"{connect['connected']} connected in {connect['connect_s']:.1f} s")
            if not connect["connected"]:
                raise BenchError(f"no device could connect to the server: {connect['notes']}")
            await gens.load(mode="open", rate=1 / settings.interval, phone=True)
            await clock.mark("warmup")
            await asyncio.sleep(settings.warmup)
            for number, kind in enumerate(settings.restarts, 1):
                new, restarts[kind] = await restart(kind, servers[-1], number, gens, clock, settings)
                servers.append(new)
            await clock.mark("drain")
            await gens.load(mode="drain", phone=True)
            drain = await gens.drain(DRAIN_S)
            await clock.mark("end")
            report = await gens.report()
            ledger = await gens.ledger()
    finally:
        await gens.close()
    names = list(clock.readings)
    return {
        "connect": connect,
        "restarts": restarts,
        "windows": report["windows"],
        "clock": clock,
        "drain": drain,
        "connected_at_end": report["connected"],
        "notes": report["notes"],
        "rows": acked_rows(ledger, ids, names, ts_base),
    }


def _window(w: dict[str, Any], clock: Clock, name: str, following: str) -> dict[str, Any]:
    """A window's figures: what was sent in it and how it was answered, what arrived, the CPU."""
    wall = clock.readings[following].t - clock.readings[name].t
    events, answered = int(w["events"]), int(w["answered"])
    ok, retried = len(w["ack_ms"]), len(w["retry_ms"])
    return {
        "measured_s": round(wall, 2),
        "offered_fixes_per_s": round(w["generated"] / wall, 1),
        "accepted_fixes_per_s": round(w["accepted"] / wall, 1),
        "duplicate_fixes": int(w["duplicates"]),
        "sent_events": events,
        "answered_ok": ok,
        "answered_retry": retried,
        "answered_error": answered - ok - retried,
        "dropped_with_connection": int(w["dropped"]),
        "unanswered_on_open_connection": int(w["unanswered"]),
        "answered_within_2s": rounded(w["answered_within_2s"] / events if events else None, 4),
        "ack_ms": latency(w["ack_ms"]),
        "retry_answer_ms": latency(w["retry_ms"]),
        "rejected": int(w["rejected"]),
        "disconnects": int(w["disconnects"]),
        "reconnects": int(w["reconnects"]),
        "failed_connect_attempts": int(w["connect_failures"]),
        "max_ms_by_second": [round(ms) for ms in w["max_ms_by_second"]],
        **clock.cpu_cores(name, following),
    }


def _report(
    settings: StormSettings,
    result: dict[str, Any],
    acked: dict[str, Any],
    events: dict[str, Any],
    machine: dict[str, Any],
) -> dict[str, Any]:
    clock: Clock = result["clock"]
    names = list(clock.readings)
    windows = {
        name: _window(result["windows"][name], clock, name, following)
        for name, following in zip(names, names[1:], strict=False)
    }
    warm_p99 = windows["warmup"]["ack_ms"]["p99"]
    restarts = {}
    for kind, figures in result["restarts"].items():
        before = names[names.index(kind) - 1]  # fixes acked since the previous signal
        lost = acked["by_window"].get(before, {"acked": 0, "missing": 0})
        twice = events["duplicated_keys_by_window"].get(kind, 0)
        w = windows[kind]
        restarts[kind] = {
            **figures,
            "window": w,
            "ack_p99_vs_warmup": ratio(w["ack_ms"]["p99"], warm_p99),
            "acked_before_signal": lost,
            "fence_events_stored": events["events_by_window"].get(kind, 0),
            "fence_events_stored_twice": twice,
            "goals": _goals(figures, w, lost["missing"], twice),
        }
    return {
        "machine": machine,
        "settings": settings.as_report(),
        "connect": result["connect"],
        "warmup": windows["warmup"],
        "restarts": restarts,
        "drain": {**result["drain"], "window": windows["drain"]},
        "acked_fixes": acked,
        "fence_events": events,
        "devices_connected_at_end": result["connected_at_end"],
        "servers": result["servers"],
        "generator_notes": result["notes"],
        "goals_met": all(g["met"] for r in restarts.values() for g in r["goals"].values())
        and acked["missing_acked_fixes"] == 0
        and events["duplicated_keys"] == 0,
    }


def _goals(restart: dict[str, Any], window: dict[str, Any], lost: int, twice: int) -> dict[str, Any]:
    def goal(value: Any, target: float) -> dict[str, Any]:
        return {"value": value, "goal": target, "met": value is not None and value <= target}

    return {
        "all_recovered_s": goal(restart["all_recovered_s"], RECOVERY_GOAL_S),
        "acked_fixes_lost": goal(lost, 0),
        "fence_events_twice": goal(twice, 0),
        "unanswered_on_open_connection": goal(window["unanswered_on_open_connection"], 0),
        "rss_after_vs_before": goal(restart["rss_after_vs_before"], RSS_GOAL),
    }
