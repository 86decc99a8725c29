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

The pieces: `settings` (the run's checked settings), `servers` (the two servers), `generators` (the Node
processes), `runs` (one server under one mode's schedule), `figures` (tallies to figures, ratios, goals),
`bare` (the baseline server), `loadgen.mjs` (the generator: its commands; `windows.mjs`, `device.mjs`,
`viewers.mjs`), which `tracker bench storm` and `soak` also drive; what every bench shares (accounts,
the descriptor limit, /proc CPU and RSS of a process tree) is in `tracker.tools.bench`.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path
from typing import Any

from tracker.tools.bench.fleet import figures
from tracker.tools.bench.fleet.bare import gc_policy_name
from tracker.tools.bench.fleet.generators import node_modules
from tracker.tools.bench.fleet.runs import measure_server
from tracker.tools.bench.fleet.servers import VIEWER_NAME, check_workers_flag, start_bare, start_tracker
from tracker.tools.bench.fleet.settings import FleetSettings, build_settings
from tracker.tools.bench.report import DEFAULT_BASE_URL, machine_facts, write_report
from tracker.tools.bench.scratch import scratch_database
from tracker.tools.bench.server import FLEET, raise_fd_limit, register_devices, register_viewer

__all__ = ["bench_fleet", "build_settings"]


def bench_fleet(database_url: str | None, settings: FleetSettings, out: str | None) -> str:
    """Run the fleet benchmark as `settings` (`build_settings` checks them) say; return its JSON report
    (also written to `out` when given)."""
    node_modules()
    if settings.workers is not None and "tracker" in settings.servers:
        check_workers_flag()
    fd_limit = raise_fd_limit(settings.devices + 1024)
    report = run(database_url or DEFAULT_BASE_URL, settings, fd_limit)
    return write_report(report, out)


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
                    viewer = register_viewer(server, VIEWER_NAME, [FLEET])
                    results["tracker"] = asyncio.run(
                        measure_server("tracker", server.url, server.pid, settings, tokens, viewer, db_url)
                    )
                    server.check_alive()
                finally:
                    server.stop()
                results["tracker"]["server_log_error_lines"] = server.log_error_lines()
                results["tracker"]["server_log_error_samples"] = server.log_error_samples()
        if "bare" in settings.servers:
            bare = start_bare(Path(tmp), settings.bare_gc)
            try:
                tokens = [f"bare-{i:05d}" for i in range(settings.devices)]
                results["bare"] = asyncio.run(
                    measure_server("bare", bare.url, bare.pid, settings, tokens, None)
                )
                bare.check_alive()
            finally:
                bare.stop()
            results["bare"]["server_log_error_lines"] = bare.log_error_lines()
            results["bare"]["server_log_error_samples"] = bare.log_error_samples()
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
