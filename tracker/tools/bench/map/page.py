"""The map page in Chromium: the scripts the bench evaluates in it (a requestAnimationFrame frame counter,
`window.tracker.stats()`, the map's view, the page's state), its DevTools metrics, requests off the
server's origin blocked and counted, console errors kept."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from tracker.tools.bench.report import rounded

if TYPE_CHECKING:
    from playwright.async_api import CDPSession, Page, Route

# Counts frames with requestAnimationFrame from the first paint on; `__benchFrames.reset()` starts a window.
FRAME_COUNTER = """
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
FRAMES_RESET = "() => { window.__benchFrames.reset(); return true; }"
FRAMES_READ = """() => { const s = window.__benchFrames;
  return { frames: s.frames, gaps: s.gaps, elapsed: performance.now() - s.t0 }; }"""
_STATS = """() => { const t = window.tracker;
  if (!t || typeof t.stats !== "function") return null;
  try { return t.stats(); } catch (e) { return { error: String(e) }; } }"""
STATS_RESET = """() => { const t = window.tracker;
  if (!t || typeof t.resetStats !== "function") return false;
  try { t.resetStats(); return true; } catch (e) { return false; } }"""
_MAP_VIEW = """() => { const m = window.tracker && window.tracker.map;
  if (!m || typeof m.getZoom !== "function") return null;
  try { const c = m.getCenter(); return { zoom: m.getZoom(), center: [c.lng, c.lat] }; }
  catch (e) { return null; } }"""
PAGE_STATE = """() => ({ state: document.body ? document.body.dataset.state || null : null,
  title: document.title, text: document.body ? document.body.innerText.slice(0, 300) : "" })"""


@dataclass
class MapPage:
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

    async def map_view(self) -> dict[str, Any] | None:
        value = await self.page.evaluate(_MAP_VIEW)
        if not isinstance(value, dict):
            return None
        center = value.get("center") or [None, None]
        return {"zoom": rounded(value.get("zoom"), 2), "center": [rounded(c, 4) for c in center]}

    async def devices(self) -> int | None:
        stats = await self.stats()
        known = stats.get("devices") if stats else None
        return int(known) if isinstance(known, int | float) else None
