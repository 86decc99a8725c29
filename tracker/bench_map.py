"""`tracker bench map`: the dispatcher map in headless Chromium while thousands of devices stream fixes.

Policy: the real `tracker serve` runs on a scratch database; N devices (4 fleets) and one viewer of all
fleets are registered through the admin API. A load generator in its own process (`--worker`: settings
on stdin, one JSON line per command on stdout) holds N Socket.IO device connections and, on command, lets
the first k of them send one fix per period each, staggered, moving around central Berlin. It never waits
for an ack before the next tick, but a device with unacked fixes, or any device while too many are
unacked, skips its tick (counted): an overloaded server shows as a lower acked rate, not as a queue
without end. Every device is placed once, then Chromium (`tracker/browser.py`) opens the map with the
viewer's token, requests off the server's origin (map tiles) blocked. Per window: frames counted with
requestAnimationFrame, main-thread script time from the DevTools Performance domain, the page's own
`window.tracker.stats()`, the CPU of each process. The baseline is the same page in the same run with
nothing sent: an idle window before the runs and one right after each loaded window.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import json
import math
import os
import random
import resource
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from tracker.bench import (
    CLK_TCK,
    DEFAULT_BASE_URL,
    BenchError,
    _child_env,
    _metric_deltas,
    _Probe,
    _Server,
    _Snapshot,
    machine_facts,
    percentile,
    proc_cpu_s,
    progress,
    scratch_database,
)
from tracker.browser import CHROMIUM, CHROMIUM_ARGS, VIEWPORT, launch_chromium, require_playwright

if TYPE_CHECKING:
    from playwright.async_api import CDPSession, Page, Route

FLEETS = ("couriers", "vans", "bikes", "trucks")
FPS_GOAL = 30.0
SCRIPT_MS_PER_UPDATE_GOAL = 16.0
KNOWN_SHARE = 0.95  # a loaded window starts once the page knows this share of the sending devices
MIN_WARMUP_PERIODS = 3  # ... and the devices have sent at least this many fixes each
REGISTER_CONCURRENCY = 20
CONNECT_CONCURRENCY = 100
LIVE_TIMEOUT_S = 60.0
SETTLE_S = 1.0  # after the last ack of a pause, before an idle window
DRAIN_TIMEOUT_S = 30.0
PRIME_TIMEOUT_S = 120.0
CENTER = (13.405, 52.52)  # lon, lat: central Berlin
RADIUS_M = 8000.0
M_PER_DEG = 111_320.0
TOP_SPEED = {"couriers": 12.0, "vans": 16.0, "bikes": 7.0, "trucks": 14.0}  # m/s
MAX_IN_FLIGHT_DEVICE = 2  # a device with this many unacked fixes skips its tick (counted)
MAX_IN_FLIGHT = 500  # nor does any device send while this many fixes are unacked in all
CLIENT_PING_TOLERANCE_S = 60.0
_WORKER_FLAG = "--worker"

# Counts frames with requestAnimationFrame from the first paint on; `__benchFrames.reset()` starts a window.
_FRAME_COUNTER = """
(() => {
  const s = { frames: 0, last: 0, gaps: [], t0: 0 };
  s.reset = () => { s.frames = 0; s.gaps = []; s.t0 = performance.now(); };
  const tick = (t) => {
    if (s.last) s.gaps.push(t - s.last);
    s.last = t;
    s.frames++;
    requestAnimationFrame(tick);
  };
  s.reset();
  requestAnimationFrame(tick);
  window.__benchFrames = s;
})();
"""
_FRAMES_RESET = "() => { window.__benchFrames.reset(); return true; }"
_FRAMES_READ = """() => { const s = window.__benchFrames;
  return { frames: s.frames, gaps: s.gaps, elapsed: performance.now() - s.t0 }; }"""
_STATS = """() => { const t = window.tracker;
  if (!t || typeof t.stats !== "function") return null;
  try { return t.stats(); } catch (e) { return { error: String(e) }; } }"""
_STATS_RESET = """() => { const t = window.tracker;
  if (!t || typeof t.resetStats !== "function") return false;
  try { t.resetStats(); return true; } catch (e) { return false; } }"""
_PAGE_STATE = """() => ({ state: document.body ? document.body.dataset.state || null : null,
  title: document.title, text: document.body ? document.body.innerText.slice(0, 300) : "" })"""
_CDP_METRICS = ("ScriptDuration", "TaskDuration", "LayoutDuration", "RecalcStyleDuration")


# --- the command -------------------------------------------------------------------------------------


def bench_map(
    database_url: str | None,
    devices: str,
    seconds: float,
    warmup: float,
    rate: float,
    screenshot: str | None,
    out: str | None,
) -> str:
    """Run the map benchmark; return its JSON report (also written to `out` when given)."""
    counts = parse_counts(devices)
    if not 1 <= seconds <= 600:
        raise BenchError(f"--seconds must be between 1 and 600; got {seconds:g}")
    if not 0 <= warmup <= 600:
        raise BenchError(f"--warmup must be between 0 and 600; got {warmup:g}")
    if not 0.01 <= rate <= 10:
        raise BenchError(f"--rate must be between 0.01 and 10 fixes/s per device; got {rate:g}")
    require_playwright()
    settings = _Settings(counts, seconds, warmup, rate, screenshot)
    report = _run(database_url or DEFAULT_BASE_URL, settings)
    text = json.dumps(report, indent=2)
    if out:
        Path(out).write_text(text + "\n")
        progress(f"report written to {out}")
    _summary(report)
    return text


def parse_counts(text: str) -> list[int]:
    """`"1000,10000"` -> [1000, 10000]; each between 1 and 20000."""
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise BenchError(
            f"--devices must be comma-separated integers such as 1000,10000; got {text!r}"
        ) from None
    if not counts or any(not 1 <= c <= 20_000 for c in counts):
        raise BenchError(f"--devices counts must be between 1 and 20000; got {text!r}")
    return counts


@dataclass
class _Settings:
    counts: list[int]
    seconds: float
    warmup: float
    rate: float
    screenshot: str | None


def _raise_file_limit(devices: int) -> None:
    """The server and the load generator (children, they inherit it) hold a socket per device."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = devices + 1000
    if hard < needed:
        raise BenchError(
            f"{devices} devices need {needed} open files in the server and the load generator, but the "
            f"limit is {hard} (ulimit -Hn); raise it or pass fewer --devices"
        )
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _run(base_url: str, settings: _Settings) -> dict[str, Any]:
    _raise_file_limit(max(settings.counts))
    with (
        scratch_database(base_url) as (db_url, pg),
        tempfile.TemporaryDirectory(prefix="tracker-bench-map-") as tmp,
    ):
        server = _Server.start(db_url, Path(tmp), {})
        try:
            figures = asyncio.run(_Bench(server, db_url, settings).run())
            server.check_alive()
        finally:
            server.stop()
        log_errors = server.log_error_lines()
    return {
        "benchmark": "map",
        "machine": {
            **machine_facts(),
            "loadavg_at_start": figures.pop("loadavg_at_start"),
            **pg,
            "chromium": figures.pop("chromium_version"),
            "playwright": importlib.metadata.version("playwright"),
        },
        "settings": {
            "devices": settings.counts,
            "seconds": settings.seconds,
            "warmup_max_s": settings.warmup,
            "rate_per_device": settings.rate,
            "fleets": list(FLEETS),
            "viewport": dict(VIEWPORT),
            "chromium": CHROMIUM,
            "chromium_args": CHROMIUM_ARGS,
            "order": "devices placed (one fix each), page opened, idle window; then per device count: "
            "loaded window, pause, idle window",
            "warmup": f"a loaded window starts once {KNOWN_SHARE:.0%} of the sending devices have a stored "
            f"fix, the page knows as many and each sent {MIN_WARMUP_PERIODS} fixes, or after warmup_max_s",
            "sender": "one fix per device per period, staggered evenly; no wait for the ack, but a tick is "
            f"skipped while the device has {MAX_IN_FLIGHT_DEVICE} fixes unacked or all devices "
            f"{MAX_IN_FLIGHT}",
            "transport": "python-socketio AsyncClient, websocket only, one aiohttp session, one process",
            "script_ms_per_update": "DevTools ScriptDuration of the window / positions events handled",
            "goals": {"fps_goal": FPS_GOAL, "script_ms_per_update_goal": SCRIPT_MS_PER_UPDATE_GOAL},
        },
        **figures,
        "server_log_error_lines": log_errors,
    }


