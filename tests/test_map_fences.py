"""Drawing a fence on the dispatcher map, in Debian's Chromium against a real server: the polygon clicked
on the map becomes YAML in the page (checked with yaml.safe_load), and Preview runs that text through
`POST /api/geofences/dry-run` over the last 24 hours and lists the events it would have fired.

Clicks land where the page's own map puts the coordinates (`map.project`), and every wait is on the page's
state (`#fences[data-fence-state]`, `[data-preview-state]`, the listed events). The view's screenshot goes
into docs/screenshots/fences.png, which the README shows.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator

import pytest
import yaml
from harness import (
    ROOT,
    Client,
    Server,
    add_device,
    add_viewer,
    device_client,
    now_ms,
    own_server,
    screenshot_file,
    server_tab,
    uid,
)
from playwright.async_api import Browser, Page, async_playwright

from tracker.tools.browser import launch_chromium

VIEWPORT = {"width": 1200, "height": 720}  # as test_map_replay.py's screenshots
MAX_PNG_BYTES = 400_000
# The area clicked on the map, [lon, lat] corners, and the device's path across it.
AREA = [(13.40, 52.52), (13.41, 52.52), (13.41, 52.525), (13.40, 52.525)]
ZOOM = 15  # a pixel is about 4e-5 degrees of longitude here
TOLERANCE = 1e-4
OUTSIDE = (52.5225, 13.39)  # lat, lon: west of the area
INSIDE = (52.5225, 13.405)
BEYOND = (52.5225, 13.42)  # east of it


@pytest.fixture(scope="module")
def fence_server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("fences")
    (tmp / "geofences").mkdir()
    with own_server(database_url, tmp) as s:
        yield s


@pytest.fixture
async def page(fence_server: Server) -> AsyncIterator[Page]:
    """A tab on the map (anything off the server blocked); fails the test if the page threw."""
    async with async_playwright() as p:
        browser: Browser = await launch_chromium(p)
        try:
            async with server_tab(browser, fence_server, VIEWPORT) as tab:
                yield tab
        finally:
            await browser.close()


async def _at(page: Page, lon: float, lat: float) -> tuple[float, float]:
    """The page coordinates of [lon, lat] on the map."""
    box = await page.locator("#map").bounding_box()
    assert box is not None
    p = await page.evaluate("c => window.tracker.map.project(c)", [lon, lat])
    return box["x"] + p["x"], box["y"] + p["y"]


async def test_a_drawn_polygon_becomes_yaml_and_its_preview_lists_what_it_would_have_fired(
    fence_server: Server, page: Page, clients: list[Client]
) -> None:
    fleet = uid("fleet")
    device, token = await add_device(fence_server, fleet)
    viewer = await add_viewer(fence_server, [fleet])
    await page.goto(f"{fence_server.url}/?token={viewer}")
    await page.wait_for_selector("body[data-state=live]", timeout=20_000)
    await page.evaluate("z => window.tracker.map.jumpTo({ center: [13.405, 52.5225], zoom: z })", ZOOM)

    await page.click("#fence-open")
    await page.wait_for_selector("#fences[data-fence-state=drawing]")
    await page.fill("#fence-id", "test-yard")
    for lon, lat in AREA[:-1]:
        await page.mouse.click(*await _at(page, lon, lat))
    # The last corner by a double-click, which also closes the ring (its two clicks add one corner).
    await page.mouse.dblclick(*await _at(page, *AREA[-1]))
    await page.wait_for_selector("#fences[data-fence-state=done]")

    text = await page.input_value("#fence-yaml")
    doc = yaml.safe_load(text)
    [fence] = doc["fences"]
    assert fence["id"] == "test-yard"
    ring = fence["polygon"]
    assert len(ring) == 5 and ring[0] == ring[-1], ring
    for got, want in zip(ring, AREA, strict=False):
        assert abs(got[0] - want[0]) < TOLERANCE and abs(got[1] - want[1]) < TOLERANCE, (got, want)
        assert all(round(x, 6) == x for x in got)
    # PyYAML reads the key `on` as True (YAML 1.1); the server's loader reads it as "on".
    rules = [(r[True], r["fences"]) for r in doc["rules"]]
    assert rules == [("enter", ["test-yard"]), ("exit", ["test-yard"])]
    drawn = await page.evaluate("window.tracker.map.getSource('fence-draft').getData()")
    assert any(f["geometry"]["type"] == "Polygon" for f in drawn["features"])

    # The device crossed the area in the last 24 hours: in two hours ago, out an hour later.
    c = await device_client(fence_server, token, clients)
    t0 = (now_ms() - 3 * 3600_000) // 1000 * 1000
    path = [(t0, OUTSIDE), (t0 + 3600_000, INSIDE), (t0 + 7200_000, BEYOND)]
    for ts, (lat, lon) in path:
        ack = await c.call("fix", {"ts": ts, "lat": lat, "lon": lon})
        assert ack["accepted"] == 1, ack

    await page.click("#fence-preview")
    await page.wait_for_selector("#fences[data-preview-state=done]", timeout=20_000)
    listed = await page.eval_on_selector_all(
        "#fence-events li", "els => els.map(e => [e.dataset.type, e.dataset.device, Number(e.dataset.ts)])"
    )
    assert listed == [["enter", device, t0 + 3600_000], ["exit", device, t0 + 7200_000]], listed
    summary = await page.inner_text("#fence-summary")
    assert "2 events" in summary and "1 enter" in summary and "1 exit" in summary, summary
    assert await page.locator("#fence-errors li").count() == 0
    # The picture: back over the fence (the page framed the device's fixes when they came), once drawn.
    await page.evaluate(
        """z => new Promise(done => { const map = window.tracker.map;
             map.once('idle', done); map.jumpTo({ center: [13.405, 52.5225], zoom: z - 0.5 }); })""",
        ZOOM,
    )
    shot = screenshot_file("fences")
    await page.screenshot(path=str(shot))
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) < MAX_PNG_BYTES, len(data)

    # An invalid edit: the dry-run's problem, as file:line: reason, and no events.
    await page.fill("#fence-yaml", text.replace("on: enter", "on: arrive"))
    await page.click("#fence-preview")
    await page.wait_for_selector("#fences[data-preview-state=error]", timeout=20_000)
    errors = await page.eval_on_selector_all("#fence-errors li", "els => els.map(e => e.textContent)")
    assert errors and re.search(r":\d+: .*arrive", errors[0]), errors
    assert await page.locator("#fence-events li").count() == 0


async def test_a_circle_by_centre_and_radius_field(fence_server: Server, page: Page) -> None:
    viewer = await add_viewer(fence_server, [uid("fleet")])
    await page.goto(f"{fence_server.url}/?token={viewer}")
    await page.wait_for_selector("body[data-state=live]", timeout=20_000)
    await page.evaluate("z => window.tracker.map.jumpTo({ center: [13.405, 52.5225], zoom: z })", ZOOM)
    await page.click("#fence-open")
    await page.check('input[name="fence-kind"][value="circle"]')
    await page.mouse.click(*await _at(page, 13.405, 52.5225))
    await page.fill("#fence-radius", "150")
    await page.wait_for_selector("#fences[data-fence-state=done]")
    [fence] = yaml.safe_load(await page.input_value("#fence-yaml"))["fences"]
    centre = fence["circle"]["center"]
    assert fence["circle"]["radius_m"] == 150 and fence["id"] == "new-fence"
    assert abs(centre[0] - 13.405) < TOLERANCE and abs(centre[1] - 52.5225) < TOLERANCE, centre

    # A second click on the map instead sets the radius from the distance (about 0.005 deg east: 339 m).
    await page.click("#fence-restart")
    await page.mouse.click(*await _at(page, 13.405, 52.5225))
    await page.mouse.click(*await _at(page, 13.41, 52.5225))
    await page.wait_for_selector("#fences[data-fence-state=done]")
    [fence] = yaml.safe_load(await page.input_value("#fence-yaml"))["fences"]
    assert 330 <= fence["circle"]["radius_m"] <= 348, fence
    assert await page.input_value("#fence-radius") == str(fence["circle"]["radius_m"])


def test_the_screenshot_is_in_the_readme() -> None:
    assert "docs/screenshots/fences.png" in (ROOT / "README.md").read_text()
