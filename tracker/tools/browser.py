"""Headless Chromium for the map benchmark and the page's tests, launched the same way everywhere.

Policy: Debian's own Chromium (not a browser Playwright downloads), software WebGL (SwiftShader) because
the machine has no GPU, and no background work (networking, updates, timer throttling of hidden pages)
that would blur measurements. Playwright is only a test and benchmark dependency, so it is imported
when a browser is launched, never at module import.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from tracker.errors import TrackerError

if TYPE_CHECKING:
    from playwright.async_api import Browser, Playwright, ViewportSize

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--enable-unsafe-swiftshader",
    "--use-angle=swiftshader",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-sync",
    "--no-first-run",
    "--disable-renderer-backgrounding",
    "--disable-background-timer-throttling",
    "--disable-backgrounding-occluded-windows",
]
VIEWPORT: ViewportSize = {"width": 1600, "height": 900}


class BrowserError(TrackerError, RuntimeError):
    """Headless Chromium cannot be started: Playwright or Chromium is missing; the message says what to do."""


def require_playwright() -> None:
    """Raise `BrowserError` unless Playwright and Chromium are installed."""
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        raise BrowserError(
            "Playwright is not installed; install the test extras: pip install -e '.[test]'"
        ) from None
    if not Path(CHROMIUM).exists():
        raise BrowserError(
            f"Chromium is not installed at {CHROMIUM}; install it: apt-get install -y chromium"
        )


async def launch_chromium(playwright: Playwright) -> Browser:
    """Headless Chromium with `CHROMIUM_ARGS`, from an `async_playwright()` context."""
    require_playwright()
    return await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