def _round(x: float | None, digits: int = 3) -> float | None:
    return None if x is None else round(x, digits)


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 3)


def _dist(values: Sequence[float]) -> dict[str, Any]:
    ordered = sorted(values)
    return {
        "count": len(ordered),
        "p50": _round(percentile(ordered, 50)),
        "p95": _round(percentile(ordered, 95)),
        "max": _round(ordered[-1] if ordered else None),
    }


def _summary(report: dict[str, Any]) -> None:
    reg, conn, prime = report["registration"], report["connect"], report["priming"]
    progress(
        f"registered {reg['devices']} devices in {reg['seconds']} s; connected {conn['connected']} in "
        f"{conn['connect_s']} s ({conn['rss_mb']} MB load generator); placed "
        f"{prime['devices_with_a_stored_fix']} in {prime['seconds']} s"
    )
    idle = report["idle_before"]
    progress(
        f"idle page: {_fmt(idle['page']['fps'])} fps, {_fmt(idle['script']['script_ms_per_s'])} ms script/s"
    )
    for run in report["runs"]:
        loaded, goals, ratios = run["loaded"], run["goals"], run["ratios_to_idle"]
        load, page, cores = loaded["load"], loaded["page"], loaded["cpu_cores"]
        progress(
            f"{run['devices']} devices: {_fmt(load['acked_fixes_per_s'])} acked fixes/s of "
            f"{_fmt(load['offered_fixes_per_s'])} offered; page {_fmt(page['positions_per_s'])} positions/s "
            f"in {_fmt(page['updates_per_s'])} updates/s; {_fmt(goals['fps'])} fps "
            f"(goal {FPS_GOAL:g}: {_met(goals['fps_met'])}, idle ratio {_fmt(ratios['fps'])}), "
            f"{_fmt(goals['script_ms_per_update'])} ms script/update "
            f"(goal {SCRIPT_MS_PER_UPDATE_GOAL:g}: {_met(goals['script_ms_per_update_met'])}); cores: "
            f"server {_fmt(cores['server'])}, load generator {_fmt(cores['load_generator'])}, "
            f"postgres {_fmt(cores['postgres'])}, chromium {_fmt(cores['chromium'])}, "
            f"machine {_fmt(loaded['machine']['busy_cores'])}"
        )
        lost = conn["connected"] - min(
            loaded["load"]["connected_at_end"], run["idle"]["load"]["connected_at_end"]
        )
        if lost:
            progress(f"warning: {lost} device connections were lost by the end of the {run['devices']} run")


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}" if abs(x) < 100 else f"{x:.0f}"


