"""`tracker bench replay`: how fast the dispatcher map opens a week of 1 Hz fixes for replay, and how
smoothly it plays it.

A scratch database gets `--devices` devices that drove around Munich for `--days` days at one fix per
`--interval-ms` (a week at 1 Hz is 604,800 fixes each), written through the project's bulk path
(`write_fixes`, as `tracker bench history` loads its history); then a real `tracker serve` on it and:

- HTTP, `--repeats` times each, median and worst: `/trail?max_points=` of the whole window (the replay's
  read, sized to the bench's screen), against the same window's every fix streamed by `format=csv` (the
  only other way to read a week at 1 Hz; the GeoJSON without max_points stops at 200,000 fixes): the
  ratio says what the thinning saves;
- the page, in headless Chromium with requests off the server's origin blocked: the replay opened on the
  whole window by the dispatcher's own controls, time from the click on Load to the trail drawn and the
  clock set (the page's `openMs`, and the wall time to `data-replay-state=ready`), against the same for one
  hour of the same device in the same page; then frames per second while it plays at 600x, against the
  same page idle just before (goal 30).

The pieces: `dataset` (the walk and its bulk write), `page` (Chromium), this module (the run and report).
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from tracker.auth import hash_token, new_token
from tracker.model import Device, Viewer
from tracker.store import accounts
from tracker.store.database import Database
from tracker.tools.bench.flags import check_range
from tracker.tools.bench.replay.dataset import walk, write_walks
from tracker.tools.bench.replay.page import FPS_GOAL, OPEN_GOAL_MS, measure_page
from tracker.tools.bench.report import DEFAULT_BASE_URL, machine_facts, progress, write_report
from tracker.tools.bench.scratch import scratch_database
from tracker.tools.bench.server import start_server
from tracker.tools.browser import CHROMIUM, VIEWPORT, require_playwright

FLEET = "replay"
SEED = 20261203
MAX_POINTS = 2 * max(VIEWPORT["width"], VIEWPORT["height"])  # as the page sizes it

__all__ = ["bench_replay"]


def bench_replay(
    database_url: str | None,
    days: float,
    interval_ms: int,
    devices: int,
    repeats: int,
    seconds: float,
    screenshot: str | None,
    out: str | None,
) -> str:
    """Run the replay benchmark; return its JSON report (also written to `out` when given)."""
    check_range("--days", days, 0.01, 7, " days (the replay's longest window)")
    check_range("--interval-ms", interval_ms, 100, 3_600_000, " ms")
    check_range("--devices", devices, 1, 20, " devices (the replay's most at once)")
    check_range("--repeats", repeats, 1, 100)
    check_range("--seconds", seconds, 1, 600)
    require_playwright()
    report = _run(database_url or DEFAULT_BASE_URL, days, interval_ms, devices, repeats, seconds, screenshot)
    text = write_report(report, out)
    page, http = report["page"], report["http"]
    progress(
        f"replay of {report['dataset']['fixes_per_device']:,} fixes: page open {page['open_ms']} ms "
        f"(1 h: {page['baseline_open_ms']} ms), server {http['replay_ms']['median']} ms "
        f"(csv {http['csv_ms']['median']} ms), {page['playing']['fps']} fps playing "
        f"({page['idle']['fps']} idle)"
    )
    return text


def _run(
    base_url: str,
    days: float,
    interval_ms: int,
    n: int,
    repeats: int,
    seconds: float,
    screenshot: str | None,
) -> dict[str, Any]:
    loadavg = list(os.getloadavg())
    end_ms = int(time.time() * 1000) // 1000 * 1000
    window_ms = round(days * 86_400_000)
    fixes = window_ms // interval_ms
    ids = [f"r-{i:02d}" for i in range(n)]
    with (
        scratch_database(base_url) as (db_url, pg),
        tempfile.TemporaryDirectory(prefix="tracker-bench-replay-") as tmp,
    ):
        viewer = asyncio.run(_accounts(db_url, ids))
        progress(f"{n} device(s) x {fixes:,} fixes, one per {interval_ms} ms, through write_fixes")
        walks = [walk(d, end_ms, fixes, interval_ms, SEED + i) for i, d in enumerate(ids)]
        load = asyncio.run(write_walks(db_url, walks, FLEET))
        del walks
        server = start_server(db_url, Path(tmp))
        try:
            window = {"from": end_ms - window_ms + 1, "to": end_ms + 1}
            http = asyncio.run(_http(server.url, viewer, ids[0], window, repeats))
            page = asyncio.run(measure_page(server.url, viewer, ids, window, seconds, screenshot))
            server.check_alive()
        finally:
            server.stop()
        log_errors = server.log_error_lines()
    return {
        "benchmark": "replay",
        "machine": {
            **machine_facts(),
            "loadavg_at_start": loadavg,
            **pg,
            "chromium": page.pop("chromium_version"),
            "playwright": importlib.metadata.version("playwright"),
        },
        "settings": {
            "days": days,
            "interval_ms": interval_ms,
            "devices": n,
            "repeats": repeats,
            "seconds": seconds,
            "max_points": MAX_POINTS,
            "viewport": dict(VIEWPORT),
            "chromium": CHROMIUM,
            "goals": {"open_ms": OPEN_GOAL_MS, "fps": FPS_GOAL},
        },
        "dataset": {"fixes_per_device": fixes, "load": load},
        "http": http,
        "page": page,
        "goals": {
            "open_ms_met": page["open_ms"] is not None and page["open_ms"] < OPEN_GOAL_MS,
            "fps_met": page["playing"]["fps"] is not None and page["playing"]["fps"] >= FPS_GOAL,
        },
        "ratios": {
            "server_replay_to_csv": _ratio(http["replay_ms"]["median"], http["csv_ms"]["median"]),
            "page_open_week_to_hour": _ratio(page["open_ms"], page["baseline_open_ms"]),
            "fps_playing_to_idle": _ratio(page["playing"]["fps"], page["idle"]["fps"]),
        },
        "server_log_error_lines": log_errors,
    }


async def _accounts(db_url: str, ids: list[str]) -> str:
    """The devices and a viewer of their fleet, straight into the database; the viewer's token."""
    db = await Database.connect(db_url)
    try:
        for d in ids:
            await accounts.insert_device(db, Device(d, FLEET, None), hash_token(new_token()), actor="bench")
        token = new_token()
        await accounts.insert_viewer(
            db, Viewer("bench-replay", frozenset([FLEET])), hash_token(token), actor="bench"
        )
    finally:
        await db.close()
    return token


