"""The queries of the report, each over HTTP as a dispatcher's client sends them: how to draw a
request's random parameters, its URL, the store function the route calls, and the timed series.

Policy: sequential requests on one keep-alive client, fresh random parameters each (seeded), a warm-up
that is not timed; the server's CPU over the timed requests is read from /proc.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np

from tracker.api.history import MAX_TRAIL_FIXES
from tracker.api.params import encode_cursor
from tracker.model import Fence, Window
from tracker.parse import Box
from tracker.store import history
from tracker.store.area import visits_in_bbox, visits_in_fence
from tracker.store.database import DAY_MS, Database
from tracker.store.fixes import positions_page
from tracker.tools.bench.history.dataset import CITY, FLEETS, M_PER_DEG, SEED, Plan
from tracker.tools.bench.procfs import proc_cpu_s
from tracker.tools.bench.report import BenchError, percentile, progress, rounded
from tracker.tools.server_process import ServerProcess

BOX_M = 2_000.0
HOUR_MS = 3_600_000
NEARBY_RADIUS_M = 1_000.0
PAGE_LIMIT = 1_000
TRAIL_GOAL_P95_MS = 50.0


@dataclass(frozen=True)
class Sample:
    """Random parameters of one request; which fields count depends on the query."""

    device: str = ""
    from_ms: int = 0
    to_ms: int = 0
    after_ms: int | None = None
    box: Box | None = None
    fence: str = ""
    lat: float = 0.0
    lon: float = 0.0


StoreCall = Callable[[Database, Sample], Awaitable[object]]


@dataclass(frozen=True)
class Kind:
    """One query of the report: how to draw its parameters, its URL, and the store function behind it."""

    name: str
    what: str
    draw: Callable[[np.random.Generator], Sample]
    url: Callable[[Sample], tuple[str, dict[str, str]]]
    store: StoreCall | None
    items: Callable[[Any], int]
    goal_p95_ms: float | None = None


def kinds_of(plan: Plan, fences: dict[str, Fence]) -> list[Kind]:
    """Every query of the report, the district one only when the districts were loaded as fences."""
    fence_ids = sorted(fences)
    ids = plan.history_ids
    day_from, day_to = plan.end_ms - DAY_MS, plan.end_ms + 1
    granted = sorted(FLEETS)
    west, south, east, north = CITY
    half_lat = BOX_M / 2 / M_PER_DEG
    half_lon = BOX_M / 2 / (M_PER_DEG * math.cos(math.radians((south + north) / 2)))

    def device(rng: np.random.Generator) -> str:
        return ids[int(rng.integers(len(ids)))]

    def hour(rng: np.random.Generator) -> tuple[int, int]:
        start = day_from + int(rng.integers(0, DAY_MS - HOUR_MS))
        return start, start + HOUR_MS

    def window(s: Sample) -> dict[str, str]:
        return {"from": str(s.from_ms), "to": str(s.to_ms)}

    def trail(rng: np.random.Generator) -> Sample:
        return Sample(device=device(rng), from_ms=day_from, to_ms=day_to)

    def page_after(rng: np.random.Generator) -> Sample:
        # a cursor at a random time of the day, as a client paging through it would hold
        return Sample(device(rng), day_from, day_to, after_ms=day_from + int(rng.integers(0, DAY_MS)))

    def box(rng: np.random.Generator) -> Sample:
        lat = float(rng.uniform(south + half_lat, north - half_lat))
        lon = float(rng.uniform(west + half_lon, east - half_lon))
        start, end = hour(rng)
        return Sample(
            from_ms=start, to_ms=end, box=(lon - half_lon, lat - half_lat, lon + half_lon, lat + half_lat)
        )

    def district(rng: np.random.Generator) -> Sample:
        start, end = hour(rng)
        return Sample(from_ms=start, to_ms=end, fence=fence_ids[int(rng.integers(len(fence_ids)))])

    def point(rng: np.random.Generator) -> Sample:
        return Sample(lat=float(rng.uniform(south, north)), lon=float(rng.uniform(west, east)))

    def positions_url(s: Sample) -> tuple[str, dict[str, str]]:
        query = {**window(s), "limit": str(PAGE_LIMIT)}
        if s.after_ms is not None:
            query["cursor"] = encode_cursor(s.after_ms)
        return f"/api/devices/{s.device}/positions", query

    async def positions_store(db: Database, s: Sample) -> object:
        return await positions_page(db, s.device, Window(s.from_ms, s.to_ms, s.after_ms, PAGE_LIMIT))

    def box_text(s: Sample) -> str:
        assert s.box is not None
        return ",".join(f"{v:.6f}" for v in s.box)

    kinds = [
        Kind(
            "trail_24h",
            "GET /api/devices/{id}/trail?from&to: one device's 24 hours as GeoJSON",
            trail,
            lambda s: (f"/api/devices/{s.device}/trail", window(s)),
            lambda db, s: history.track(db, s.device, s.from_ms, s.to_ms, MAX_TRAIL_FIXES),
            lambda body: int(body["properties"]["points"]),
            TRAIL_GOAL_P95_MS,
        ),
        Kind(
            "positions_first_page",
            f"GET /api/devices/{{id}}/positions?from&to&limit={PAGE_LIMIT} (24 h window, no cursor)",
            trail,
            positions_url,
            positions_store,
            lambda body: len(body["features"]),
        ),
        Kind(
            "positions_cursor_page",
            f"GET /api/devices/{{id}}/positions?from&to&limit={PAGE_LIMIT}&cursor (cursor at a random time "
            "of the 24 h, as encode_cursor makes it)",
            page_after,
            positions_url,
            positions_store,
            lambda body: len(body["features"]),
        ),
        Kind(
            "area_bbox_1h",
            f"GET /api/area?bbox&from&to: a {BOX_M / 1000:g}x{BOX_M / 1000:g} km box, one random hour",
            box,
            lambda s: ("/api/area", {**window(s), "bbox": box_text(s)}),
            lambda db, s: visits_in_bbox(db, s.box or CITY, s.from_ms, s.to_ms, granted),
            lambda body: len(body["devices"]),
        ),
    ]
    if fence_ids:
        kinds.append(
            Kind(
                "area_district_1h",
                "GET /api/area?fence&from&to: a random Munich district (a loaded fence), one random hour",
                district,
                lambda s: ("/api/area", {**window(s), "fence": s.fence}),
                lambda db, s: visits_in_fence(db, fences[s.fence], s.from_ms, s.to_ms, granted),
                lambda body: len(body["devices"]),
            )
        )
    kinds.append(
        Kind(
            "nearby_live",
            f"GET /api/nearby?lat&lon&radius_m={NEARBY_RADIUS_M:g}: over {plan.settings.live_devices} live "
            "devices, a random point in the city",
            point,
            lambda s: (
                "/api/nearby",
                {"lat": f"{s.lat:.6f}", "lon": f"{s.lon:.6f}", "radius_m": f"{NEARBY_RADIUS_M:g}"},
            ),
            None,
            lambda body: len(body["devices"]),
        )
    )
    return kinds


def latency_summary(values_ms: Sequence[float]) -> dict[str, Any]:
    """n, p50, p95, p99, mean and max of latencies in ms."""
    ordered = sorted(values_ms)
    return {
        "n": len(ordered),
        "p50_ms": rounded(percentile(ordered, 50)),
        "p95_ms": rounded(percentile(ordered, 95)),
        "p99_ms": rounded(percentile(ordered, 99)),
        "mean_ms": rounded(statistics.fmean(ordered) if ordered else None),
        "max_ms": rounded(ordered[-1] if ordered else None),
    }


def http_series(
    server: ServerProcess, token: str, kinds: Sequence[Kind], plan: Plan
) -> dict[str, dict[str, Any]]:
    """Each query over HTTP, sequentially: a warm-up, then the timed requests; figures by query name."""
    rng = np.random.default_rng(SEED + 1)
    n, warmup = plan.settings.requests, plan.settings.warmup
    results: dict[str, dict[str, Any]] = {}
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=60) as http:
        for kind in kinds:
            times: list[float] = []
            sizes: list[int] = []
            items: list[int] = []
            cpu0 = 0.0
            for i in range(warmup + n):
                if i == warmup:
                    cpu0 = proc_cpu_s(server.pid) or 0.0
                path, query = kind.url(kind.draw(rng))
                t0 = time.perf_counter()
                r = http.get(path, params=query)
                elapsed = (time.perf_counter() - t0) * 1000
                if r.status_code != 200:
                    raise BenchError(f"{kind.name}: {path} answered {r.status_code}: {r.text:.300}")
                if i >= warmup:
                    times.append(elapsed)
                    sizes.append(len(r.content))
                    items.append(kind.items(r.json()))
            server_cpu = (proc_cpu_s(server.pid) or 0.0) - cpu0
            figures = latency_summary(times)
            results[kind.name] = {
                "name": kind.name,
                "request": kind.what,
                "http": figures,
                "response_bytes": {
                    "mean": round(statistics.fmean(sizes)),
                    "min": min(sizes),
                    "max": max(sizes),
                },
                "items": {"mean": round(statistics.fmean(items), 1), "min": min(items), "max": max(items)},
                "server_cpu_ms_per_request": round(server_cpu / n * 1000, 3),
            }
            if kind.goal_p95_ms is not None:
                results[kind.name]["goal_p95_ms"] = kind.goal_p95_ms
                results[kind.name]["goal_met"] = figures["p95_ms"] <= kind.goal_p95_ms
            progress(
                f"{kind.name}: p50 {figures['p50_ms']:.1f} ms, p95 {figures['p95_ms']:.1f} ms, "
                f"{statistics.fmean(sizes) / 1000:.0f} kB"
            )
    return results