def _met(x: bool | None) -> str:
    return "n/a" if x is None else "met" if x else "NOT met"


# --- CPU of the processes ----------------------------------------------------------------------------


def _process_table() -> dict[int, tuple[int, str, float]]:
    """pid -> (parent pid, command name, CPU seconds) of every process readable in /proc."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            text = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        head, _, rest = text.rpartition(")")
        fields = rest.split()
        comm = head.partition("(")[2]
        table[int(entry.name)] = (int(fields[1]), comm, (int(fields[11]) + int(fields[12])) / CLK_TCK)
    return table


def _chromium_kind(pid: int, comm: str) -> str:
    """`driver` (Playwright's node), or Chromium's process type: browser, renderer, gpu-process, ..."""
    if comm.startswith("node"):
        return "driver"
    try:  # Chromium's children rewrite their command line as one string: split on spaces too
        args = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").split()
    except OSError:
        return "other"
    for arg in args:
        if arg.startswith(b"--type="):
            return arg[7:].decode(errors="replace")
    return "browser"


def _browser_cpu(exclude: set[int]) -> dict[int, tuple[str, float]]:
    """pid -> (kind, CPU s) of this process's descendants (Playwright, Chromium) but those in `exclude`."""
    table = _process_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found: dict[int, tuple[str, float]] = {}
    stack = list(children.get(os.getpid(), []))
    while stack:
        pid = stack.pop()
        if pid in exclude:
            continue
        _, comm, cpu = table[pid]
        found[pid] = (_chromium_kind(pid, comm), cpu)
        stack.extend(children.get(pid, []))
    return found


def _tree_delta(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]
) -> dict[str, float]:
    """CPU seconds per kind between two `_browser_cpu` readings (a process born in between counts whole)."""
    kinds: dict[str, float] = {}
    for pid, (kind, cpu) in after.items():
        start = before[pid][1] if pid in before else 0.0
        kinds[kind] = kinds.get(kind, 0.0) + cpu - start
    return kinds


# --- the run -----------------------------------------------------------------------------------------


