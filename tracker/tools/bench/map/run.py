"""The whole run: a scratch database, then per feed its own server (and private redis-server) measured by
`FeedBench`; the report's machine facts and the settings it states."""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import tempfile
from pathlib import Path
from typing import Any

from tracker.rooms import ALL_ROOM  # where a viewer of all fleets watching the whole world is
from tracker.tools.bench.map.feed import (
    BROADCAST_INTERVAL_MS,
    H3_RESOLUTION,
    REDIS_NAMESPACE,
    VIEWER_NAMESPACE,
)
from tracker.tools.bench.map.figures import FPS_GOAL, SCRIPT_MS_PER_UPDATE_GOAL
from tracker.tools.bench.map.load_generator import MAX_IN_FLIGHT, MAX_IN_FLIGHT_DEVICE
from tracker.tools.bench.map.measure import FeedBench
from tracker.tools.bench.map.redis_server import start_redis
from tracker.tools.bench.map.settings import (
    FEED_LABELS,
    KNOWN_SHARE,
    MIN_WARMUP_PERIODS,
    SECTIONS,
    MapSettings,
)
from tracker.tools.bench.map.walk import FLEETS
from tracker.tools.bench.report import machine_facts
from tracker.tools.bench.scratch import scratch_database
from tracker.tools.bench.server import raise_fd_limit, start_server
from tracker.tools.browser import CHROMIUM, CHROMIUM_ARGS, VIEWPORT


def run(base_url: str, settings: MapSettings) -> dict[str, Any]:
    """Every feed of `settings` on its own server over one scratch database; the report."""
    if (
        "server" in settings.feeds
    ):  # the server and the load generator (they inherit it) hold a socket per device
        raise_fd_limit(max(settings.counts) + 1000)
    loadavg = list(os.getloadavg())
    sections: dict[str, Any] = {}
    chromium_version = redis_version = None
    with (
        scratch_database(base_url) as (db_url, pg),
        tempfile.TemporaryDirectory(prefix="tracker-bench-map-") as tmp,
    ):
        for feed in settings.feeds:
            folder = Path(tmp, feed)
            folder.mkdir()
            last = feed == settings.feeds[-1]
            redis = start_redis(folder) if feed == "redis" else None
            try:
                env = (
                    {"TRACKER_REDIS_URL": redis.url, "TRACKER_REDIS_NAMESPACE": REDIS_NAMESPACE}
                    if redis
                    else {}
                )
                server = start_server(db_url, folder, env)
                try:
                    figures = asyncio.run(FeedBench(server, db_url, settings, feed, redis, last).run())
                    server.check_alive()
                finally:
                    server.stop()
                figures["server_log_error_lines"] = server.log_error_lines()
                if redis:
                    redis.check_alive()
                    figures["redis"] = {"version": redis.version, "private_port": redis.port}
                    redis_version = redis.version
            finally:
                if redis:
                    redis.stop()
            version = figures.pop("chromium_version", None)
            chromium_version = chromium_version or version
            sections[SECTIONS[feed]] = {"feed": feed, "label": FEED_LABELS[feed], **figures}
    return {
        "benchmark": "map",
        "machine": {
            **machine_facts(),
            "loadavg_at_start": loadavg,
            **pg,
            "chromium": chromium_version,
            "playwright": importlib.metadata.version("playwright"),
            "redis_server": redis_version,
        },
        "settings": {
            "devices": settings.counts,
            "feeds": settings.feeds,
            "seconds": settings.seconds,
            "warmup_max_s": settings.warmup,
            "rate_per_device": settings.rate,
            "fleets": list(FLEETS),
            "viewport": dict(VIEWPORT),
            "chromium": CHROMIUM,
            "chromium_args": CHROMIUM_ARGS,
            "order": "per feed, its own server process on the same database: setup, page opened, idle "
            "window; then per device count: loaded window, pause, idle window",
            "warmup": f"a loaded window starts once {KNOWN_SHARE:.0%} of the sending devices are placed, "
            f"the page knows as many and each sent {MIN_WARMUP_PERIODS} fixes, or after warmup_max_s",
            "feed_server": "through the server: real devices, real ingest and broadcast. Devices are "
            "placed (one stored fix each) before the page opens. One fix per device per period, staggered "
            f"evenly; no wait for the ack, but a tick is skipped while the device has {MAX_IN_FLIGHT_DEVICE} "
            f"fixes unacked or all devices {MAX_IN_FLIGHT}. python-socketio AsyncClient, websocket only, "
            "one aiohttp session, one process",
            "feed_redis": "page at target rate: the server (TRACKER_REDIS_URL on a private redis-server) "
            "relays positions events that a feed process emits with python-socketio's write-only "
            f"AsyncRedisManager: every {BROADCAST_INTERVAL_MS} ms one event to room {ALL_ROOM!r} of "
            f"{VIEWER_NAMESPACE} holding the newest position of each device that moved in the interval "
            f"(contract shape, cell at H3 resolution {H3_RESOLUTION}); all N devices emitted once after the "
            "page is live, before the idle window",
            "script_ms_per_update": "DevTools ScriptDuration of the window / positions events handled",
            "goals": {"fps_goal": FPS_GOAL, "script_ms_per_update_goal": SCRIPT_MS_PER_UPDATE_GOAL},
        },
        **sections,
    }
