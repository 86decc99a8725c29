"""`tracker bench fleet`: a whole fleet on its own sockets against the real server and a bare baseline.

What it measures. N devices, each on its own websocket, send GPS fixes from a lean load generator
(Node.js, `loadgen.mjs`, raw Engine.IO/Socket.IO frames) in its own processes, against the real
`tracker serve` on a scratch database (and a viewer subscribed to the fleet, to time fix -> viewer) and,
in the same run, against a bare python-socketio server that answers every `fix` at once
(`tracker.tools.bench.fleet.bare`). Per server: offered and acked fixes/s, ack latency, `retry` answers,
unanswered events, the share answered within 2 s, fix -> viewer latency (tracker), CPU of the server
and of the generators from /proc over the window, RSS and RSS per connection; then tracker/bare ratios
and the goals of issue 12.

Why a bare baseline. A 2-core shared machine gives noisy absolute numbers; what the tracker costs on top
of python-socketio itself, measured back-to-back, is the figure that can be compared between runs.

Why open loop. Phones send on their own clock, not when the server is ready: a closed-loop client slows
down with the server and hides queueing. The open loop (`--rate` fixes/s per device, random phase) shows
it as latency and unanswered events; `--closed-loop` measures capacity; `--overload` offers twice the
measured capacity and then half of it, with devices that back off on `retry` like real phones.

The pieces: `settings` (the run's checked settings), `servers` (the two servers, accounts, descriptor
limit), `generators` (the Node processes and their line protocol), `runs` (one server under one mode's
schedule), `figures` (tallies to figures, ratios, goals), `procs` (/proc CPU and RSS of a process tree),
`bare` (the baseline server), `loadgen.mjs` (the generator).
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from tracker.tools.bench.base import DEFAULT_BASE_URL, machine_facts, progress, scratch_database, server_env
from tracker.tools.bench.fleet import figures
from tracker.tools.bench.fleet.bare import gc_policy_name
from tracker.tools.bench.fleet.generators import node_modules
from tracker.tools.bench.fleet.runs import measure_server
from tracker.tools.bench.fleet.servers import (
    BareServer,
    check_workers_flag,
    error_samples,
    raise_fd_limit,
    register_devices,
    register_viewer,
    start_tracker,
)
from tracker.tools.bench.fleet.settings import FleetSettings, build_settings

__all__ = ["bench_fleet"]


def bench_fleet(
    database_url: str | None,
    mode: str,
    devices: int | None,
    rate: float,
    seconds: float,
    warmup: float,
    batch: int,
    workers: int | None,
    server_settings: list[str],
    servers: str,
    generators: int,
    out: str | None,
    bare_gc: str = "apply",
) -> str:
    """Run the fleet benchmark; return its JSON report (also written to `out` when given)."""
    settings = build_settings(
        mode,
        devices,
        rate,
        seconds,
        warmup,
        batch,
        workers,
        server_env(server_settings),
        servers,
        generators,
        bare_gc,
    )
    node_modules()
    if settings.workers is not None and "tracker" in settings.servers:
        check_workers_flag()
    fd_limit = raise_fd_limit(settings.devices + 1024)
    report = run(database_url or DEFAULT_BASE_URL, settings, fd_limit)
    text = json.dumps(report, indent=2)
    if out:
        Path(out).write_text(text + "\n")
        progress(f"report written to {out}")
    return text


def run(base_url: str, settings: FleetSettings, fd_limit: int) -> dict[str, Any]:
    """Measure each server in turn (tracker, then bare), each on its own; the report."""
    results: dict[str, Any] = {}
    pg: dict[str, Any] = {}
    loadavg = list(os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="tracker-bench-fleet-") as tmp:
        if "tracker" in settings.servers:
            with scratch_database(base_url) as (db_url, pg):
                server = start_tracker(db_url, Path(tmp), settings.server_env, settings.workers)
                try:
                    ids = [f"fleet-{i:05d}" for i in range(settings.devices)]
                    tokens = asyncio.run(register_devices(server, ids))
                    viewer = register_viewer(server)
                    results["tracker"] = asyncio.run(
                        measure_server("tracker", server.url, server.pid, settings, tokens, viewer, db_url)
                    )
                    server.check_alive()
                finally:
                    server.stop()
                results["tracker"]["server_log_error_lines"] = server.log_error_lines()
                results["tracker"]["server_log_error_samples"] = error_samples(server.log)
        if "bare" in settings.servers:
            bare = BareServer.launch(Path(tmp), settings.bare_gc)
            try:
                tokens = [f"bare-{i:05d}" for i in range(settings.devices)]
                results["bare"] = asyncio.run(
                    measure_server("bare", bare.url, bare.pid, settings, tokens, None)
                )
                bare.check_alive()
            finally:
                bare.stop()
            results["bare"]["server_log_error_lines"] = bare.log_error_lines()
            results["bare"]["server_log_error_samples"] = error_samples(bare.log)
    report: dict[str, Any] = {
        "machine": {**machine_facts(), "loadavg_at_start": loadavg, "fd_limit": fd_limit, **pg},
        "settings": {
            **settings.as_report(),
            "order": "tracker, then bare python-socketio, back-to-back, one round",
            "generator": "Node.js ws, raw Engine.IO v4 / Socket.IO v5 frames, one socket per device",
            "bare_server": "python-socketio AsyncServer(async_mode='asgi'), /device accepts all, fix "
            f"answered at once; uvicorn with tracker.app.UVICORN_OPTIONS; GC: {gc_policy_name()} "
            f"({settings.bare_gc})",
        },
        **results,
    }
    if "tracker" in results and "bare" in results:
        report["tracker_vs_bare"] = figures.ratios(settings.mode, results["tracker"], results["bare"])
    if "tracker" in results:
        report["goals"] = figures.goals(
            settings.mode, settings.batch, results["tracker"], report.get("tracker_vs_bare")
        )
    return report