class _LoadGen:
    """The load generator process: one command per line on its stdin, one JSON answer per line."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @property
    def pid(self) -> int:
        return self.process.pid

    @classmethod
    async def start(cls, config: dict[str, Any]) -> _LoadGen:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tracker.bench_map",
            _WORKER_FLAG,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=_child_env(),
            limit=2**24,
        )
        gen = cls(process)
        await gen._write(config)
        return gen

    async def _write(self, obj: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(obj).encode() + b"\n")
        await self.process.stdin.drain()

    async def read(self, timeout: float) -> dict[str, Any]:
        assert self.process.stdout is not None
        try:
            line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        except TimeoutError:
            raise BenchError(f"the load generator did not answer within {timeout:.0f} s") from None
        if not line:
            code = await self.process.wait()
            raise BenchError(f"the load generator exited with {code} (its errors are above)")
        answer: dict[str, Any] = json.loads(line)
        return answer

    async def command(self, cmd: str, **args: Any) -> dict[str, Any]:
        await self._write({"cmd": cmd, **args})
        return await self.read(30)

    async def close(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(Exception):
                await self._write({"cmd": "quit"})
                await asyncio.wait_for(self.process.wait(), 60)
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


@dataclass
class _Reading:
    """One end of a measured window."""

    probe: _Snapshot
    browser: dict[int, tuple[str, float]]
    load: dict[str, Any]
    cdp: dict[str, float]
    stats: dict[str, Any] | None


@dataclass
class _Page:
    page: Page
    cdp: CDPSession
    origin: str
    blocked: Counter[str] = field(default_factory=Counter)
    console_errors: Counter[str] = field(default_factory=Counter)

    def error(self, text: str) -> None:
        if text[:300] in self.console_errors or len(self.console_errors) < 20:
            self.console_errors[text[:300]] += 1
        else:
            self.console_errors["(other messages)"] += 1

    async def route(self, route: Route) -> None:
        parts = urlsplit(route.request.url)
        if f"{parts.scheme}://{parts.netloc}" == self.origin:
            await route.continue_()
        else:
            self.blocked[parts.netloc or parts.scheme] += 1
            await route.abort()

    async def metrics(self) -> dict[str, float]:
        answer = await self.cdp.send("Performance.getMetrics")
        return {m["name"]: float(m["value"]) for m in answer.get("metrics", [])}

    async def stats(self) -> dict[str, Any] | None:
        value = await self.page.evaluate(_STATS)
        return value if isinstance(value, dict) else None


class _Bench:
    def __init__(self, server: _Server, db_url: str, settings: _Settings) -> None:
        self.server = server
        self.db_url = db_url
        self.s = settings
        self.probe = _Probe(db_url, server.pid, server.url)
        self.loadgen: _LoadGen | None = None
        self.view: _Page | None = None

    async def run(self) -> dict[str, Any]:
        loadavg = list(os.getloadavg())
        n = max(self.s.counts)
        tokens, registration = await self._register(n)
        viewer = await self._viewer()
        progress(f"connecting {n} devices from the load generator")
        self.loadgen = await _LoadGen.start(
            {
                "url": self.server.url,
                "tokens": tokens,
                "rate": self.s.rate,
                "connect_concurrency": CONNECT_CONCURRENCY,
                "seed": 20260302,
            }
        )
        try:
            connect = await self.loadgen.read(120 + n / 20)
            connect.pop("event", None)
            progress(
                f"{connect['connected']} devices connected in {connect['connect_s']} s "
                f"({connect['failed']} failed), load generator {connect['rss_mb']} MB"
            )
            if not connect["connected"]:
                raise BenchError(f"no device could connect: {connect['failure_samples']}")
            priming = await self._prime(n)
            await self.probe.open()
            try:
                figures = await self._browse(viewer)
            finally:
                await self.probe.close()
        finally:
            await self.loadgen.close()
        return {
            "loadavg_at_start": loadavg,
            "registration": registration,
            "connect": connect,
            "priming": priming,
            **figures,
        }

    async def _prime(self, n: int) -> dict[str, Any]:
        """Devices without a stored fix send until KNOWN_SHARE of them have one (bounded), so that the page
        opens on a placed fleet, as a dispatcher's does, and frames it."""
        assert self.loadgen is not None
        progress(f"placing the {n} devices: those without a stored fix send until {KNOWN_SHARE:.0%} have one")
        t0 = time.perf_counter()
        await self.loadgen.command("send", active=n, unplaced_only=True)
        stored = 0
        while time.perf_counter() - t0 < PRIME_TIMEOUT_S:
            stored = (await self.loadgen.command("stats"))["devices_stored"]
            if stored >= KNOWN_SHARE * n:
                break
            await asyncio.sleep(0.5)
        await self.loadgen.command("send", active=0)
        await self._drain()
        wall = time.perf_counter() - t0
        progress(f"{stored} devices placed in {wall:.1f} s")
        return {"seconds": round(wall, 2), "devices_with_a_stored_fix": stored}

    async def _register(self, n: int) -> tuple[list[str], dict[str, Any]]:
        """`n` devices, spread over FLEETS, through the admin API with a few requests in flight."""
        progress(f"registering {n} devices ({REGISTER_CONCURRENCY} requests in flight)")
        headers = {"Authorization": f"Bearer {self.server.admin_token}"}
        limit = asyncio.Semaphore(REGISTER_CONCURRENCY)
        cpu0, t0 = proc_cpu_s(self.server.pid), time.perf_counter()
        async with httpx.AsyncClient(base_url=self.server.url, headers=headers, timeout=30) as http:

            async def one(i: int) -> str:
                fleet = FLEETS[i % len(FLEETS)]
                async with limit:
                    r = await http.post("/api/admin/devices", json={"id": f"{fleet}-{i:05d}", "fleet": fleet})
                if r.status_code != 201:
                    raise BenchError(f"registering device {i} failed: {r.status_code} {r.text:.300}")
                return str(r.json()["token"])

            tokens = list(await asyncio.gather(*(one(i) for i in range(n))))
        wall, cpu1 = time.perf_counter() - t0, proc_cpu_s(self.server.pid)
        progress(f"registered {n} devices in {wall:.1f} s")
        return tokens, {
            "devices": n,
            "seconds": round(wall, 2),
            "per_s": round(n / wall, 1),
            "concurrency": REGISTER_CONCURRENCY,
            "server_cpu_s": None if cpu0 is None or cpu1 is None else round(cpu1 - cpu0, 2),
        }

    async def _viewer(self) -> str:
        headers = {"Authorization": f"Bearer {self.server.admin_token}"}
        async with httpx.AsyncClient(base_url=self.server.url, headers=headers, timeout=30) as http:
            r = await http.post("/api/admin/viewers", json={"name": "bench-map", "fleets": "all"})
        if r.status_code != 201:
            raise BenchError(f"registering the viewer failed: {r.status_code} {r.text:.300}")
        return str(r.json()["token"])

    async def _browse(self, viewer: str) -> dict[str, Any]:
        from playwright.async_api import async_playwright

        async with async_playwright() as pw:
            browser = await launch_chromium(pw)
            try:
                context = await browser.new_context(viewport=VIEWPORT)
                page = await context.new_page()
                view = self.view = _Page(page, await context.new_cdp_session(page), self.server.url)
                page.on("console", lambda m: view.error(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda e: view.error(f"page error: {e}"))
                await context.route("**/*", view.route)
                await page.add_init_script(_FRAME_COUNTER)
                await view.cdp.send("Performance.enable")
                progress("opening the map in Chromium")
                t0 = time.perf_counter()
                await page.goto(f"{self.server.url}/?token={viewer}", wait_until="domcontentloaded")
                await self._wait_live()
                live_s = time.perf_counter() - t0
                progress(f"the page is live after {live_s:.1f} s")
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
                seen = await self.view.page.evaluate(_PAGE_STATE)
            except Exception as inner:
                seen = {"error": str(inner)}
            raise BenchError(
                f"the map page did not reach body[data-state=live] within {LIVE_TIMEOUT_S:.0f} s "
                f"({type(exc).__name__}); it shows data-state={seen.get('state')!r}, title "
                f"{seen.get('title')!r}, text {seen.get('text')!r}; console errors: "
                f"{dict(self.view.console_errors) or 'none'}"
            ) from None

    async def _windows(self) -> dict[str, Any]:
        assert self.loadgen is not None
        await asyncio.sleep(SETTLE_S)
        idle_before = await self._window("idle before the runs (devices placed, none moving)", 0)
        runs = []
        for k in self.s.counts:
            await self.loadgen.command("send", active=k)
            warm = await self._warm_up(k)
            loaded = await self._window(f"{k} devices sending", k)
            loaded["warmup"] = warm
            if self.s.screenshot and k == self.s.counts[-1]:
                assert self.view is not None
                await self.view.page.screenshot(path=self.s.screenshot)
                progress(f"screenshot written to {self.s.screenshot}")
            await self.loadgen.command("send", active=0)
            await self._drain()
            idle = await self._window(f"{k} devices paused", 0)
            runs.append(
                {
                    "devices": k,
                    "loaded": loaded,
                    "idle": idle,
                    "goals": _goals(loaded),
                    "ratios_to_idle": _ratios(loaded, idle),
                }
            )
        return {"idle_before": idle_before, "runs": runs}

    async def _warm_up(self, k: int) -> dict[str, Any]:
        """Until KNOWN_SHARE of the k devices have a stored fix and the page knows as many devices, and
        each sent a few fixes; at most `warmup` s."""
        assert self.view is not None and self.loadgen is not None
        least = min(self.s.warmup, MIN_WARMUP_PERIODS / self.s.rate)
        t0 = time.perf_counter()
        known = stored = None
        while (elapsed := time.perf_counter() - t0) < self.s.warmup:
            stats = await self.view.stats()
            known = stats.get("devices") if stats else None
            stored = (await self.loadgen.command("stats"))["devices_stored"]
            if elapsed >= least and isinstance(known, int | float) and min(known, stored) >= KNOWN_SHARE * k:
                break
            await asyncio.sleep(0.5)
        elapsed = time.perf_counter() - t0
        progress(
            f"{k} devices: warm-up {elapsed:.1f} s ({stored} devices with a stored fix, the page knows "
            f"{known}); measuring {self.s.seconds:g} s"
        )
        return {"seconds": round(elapsed, 2), "page_devices": known, "devices_with_a_stored_fix": stored}

    async def _drain(self) -> None:
        """Wait for the load generator's unacked fixes (bounded), then let the page settle."""
        assert self.loadgen is not None
        deadline = time.perf_counter() + DRAIN_TIMEOUT_S
        while time.perf_counter() < deadline:
            if not (await self.loadgen.command("stats"))["in_flight"]:
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(SETTLE_S)

    async def _read(self) -> _Reading:
        assert self.loadgen is not None and self.view is not None
        exclude = {self.server.pid, self.loadgen.pid}
        return _Reading(
            probe=await self.probe.snapshot(),
            browser=_browser_cpu(exclude),
            load=await self.loadgen.command("stats"),
            cdp=await self.view.metrics(),
            stats=await self.view.stats(),
        )

    async def _window(self, label: str, active: int) -> dict[str, Any]:
        """Measure `seconds` of the page as it is now: frames, script time, page stats, CPU."""
        assert self.view is not None
        page = self.view.page
        await self.probe.find_postgres()
        begin = await self._read()
        reset = bool(await page.evaluate(_STATS_RESET))
        await page.evaluate(_FRAMES_RESET)
        await asyncio.sleep(self.s.seconds)
        frames = await page.evaluate(_FRAMES_READ)
        end = await self._read()
        return _figures(label, active, self.s.rate, begin, end, frames, reset, self.probe.pg_kind)


def _figures(
    label: str,
    active: int,
    rate: float,
    begin: _Reading,
    end: _Reading,
    frames: dict[str, Any],
    reset: bool,
    pg_kind: dict[int, str],
) -> dict[str, Any]:
    wall = end.probe.t - begin.probe.t
    page_s = float(frames["elapsed"]) / 1000 or wall
    gaps = [float(g) for g in frames["gaps"]]

    def count(name: str) -> float | None:
        after = end.stats.get(name) if end.stats else None
        if not isinstance(after, int | float):
            return None
        before = begin.stats.get(name) if begin.stats and not reset else 0
        return float(after - (before if isinstance(before, int | float) else 0))

    def series(name: str) -> dict[str, Any] | None:
        values = end.stats.get(name) if end.stats else None
        if not isinstance(values, list):
            return None
        return _dist([float(v) for v in values if isinstance(v, int | float)])

    updates, positions = count("updates"), count("positions")
    cdp = {
        name: (end.cdp[name] - begin.cdp[name]) * 1000
        for name in _CDP_METRICS
        if name in end.cdp and name in begin.cdp
    }
    script_ms = cdp.get("ScriptDuration")
    task_ms = cdp.get("TaskDuration")
    load0, load1 = begin.load, end.load

    def sent(name: str) -> int:
        return int(load1[name] - load0[name])

    browser = _tree_delta(begin.browser, end.browser)
    chromium = sum(v for k, v in browser.items() if k != "driver")
    cpu: dict[str, float | None] = {
        "server": _delta(begin.probe.server_cpu, end.probe.server_cpu),
        "load_generator": round(load1["cpu_s"] - load0["cpu_s"], 3),
        "postgres": _pg_delta(begin.probe, end.probe, pg_kind),
        "chromium": round(chromium, 3),
        "playwright_driver": _round(browser.get("driver")),
        "bench": round(end.probe.self_cpu - begin.probe.self_cpu, 3),
    }
    machine: dict[str, float | None] = {"busy_cores": None, "steal_cores": None, "other_busy_cores": None}
    if begin.probe.machine and end.probe.machine:
        busy = (end.probe.machine[0] - begin.probe.machine[0]) / CLK_TCK
        ours = sum(v or 0.0 for v in cpu.values())
        machine = {
            "busy_cores": round(busy / wall, 3),
            "steal_cores": round((end.probe.machine[1] - begin.probe.machine[1]) / CLK_TCK / wall, 3),
            "other_busy_cores": round(max(0.0, busy - ours) / wall, 3),
        }
    server_metrics = {}
    if begin.probe.metrics and end.probe.metrics:
        server_metrics = _metric_deltas(begin.probe.metrics, end.probe.metrics, wall)
        events = end.probe.metrics.get("tracker_positions_events_total", 0.0) - begin.probe.metrics.get(
            "tracker_positions_events_total", 0.0
        )
        server_metrics["positions_events_per_s"] = round(events / wall, 2)
    return {
        "label": label,
        "sending_devices": active,
        "measured_s": round(wall, 3),
        "page": {
            "fps": round(int(frames["frames"]) / page_s, 2),
            "frames": int(frames["frames"]),
            "frame_gap_ms": _dist(gaps),
            "stats_available": end.stats is not None,
            "updates": updates,
            "updates_per_s": _round(updates / page_s if updates is not None else None),
            "positions": positions,
            "positions_per_s": _round(positions / page_s if positions is not None else None),
            "devices": end.stats.get("devices") if end.stats else None,
            "handler_ms": series("handlerMs"),
            "frame_ms": series("frameMs"),
            "js_heap_mb": _round(end.cdp.get("JSHeapUsedSize", 0) / 2**20 or None, 1),
        },
        "script": {
            "script_ms_per_s": _round(script_ms / wall if script_ms is not None else None),
            "task_ms_per_s": _round(task_ms / wall if task_ms is not None else None),
            "layout_ms_per_s": _round(cdp["LayoutDuration"] / wall if "LayoutDuration" in cdp else None),
            "recalc_style_ms_per_s": _round(
                cdp["RecalcStyleDuration"] / wall if "RecalcStyleDuration" in cdp else None
            ),
            "script_ms_per_update": _round(
                script_ms / updates if script_ms is not None and updates else None
            ),
            "task_ms_per_update": _round(task_ms / updates if task_ms is not None and updates else None),
        },
        "load": {
            "offered_fixes_per_s": round(active * rate, 1),
            "sent_per_s": round(sent("sent") / wall, 1),
            "acked_fixes_per_s": round(sent("accepted") / wall, 1),
            "acks": sent("acks"),
            "duplicates": sent("duplicates"),
            "rejected": sent("rejected"),
            "retries": sent("retries"),
            "errors": sent("errors"),
            "skipped_ticks": sent("skipped"),
            "late_cycles": sent("late_cycles"),
            "ticks_of_disconnected_devices": sent("disconnected"),
            "unacked_at_end": load1["in_flight"],
            "connected_at_start": load0["connected"],
            "connected_at_end": load1["connected"],
            "ack_ms": {"p50": load1["ack_ms_p50"], "p95": load1["ack_ms_p95"], "max": load1["ack_ms_max"]},
            "samples": load1["samples"],
        },
        "cpu_s": {**cpu, "chromium_by_process_type": {k: round(v, 3) for k, v in sorted(browser.items())}},
        "cpu_cores": {k: _round(v / wall if v is not None else None) for k, v in cpu.items()},
        "machine": machine,
        "server_metrics": server_metrics,
    }


def _delta(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(b - a, 3)


def _pg_delta(begin: _Snapshot, end: _Snapshot, kinds: dict[int, str]) -> float | None:
    """CPU s of this database's backends and the shared background processes of PostgreSQL."""
    deltas = [
        after - before
        for pid, before in begin.pg_cpu.items()
        if pid in kinds and before is not None and (after := end.pg_cpu.get(pid)) is not None
    ]
    return round(sum(deltas), 3) if deltas else None


def _goals(loaded: dict[str, Any]) -> dict[str, Any]:
    fps = loaded["page"]["fps"]
    per_update = loaded["script"]["script_ms_per_update"]
    return {
        "fps_goal": FPS_GOAL,
        "fps": fps,
        "fps_met": fps >= FPS_GOAL,
        "script_ms_per_update_goal": SCRIPT_MS_PER_UPDATE_GOAL,
        "script_ms_per_update": per_update,
        "script_ms_per_update_met": None if per_update is None else per_update < SCRIPT_MS_PER_UPDATE_GOAL,
        "handler_ms_p95": (loaded["page"]["handler_ms"] or {}).get("p95"),
    }


def _ratios(loaded: dict[str, Any], idle: dict[str, Any]) -> dict[str, Any]:
    """Loaded over idle, same page, same devices shown."""
    return {
        "fps": _ratio(loaded["page"]["fps"], idle["page"]["fps"]),
        "script_ms_per_s": _ratio(loaded["script"]["script_ms_per_s"], idle["script"]["script_ms_per_s"]),
        "task_ms_per_s": _ratio(loaded["script"]["task_ms_per_s"], idle["script"]["task_ms_per_s"]),
        "chromium_cpu": _ratio(loaded["cpu_s"]["chromium"], idle["cpu_s"]["chromium"]),
        "server_cpu": _ratio(loaded["cpu_s"]["server"], idle["cpu_s"]["server"]),
        "machine_busy": _ratio(loaded["machine"]["busy_cores"], idle["machine"]["busy_cores"]),
    }


# --- the load generator (runs in its own process) ----------------------------------------------------


def _rss_mb() -> float | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return None


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _Walk:
    """Plausible movement around central Berlin: speed and heading drift, the edge turns devices back."""

    def __init__(self, n: int, seed: int) -> None:
        rng = random.Random(seed)
        self.rng = rng
        self.lat: list[float] = []
        self.lon: list[float] = []
        self.heading: list[float] = []
        self.speed: list[float] = []
        self.top = [TOP_SPEED[FLEETS[i % len(FLEETS)]] for i in range(n)]
        for i in range(n):
            r = RADIUS_M * math.sqrt(rng.random())
            a = rng.uniform(0, 2 * math.pi)
            lat = CENTER[1] + r * math.cos(a) / M_PER_DEG
            self.lat.append(lat)
            self.lon.append(CENTER[0] + r * math.sin(a) / (M_PER_DEG * math.cos(math.radians(lat))))
            self.heading.append(rng.uniform(0, 360))
            self.speed.append(rng.uniform(0.2, 0.8) * self.top[i])

    def step(self, i: int, dt: float) -> dict[str, Any]:
        rng = self.rng
        speed = min(self.top[i], max(0.5, self.speed[i] + rng.gauss(0, 0.8)))
        heading = (self.heading[i] + rng.gauss(0, 12)) % 360
        lat, lon = self.lat[i], self.lon[i]
        cos_lat = math.cos(math.radians(lat))
        north = (lat - CENTER[1]) * M_PER_DEG
        east = (lon - CENTER[0]) * M_PER_DEG * cos_lat
        if math.hypot(north, east) > RADIUS_M:  # head back towards the centre
            heading = math.degrees(math.atan2(-east, -north)) % 360
        d = speed * dt
        lat += d * math.cos(math.radians(heading)) / M_PER_DEG
        lon += d * math.sin(math.radians(heading)) / (M_PER_DEG * cos_lat)
        self.lat[i], self.lon[i], self.heading[i], self.speed[i] = lat, lon, heading, speed
        return {
            "lat": round(lat, 6),
            "lon": round(lon, 6),
            "ts": int(time.time() * 1000),
            "speed": round(speed, 2),
            "heading": round(heading, 1),
            "accuracy": 5.0,
        }


@dataclass
class _Counters:
    sent: int = 0
    acks: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    retries: int = 0
    errors: int = 0
    skipped: int = 0
    late_cycles: int = 0
    disconnected: int = 0  # ticks of devices whose connection failed or was lost
    ack_ms: list[float] = field(default_factory=list)
    samples: list[str] = field(default_factory=list)

    def note(self, message: str) -> None:
        if len(self.samples) < 5 and message not in self.samples:
            self.samples.append(message[:300])


class _Fleet:
    """N Socket.IO device connections in one process, each sending one fix per period, staggered."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.url: str = config["url"]
        self.tokens: list[str] = config["tokens"]
        self.period = 1.0 / float(config["rate"])
        self.concurrency: int = config.get("connect_concurrency", 50)
        self.walk = _Walk(len(self.tokens), config.get("seed", 1))
        self.clients: list[Any] = []
        self.in_flight = [0] * len(self.tokens)
        self.total_in_flight = 0
        self.stored = [False] * len(self.tokens)  # has an acked fix
        self.devices_stored = 0
        self.last_sent = [0.0] * len(self.tokens)
        self.counters = _Counters()
        self.active = 0
        self.unplaced_only = False
        self._changed = asyncio.Event()
        self._http: Any = None

    async def connect(self) -> dict[str, Any]:
        import aiohttp
        import socketio

        # One HTTP session for all (python-socketio makes one per client otherwise), without its
        # default limit of 100 connections.
        self._http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        sem = asyncio.Semaphore(self.concurrency)
        latencies: list[float] = []
        failures: list[str] = []

        async def one(token: str) -> Any:
            client = socketio.AsyncClient(reconnection=False, handle_sigint=False, http_session=self._http)
            async with sem:
                for _attempt in range(3):
                    t0 = time.perf_counter()
                    try:
                        await client.connect(
                            self.url,
                            namespaces=["/device"],
                            auth={"token": token},
                            transports=["websocket"],
                            wait_timeout=30,
                        )
                    except Exception as exc:  # retried, then counted
                        failures.append(f"{type(exc).__name__}: {exc}")
                        await asyncio.sleep(0.5)
                        continue
                    latencies.append((time.perf_counter() - t0) * 1000)
                    # python-engineio drops a client that has had nothing to send for 5 s past the ping
                    # interval: a server ping late by 5 s (a busy server) would kill an idle device. Give
                    # it 60 s; the server's own ping timeout still drops devices that do not answer.
                    client.eio.ping_timeout = max(client.eio.ping_timeout or 0, CLIENT_PING_TOLERANCE_S)
                    return client
            return None

        t0, cpu0 = time.perf_counter(), _cpu_s()
        self.clients = list(await asyncio.gather(*(one(t) for t in self.tokens)))
        wall = time.perf_counter() - t0
        latencies.sort()
        connected = sum(1 for c in self.clients if c is not None)
        return {
            "event": "connected",
            "connected": connected,
            "failed": len(self.tokens) - connected,
            "connect_attempt_failures": len(failures),
            "failure_samples": sorted(set(failures))[:5],
            "connect_s": round(wall, 2),
            "connects_per_s": round(connected / wall, 1) if wall else None,
            "connect_ms_p50": _r(percentile(latencies, 50)),
            "connect_ms_p95": _r(percentile(latencies, 95)),
            "connect_cpu_s": round(_cpu_s() - cpu0, 2),
            "rss_mb": _r(_rss_mb(), 1),
            "concurrency": self.concurrency,
        }

    def set_active(self, k: int, unplaced_only: bool = False) -> None:
        """Let the first k devices send (with `unplaced_only`, those without a stored fix yet)."""
        self.active = max(0, min(k, len(self.clients)))
        self.unplaced_only = unplaced_only
        self._changed.set()

    async def run(self) -> None:
        """The sender: device i of the k active ones sends at i/k of each period."""
        while True:
            k = self.active
            if k == 0:
                await self._changed.wait()
                self._changed.clear()
                continue
            start = time.perf_counter()
            while not self._changed.is_set():
                sent = 0
                while sent < k and not self._changed.is_set():
                    now = time.perf_counter()
                    due = min(k, int((now - start) / self.period * k) + 1)
                    while sent < due:
                        await self._send(sent, now)
                        sent += 1
                    await asyncio.sleep(0.005)
                start += self.period
                if time.perf_counter() > start + self.period:  # a whole period behind: skip ahead
                    self.counters.late_cycles += 1
                    start = time.perf_counter()
                await asyncio.sleep(max(0.0, start - time.perf_counter()))
            self._changed.clear()

    async def _send(self, i: int, now: float) -> None:
        c = self.counters
        client = self.clients[i]
        if self.unplaced_only and self.stored[i]:
            return
        if client is None or not client.connected:
            c.disconnected += 1
            return
        if self.in_flight[i] >= MAX_IN_FLIGHT_DEVICE or self.total_in_flight >= MAX_IN_FLIGHT:
            c.skipped += 1
            return
        dt = now - self.last_sent[i] if self.last_sent[i] else self.period
        self.last_sent[i] = now
        fix = self.walk.step(i, min(dt, 10 * self.period))
        sent_at = time.perf_counter()

        def on_ack(ack: Any = None) -> None:
            self.in_flight[i] -= 1
            self.total_in_flight -= 1
            c.ack_ms.append((time.perf_counter() - sent_at) * 1000)
            if not isinstance(ack, dict):
                c.errors += 1
                c.note(f"unexpected ack {ack!r}")
            elif ack.get("retry"):
                c.retries += 1
                c.note(f"retry: {ack.get('error')}")
            elif "error" in ack:
                c.errors += 1
                c.note(f"refused: {ack.get('error')}")
            else:
                c.acks += 1
                if not self.stored[i] and ack.get("accepted"):
                    self.stored[i] = True
                    self.devices_stored += 1
                c.accepted += int(ack.get("accepted", 0))
                c.duplicates += int(ack.get("duplicates", 0))
                c.rejected += len(ack.get("rejected", []))

        try:
            await client.emit("fix", fix, namespace="/device", callback=on_ack)
        except Exception as exc:  # a dropped connection: counted
            c.errors += 1
            c.note(f"{type(exc).__name__}: {exc}")
            return
        self.in_flight[i] += 1
        self.total_in_flight += 1
        c.sent += 1

    def stats(self) -> dict[str, Any]:
        c = self.counters
        ack_ms = sorted(c.ack_ms)
        c.ack_ms = []
        return {
            "sent": c.sent,
            "acks": c.acks,
            "accepted": c.accepted,
            "duplicates": c.duplicates,
            "rejected": c.rejected,
            "retries": c.retries,
            "errors": c.errors,
            "skipped": c.skipped,
            "late_cycles": c.late_cycles,
            "disconnected": c.disconnected,
            "in_flight": self.total_in_flight,
            "devices_stored": self.devices_stored,
            "connected": sum(1 for cl in self.clients if cl is not None and cl.connected),
            "ack_ms_p50": _r(percentile(ack_ms, 50)),
            "ack_ms_p95": _r(percentile(ack_ms, 95)),
            "ack_ms_max": _r(ack_ms[-1] if ack_ms else None),
            "cpu_s": round(_cpu_s(), 3),
            "rss_mb": _r(_rss_mb(), 1),
            "samples": list(c.samples),
        }

    async def close(self) -> None:
        await asyncio.gather(*(c.disconnect() for c in self.clients if c is not None), return_exceptions=True)
        if self._http is not None:
            await self._http.close()


def _r(x: float | None, digits: int = 3) -> float | None:
    return None if x is None else round(x, digits)


async def _worker() -> None:
    """Settings on the first stdin line; then one command per line, each answered by one JSON line."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**26)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def answer(obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    fleet = _Fleet(json.loads(await reader.readline()))
    answer(await fleet.connect())
    sender = asyncio.create_task(fleet.run())
    try:
        while line := await reader.readline():
            cmd = json.loads(line)
            if cmd["cmd"] == "send":
                fleet.set_active(int(cmd["active"]), bool(cmd.get("unplaced_only")))
                answer({"ok": True, "active": fleet.active})
            elif cmd["cmd"] == "stats":
                answer(fleet.stats())
            elif cmd["cmd"] == "quit":
                break
    finally:
        sender.cancel()
        fleet.set_active(0)
        await fleet.close()
    answer({"event": "closed", "cpu_s": round(_cpu_s(), 3)})


if __name__ == "__main__":
    if sys.argv[1:] != [_WORKER_FLAG]:
        sys.exit("tracker.bench_map is run by `tracker bench map`")
    asyncio.run(_worker())
