"""The replay bench's page: the dispatcher map in headless Chromium (requests off the server's origin
blocked), the replay driven through its own controls, timed by the page (`tracker.replay().openMs`, from
the click on Load to the trail drawn) and by the wall clock, and frames counted with requestAnimationFrame
(the map bench's counter) idle and while playing."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tracker.tools.bench.map.page import FRAME_COUNTER, FRAMES_READ, FRAMES_RESET
from tracker.tools.bench.report import BenchError, progress, rounded
from tracker.tools.browser import VIEWPORT, launch_chromium

OPEN_GOAL_MS = 2000.0
FPS_GOAL = 30.0
LIVE_TIMEOUT_MS = 60_000
OPEN_TIMEOUT_MS = 120_000
HOUR_MS = 3_600_000
SPEED = "600"

_LOCAL = "ts => new Date(ts - new Date(ts).getTimezoneOffset() * 60000).toISOString().slice(0, 19)"
_SLIDER_TO = """s => { const el = document.getElementById('replay-slider');
  el.value = String(s); el.dispatchEvent(new Event('input')); }"""


async def measure_page(
    url: str, token: str, devices: list[str], window: dict[str, int], seconds: float, screenshot: str | None
) -> dict[str, Any]:
    """Open the map, count idle frames, open the replay on one hour then on the whole window, play it;
    the page's figures."""
    from playwright.async_api import async_playwright

    errors: list[str] = []  # uncaught errors of the page (blocked tiles are console errors, not these)
    async with async_playwright() as pw:
        browser = await launch_chromium(pw)
        try:
            context = await browser.new_context(viewport=VIEWPORT)
            page = await context.new_page()
            page.on("pageerror", lambda e: errors.append(str(e)))

            async def route(r: Any) -> None:
                await (r.continue_() if r.request.url.startswith(url) else r.abort())

            await context.route("**/*", route)
            await page.add_init_script(FRAME_COUNTER)
            await page.goto(f"{url}/?token={token}")
            await page.wait_for_selector("body[data-state=live]", timeout=LIVE_TIMEOUT_MS)
            idle = await _frames(page, seconds)
            await page.click("#replay-open")
            for d in devices:
                await page.fill("#replay-device", d)
                await page.dispatch_event("#replay-device", "change")
                await page.wait_for_selector(f'#replay-chosen [data-replay-device="{d}"]')
            end = window["to"] - 1
            hour = await _open(page, end - HOUR_MS, end)
            progress(f"replay of the last hour opened in {hour['open_ms']} ms")
            week = await _open(page, window["from"], end)
            progress(f"replay of the whole window opened in {week['open_ms']} ms ({week['tracks']})")
            await page.evaluate(_SLIDER_TO, 0)
            await page.select_option("#replay-speed", SPEED)
            clock0 = (await page.evaluate("window.tracker.replay()"))["clock"]
            await page.click("#replay-play")
            await page.wait_for_selector("#replay[data-replay-state=playing]")
            playing = await _frames(page, seconds)
            clock1 = (await page.evaluate("window.tracker.replay()"))["clock"]
            if screenshot:
                await page.screenshot(path=screenshot)
                progress(f"screenshot written to {screenshot}")
            await page.click("#replay-play")
            playing["clock_advance_s"] = rounded((clock1 - clock0) / 1000, 1)
            return {
                "open_ms": week["open_ms"],
                "open_wall_ms": week["wall_ms"],
                "baseline_open_ms": hour["open_ms"],
                "baseline_open_wall_ms": hour["wall_ms"],
                "tracks": week["tracks"],
                "baseline_tracks": hour["tracks"],
                "idle": idle,
                "playing": playing,
                "speed": int(SPEED),
                "page_errors": errors[:20],
                "chromium_version": browser.version,
            }
        finally:
            await browser.close()


async def _open(page: Any, from_ms: int, to_ms: int) -> dict[str, Any]:
    """Load the replay of [from, to] with the page's controls; its open time and what it drew."""
    for field, ts in (("from", from_ms), ("to", to_ms)):
        await page.fill(f"#replay-{field}", await page.evaluate(_LOCAL, ts))
    t0 = time.perf_counter()
    await page.click("#replay-load")
    await page.wait_for_selector("#replay[data-replay-state=loading]", state="attached")
    try:
        await page.wait_for_selector("#replay[data-replay-state=ready]", timeout=OPEN_TIMEOUT_MS)
    except Exception:
        note = await page.locator("#replay-note").inner_text()
        raise BenchError(f"the replay did not open within {OPEN_TIMEOUT_MS / 1000:.0f} s: {note!r}") from None
    wall = (time.perf_counter() - t0) * 1000
    state = await page.evaluate("window.tracker.replay()")
    return {"open_ms": rounded(state["openMs"], 1), "wall_ms": round(wall, 1), "tracks": state["tracks"]}


async def _frames(page: Any, seconds: float) -> dict[str, Any]:
    """Frames per second over `seconds` of the page as it is now, and its longest gap between frames."""
    await page.evaluate(FRAMES_RESET)
    await asyncio.sleep(seconds)
    f = await page.evaluate(FRAMES_READ)
    elapsed = f["elapsed"] / 1000
    return {
        "frames": f["frames"],
        "seconds": rounded(elapsed, 2),
        "fps": rounded(f["frames"] / elapsed, 1) if elapsed > 0 else None,
        "longest_gap_ms": rounded(max(f["gaps"]), 1) if f["gaps"] else None,
    }
