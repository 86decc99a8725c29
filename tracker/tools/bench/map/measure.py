"""One feed's part of the run (`FeedBench`): its source started, the viewer registered, the map opened in
Chromium on the feed's own server, then the windows: idle before the runs, and per device count a loaded
window after a warm-up and an idle one after the pause."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tracker.private_redis import PrivateRedis
from tracker.tools.bench.line_protocol import WorkerProcess
from tracker.tools.bench.map.feed import BROADCAST_INTERVAL_MS
from tracker.tools.bench.map.figures import Reading, goals, ratio, ratios, window_figures
from tracker.tools.bench.map.page import (
    FRAME_COUNTER,
    FRAMES_READ,
    FRAMES_RESET,
    PAGE_STATE,
    STATS_RESET,
    MapPage,
)
from tracker.tools.bench.map.processes import browser_cpu
from tracker.tools.bench.map.settings import FEED_LABELS, KNOWN_SHARE, MIN_WARMUP_PERIODS, MapSettings
from tracker.tools.bench.map.sources import register_fleet, start_feed, start_load_generator
from tracker.tools.bench.probe import Probe
from tracker.tools.bench.procfs import proc_cpu_s
from tracker.tools.bench.report import BenchError, progress
from tracker.tools.bench.server import register_viewer
from tracker.tools.browser import VIEWPORT, launch_chromium
from tracker.tools.server_process import ServerProcess

LIVE_TIMEOUT_S = 60.0
SETTLE_S = 1.0  # after the last ack of a pause, before an idle window
DRAIN_TIMEOUT_S = 30.0
PRIME_TIMEOUT_S = 120.0
PLACE_TIMEOUT_S = 30.0  # the page knows the placed devices within this (it takes ~1 s)
CLUSTER_ZOOM = 10  # the bench's 16 km of Berlin in a few squares of the map's cluster grid
_VIEW = "() => { const m = window.tracker.map; return { center: m.getCenter(), zoom: m.getZoom() }; }"
_ZOOM_TO = "z => window.tracker.map.jumpTo({ zoom: z })"


class FeedBench:
    """One feed's part of the run: setup, the page opened on its own server, its windows."""

    def __init__(
        self,
        server: ServerProcess,
        db_url: str,
        settings: MapSettings,
        feed: str,
        redis: PrivateRedis | None,
        screenshot_here: bool,
    ) -> None:
        self.server = server
        self.db_url = db_url
        self.s = settings
        self.feed = feed
        self.label = FEED_LABELS[feed]
        self.redis = redis
        self.screenshot_here = screenshot_here
        self.probe = Probe(db_url, server.pid, server.url)
        self.source: WorkerProcess | None = None  # the load generator or the feed
        self.view: MapPage | None = None
        self.setup: dict[str, Any] = {}

    async def run(self) -> dict[str, Any]:
        n = max(self.s.counts)
        if self.feed == "server":
            tokens, self.setup["registration"] = await register_fleet(self.server, n)
        viewer = await self._viewer()
        try:
            if self.feed == "server":
                self.source, self.setup["connect"] = await start_load_generator(
                    self.server, tokens, self.s.rate
                )
                self.setup["priming"] = await self._prime(n)
            else:
                assert self.redis is not None
                self.source, self.setup["feed_start"] = await start_feed(self.redis, n, self.s.rate)
            await self.probe.open()
            try:
                figures = await self._browse(viewer)
            finally:
                await self.probe.close()
        finally:
            if self.source is not None:
                await self.source.close()
        return {**self.setup, **figures}

    async def _prime(self, n: int) -> dict[str, Any]:
        """Devices without a stored fix send until KNOWN_SHARE of them have one (bounded), so that the page
        opens on a placed fleet, as a dispatcher's does, and frames it."""
        assert self.source is not None
        progress(f"placing the {n} devices: those without a stored fix send until {KNOWN_SHARE:.0%} have one")
        t0 = time.perf_counter()
        await self.source.command("send", active=n, unplaced_only=True)
        stored = 0
        while time.perf_counter() - t0 < PRIME_TIMEOUT_S:
            stored = (await self.source.command("stats"))["devices_stored"]
            if stored >= KNOWN_SHARE * n:
                break
            await asyncio.sleep(0.5)
        await self.source.command("send", active=0)
        await self._drain()
        wall = time.perf_counter() - t0
        progress(f"{stored} devices placed in {wall:.1f} s")
        return {"seconds": round(wall, 2), "devices_with_a_stored_fix": stored}

    async def _place(self, n: int) -> dict[str, Any]:
        """The feed emits all n devices once (over one period, in one event per interval) to the live page,
        which frames them when it first draws them; then until the page knows KNOWN_SHARE of them."""
        assert self.source is not None and self.view is not None
        progress(f"the feed places the {n} devices")
        t0 = time.perf_counter()
        placed = await self.source.command("place", timeout=60 + n / 100)
        known = None
        while time.perf_counter() - t0 < PLACE_TIMEOUT_S:
            known = await self.view.devices()
            if known is not None and known >= KNOWN_SHARE * n:
                break
            await asyncio.sleep(0.2)
        wall = time.perf_counter() - t0
        await asyncio.sleep(SETTLE_S)
        view = await self.view.map_view()
        progress(f"the page knows {known} devices after {wall:.1f} s; map view {view}")
        if known is None or known < KNOWN_SHARE * n:
            raise BenchError(
                f"the page knows {known} of the {n} devices the feed placed after {wall:.0f} s: do the "
                f"feed's events reach it? feed: {placed}"
            )
        return {
            "devices": n,
            "emit_s": placed.get("seconds"),
            "events": placed.get("events"),
            "redis_subscribers": placed.get("subscribers"),
            "seconds": round(wall, 2),
            "page_devices": known,
            "map_view": view,
        }

    async def _viewer(self) -> str:
        return await asyncio.to_thread(register_viewer, self.server, f"bench-map-{self.feed}", "all")

    async def _browse(self, viewer: str) -> dict[str, Any]:
        from playwright.async_api import async_playwright

        async with async_playwright() as pw:
            browser = await launch_chromium(pw)
            try:
                context = await browser.new_context(viewport=VIEWPORT)
                page = await context.new_page()
                view = self.view = MapPage(page, await context.new_cdp_session(page), self.server.url)
                page.on("console", lambda m: view.error(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda e: view.error(f"page error: {e}"))
                await context.route("**/*", view.route)
                await page.add_init_script(FRAME_COUNTER)
                await view.cdp.send("Performance.enable")
                progress(f"{self.label}: opening the map in Chromium")
                t0 = time.perf_counter()
                await page.goto(f"{self.server.url}/?token={viewer}", wait_until="domcontentloaded")
                await self._wait_live()
                live_s = time.perf_counter() - t0
                progress(f"the page is live after {live_s:.1f} s")
                if self.feed == "redis":
                    self.setup["placement"] = await self._place(max(self.s.counts))
                figures = await self._windows()
                return {
                    **figures,
                    "page_live_s": round(live_s, 2),
                    "chromium_version": browser.version,
                    "blocked_requests": {"count": sum(view.blocked.values()), "by_host": dict(view.blocked)},
                    "console_errors": {
                        "count": sum(view.console_errors.values()),
                        "by_message": dict(view.console_errors.most_common()),
                    },
                }
            finally:
                await browser.close()

    async def _wait_live(self) -> None:
        assert self.view is not None
        try:
            await self.view.page.wait_for_selector(
                "body[data-state=live]", state="attached", timeout=LIVE_TIMEOUT_S * 1000
            )
        except Exception as exc:
            try:
                seen = await self.view.page.evaluate(PAGE_STATE)
            except Exception as inner:
                seen = {"error": str(inner)}
            raise BenchError(
                f"the map page did not reach body[data-state=live] within {LIVE_TIMEOUT_S:.0f} s "
                f"({type(exc).__name__}); it shows data-state={seen.get('state')!r}, title "
                f"{seen.get('title')!r}, text {seen.get('text')!r}; console errors: "
                f"{dict(self.view.console_errors) or 'none'}"
            ) from None

    async def _windows(self) -> dict[str, Any]:
        assert self.source is not None
        await asyncio.sleep(SETTLE_S)
        idle_before = await self._window(
            f"{self.label}: idle before the runs (devices placed, none moving)", 0
        )
        runs = []
        for k in self.s.counts:
            await self.source.command("send", active=k)
            warm = await self._warm_up(k)
            loaded = await self._window(f"{self.label}: {k} devices sending", k)
            loaded["warmup"] = warm
            if self.s.screenshot and self.screenshot_here and k == self.s.counts[-1]:
                assert self.view is not None
                await self.view.page.screenshot(path=self.s.screenshot)
                progress(f"screenshot written to {self.s.screenshot}")
            clustered = await self._clustered(k) if self.s.clusters else None
            await self.source.command("send", active=0)
            await self._drain()
            idle = await self._window(f"{self.label}: {k} devices paused", 0)
            offered = round(k * self.s.rate, 1)
            received = loaded["page"]["positions_per_s"]
            runs.append(
                {
                    "feed": self.feed,
                    "label": f"{self.label}, {k} devices",
                    "devices": k,
                    "offered_positions_per_s": offered,
                    "received_positions_per_s": received,
                    "received_share": ratio(received, offered),
                    "loaded": loaded,
                    "idle": idle,
                    "goals": goals(loaded),
                    "ratios_to_idle": ratios(loaded, idle),
                    **(
                        {"clustered": clustered, "ratios_clustered_to_exact": ratios(clustered, loaded)}
                        if clustered
                        else {}
                    ),
                }
            )
        return {"idle_before": idle_before, "runs": runs}

    async def _clustered(self, k: int) -> dict[str, Any]:
        """A loaded window zoomed out to CLUSTER_ZOOM, once the page shows clusters; the view restored."""
        assert self.view is not None
        page = self.view.page
        before = await page.evaluate(_VIEW)
        await page.evaluate(_ZOOM_TO, CLUSTER_ZOOM)
        await page.wait_for_function("() => window.tracker.clusters().length > 0", timeout=30_000)
        figures = await self._window(f"{self.label}: {k} devices sending, clustered", k)
        shown = await page.evaluate("() => window.tracker.clusters()")
        figures["clusters"] = {
            "zoom": CLUSTER_ZOOM,
            "markers": len(shown),
            "devices_in_clusters": sum(c["count"] for c in shown),
        }
        await page.evaluate("v => window.tracker.map.jumpTo(v)", before)
        return figures

    async def _placed(self) -> int:
        """Devices placed: with a stored fix (server feed), emitted at least once (redis feed)."""
        assert self.source is not None
        stats = await self.source.command("stats")
        return int(stats["devices_stored" if self.feed == "server" else "devices_placed"])

    async def _warm_up(self, k: int) -> dict[str, Any]:
        """Until KNOWN_SHARE of the k devices are placed and the page knows as many devices, and each
        sent a few fixes; at most `warmup` s."""
        assert self.view is not None
        least = min(self.s.warmup, MIN_WARMUP_PERIODS / self.s.rate)
        t0 = time.perf_counter()
        known = placed = None
        while (elapsed := time.perf_counter() - t0) < self.s.warmup:
            known = await self.view.devices()
            placed = await self._placed()
            if elapsed >= least and known is not None and min(known, placed) >= KNOWN_SHARE * k:
                break
            await asyncio.sleep(0.5)
        elapsed = time.perf_counter() - t0
        progress(
            f"{self.label}, {k} devices: warm-up {elapsed:.1f} s ({placed} devices placed, the page knows "
            f"{known}); measuring {self.s.seconds:g} s"
        )
        return {"seconds": round(elapsed, 2), "page_devices": known, "devices_placed": placed}

    async def _drain(self) -> None:
        """Wait for the load generator's unacked fixes (bounded), then let the page settle."""
        assert self.source is not None
        if self.feed == "server":
            deadline = time.perf_counter() + DRAIN_TIMEOUT_S
            while time.perf_counter() < deadline:
                if not (await self.source.command("stats"))["in_flight"]:
                    break
                await asyncio.sleep(0.2)
        else:  # the feed stops at once; the last event is at most one interval old
            await asyncio.sleep(BROADCAST_INTERVAL_MS / 1000)
        await asyncio.sleep(SETTLE_S)

    async def _read(self) -> Reading:
        assert self.source is not None and self.view is not None
        exclude = {self.server.pid, self.source.pid} | ({self.redis.pid} if self.redis else set())
        return Reading(
            probe=await self.probe.snapshot(),
            browser=browser_cpu(exclude),
            load=await self.source.command("stats"),
            cdp=await self.view.metrics(),
            stats=await self.view.stats(),
            redis_cpu=proc_cpu_s(self.redis.pid) if self.redis else None,
        )

    async def _window(self, label: str, active: int) -> dict[str, Any]:
        """Measure `seconds` of the page as it is now: frames, script time, page stats, CPU."""
        assert self.view is not None
        page = self.view.page
        await self.probe.find_postgres()
        begin = await self._read()
        reset = bool(await page.evaluate(STATS_RESET))
        await page.evaluate(FRAMES_RESET)
        await asyncio.sleep(self.s.seconds)
        frames = await page.evaluate(FRAMES_READ)
        end = await self._read()
        end.map_view = await self.view.map_view()
        figures = window_figures(
            label, self.feed, active, self.s.rate, begin, end, frames, reset, self.probe.pg_kind
        )
        return figures