async def _http(url: str, token: str, device: str, window: dict[str, int], repeats: int) -> dict[str, Any]:
    """The replay's read and the full CSV of the same window, `repeats` times each, alternating."""
    replay: list[float] = []
    csv: list[float] = []
    facts: dict[str, Any] = {}
    headers = {"Authorization": f"Bearer {token}"}
    path = f"/api/devices/{device}/trail"
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=300) as http:
        for k in range(repeats):
            t0 = time.perf_counter()
            r = await http.get(path, params={**window, "max_points": MAX_POINTS, "gap_s": 600})
            replay.append((time.perf_counter() - t0) * 1000)
            r.raise_for_status()
            p = r.json()["properties"]
            facts = {"fixes": p["fixes"], "points": p["points"], "bytes": len(r.content)}
            t0 = time.perf_counter()
            size = 0
            async with http.stream("GET", path, params={**window, "format": "csv"}) as s:
                s.raise_for_status()
                async for chunk in s.aiter_bytes():
                    size += len(chunk)
            csv.append((time.perf_counter() - t0) * 1000)
            facts["csv_bytes"] = size
            progress(f"HTTP round {k + 1}: replay read {replay[-1]:.0f} ms, csv {csv[-1]:.0f} ms")
    return {**facts, "replay_ms": _dist(replay), "csv_ms": _dist(csv)}


def _dist(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 1), "max": round(max(values), 1)}


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 3)
