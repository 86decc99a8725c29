"""History replay and clustering on the dispatcher map, in Debian's Chromium against a real server; and the
trail's `max_points` that the replay reads, over HTTP.

The page is driven as a dispatcher would (the replay's inputs, slider, play button; the map's zoom) and
every wait is on the page's own state (`#replay[data-replay-state]`, `#replay-clock[data-ts]`,
`tracker.replay()`, `.cluster[data-count]`). The tests that show a view write its screenshot into
docs/screenshots/ (the README shows them) and check the file is there, a PNG, and small.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
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
    until,
    web_client,
    write_rules,
)
from playwright.async_api import Browser, Page, async_playwright

from tracker.tools.browser import launch_chromium
from tracker.trail import Trail, budget_indexes, budget_runs, run_starts

SHOT_VIEWPORT = {"width": 1200, "height": 720}  # smaller PNGs for the README than the tests' 1600 x 900
MAX_PNG_BYTES = 400_000
RULES = """
fences:
  - id: yard
    name: Yard
    polygon: [[13.40, 52.52], [13.41, 52.52], [13.41, 52.53], [13.40, 52.53]]
rules:
  - id: yard-arrival
    on: enter
    fences: [yard]
"""
OUTSIDE = (52.50, 13.30)  # lat, lon
HALFWAY = (52.51, 13.35)
IN_YARD = (52.525, 13.405)
STEP_MS = 600_000  # ten minutes between the replayed fixes


@pytest.fixture(scope="module")
def replay_server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("replay")
    write_rules(tmp, RULES, "yard.yaml")
    with own_server(database_url, tmp) as s:
        yield s


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        b = await launch_chromium(p)
        yield b
        await b.close()


@pytest.fixture
async def page(browser: Browser, replay_server: Server) -> AsyncIterator[Page]:
    """A tab on the map (tiles and anything off the server blocked); fails the test if the page threw."""
    async with server_tab(browser, replay_server, SHOT_VIEWPORT) as tab:
        yield tab


async def _fix(client: Client, ts: int, at: tuple[float, float], **fields: Any) -> None:
    ack = await client.call("fix", {"ts": ts, "lat": at[0], "lon": at[1], **fields})
    assert ack["accepted"] == 1, ack


async def _open(page: Page, server: Server, token: str) -> None:
    await page.goto(f"{server.url}/?token={token}")
    await page.wait_for_selector("body[data-state=live]", timeout=20_000)


async def _replay(page: Page, devices: list[str], from_ms: int, to_ms: int) -> dict[str, Any]:
    """Opens the replay, picks `devices` and the window as a dispatcher would, loads; its state once ready."""
    await page.click("#replay-open")
    for device in devices:
        await page.fill("#replay-device", device)
        await page.dispatch_event("#replay-device", "change")
        await page.wait_for_selector(f'#replay-chosen [data-replay-device="{device}"]')
    for field, ts in (("from", from_ms), ("to", to_ms)):
        # datetime-local is in the browser's zone: write the value the page itself would.
        value = await page.evaluate(
            "ts => new Date(ts - new Date(ts).getTimezoneOffset() * 60000).toISOString().slice(0, 19)", ts
        )
        await page.fill(f"#replay-{field}", value)
    await page.click("#replay-load")
    await page.wait_for_selector("#replay[data-replay-state=ready]", timeout=20_000)
    state: dict[str, Any] = await page.evaluate("window.tracker.replay()")
    return state


async def _seek(page: Page, ts: int) -> dict[str, Any]:
    """Moves the slider to `ts` (whole seconds from the window's start); waits for the clock to be there."""
    state = await page.evaluate("window.tracker.replay()")
    seconds = round((ts - state["from"]) / 1000)
    await page.evaluate(
        """s => { const el = document.getElementById('replay-slider');
                  el.value = String(s); el.dispatchEvent(new Event('input')); }""",
        seconds,
    )
    clock = state["from"] + seconds * 1000
    await page.wait_for_selector(f'#replay-clock[data-ts="{clock}"]')
    moved: dict[str, Any] = await page.evaluate("window.tracker.replay()")
    return moved


def _near(point: list[float] | None, lat: float, lon: float, tol: float = 1e-6) -> bool:
    return point is not None and abs(point[0] - lon) < tol and abs(point[1] - lat) < tol


async def _shoot(page: Page, name: str) -> None:
    """Saves the view (docs/screenshots/<name>.png with TRACKER_UPDATE_SCREENSHOTS=1) and checks it is
    there, a PNG, and small enough for the README."""
    path = screenshot_file(name)
    await page.screenshot(path=str(path))
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) < MAX_PNG_BYTES, (path, len(data))


async def test_replay_moves_the_device_along_its_trail_and_the_feed_follows_the_clock(
    replay_server: Server, page: Page, clients: list[Client]
) -> None:
    fleet = uid("fleet")
    device, token = await add_device(replay_server, fleet)
    c = await device_client(replay_server, token, clients)
    t0 = (now_ms() - 3 * 3600_000) // 1000 * 1000
    await _fix(c, t0, OUTSIDE, speed=20.0)
    await _fix(c, t0 + STEP_MS, HALFWAY, speed=20.0)
    await _fix(c, t0 + 2 * STEP_MS, IN_YARD, speed=0.0)  # fires yard-arrival at this fix's time
    sent = await c.call("send", {"body": {"text": "at the yard"}})
    assert sent["ok"], sent
    viewer = await add_viewer(replay_server, [fleet])
    await _open(page, replay_server, viewer)

    state = await _replay(page, [device], t0 - 60_000, now_ms() + 60_000)
    assert state["tracks"] == [{"id": device, "fixes": 3, "points": 3}]
    assert state["clock"] == state["from"] and state["devices"] == {}  # before its first fix: not drawn
    assert await page.locator("#feed").is_hidden() and await page.locator("#replay-feed").is_visible()

    # A quarter of the way from the first fix to the second: a quarter of the way between them.
    at = await _seek(page, t0 + STEP_MS // 4)
    lat = OUTSIDE[0] + (HALFWAY[0] - OUTSIDE[0]) / 4
    lon = OUTSIDE[1] + (HALFWAY[1] - OUTSIDE[1]) / 4
    assert _near(at["devices"][device], lat, lon), at
    assert await page.locator("#replay-feed [data-event-id]").count() == 0

    # The event shows once the clock reaches its time, and goes again when the clock goes back.
    await _seek(page, t0 + 2 * STEP_MS)
    event = page.locator(f'#replay-feed [data-event-id][data-device="{device}"]:not([data-message-id])')
    await event.wait_for()
    assert await event.get_attribute("data-ts") == str(t0 + 2 * STEP_MS)
    assert "yard" in await event.inner_text()
    assert _near((await page.evaluate("window.tracker.replay()"))["devices"][device], *IN_YARD)
    await _seek(page, t0 + STEP_MS)
    await event.wait_for(state="detached")

    # Play at 600x: the clock runs on by itself, the device is drawn where the clock says.
    await page.select_option("#replay-speed", "600")
    await page.click("#replay-play")
    await page.wait_for_selector("#replay[data-replay-state=playing]")
    await page.wait_for_function("c => window.tracker.replay().clock > c", arg=t0 + STEP_MS + 30_000)
    await page.click("#replay-play")
    await page.wait_for_selector("#replay[data-replay-state=paused]")
    paused = await page.evaluate("window.tracker.replay()")
    assert paused["clock"] > t0 + STEP_MS + 30_000

    # The message of the window shows at its time, with the events.
    message = page.locator(f'#replay-feed [data-message-id="{sent["id"]}"]')
    await _seek(page, paused["to"])
    await message.wait_for()
    assert "at the yard" in await message.inner_text()
    await _shoot(page, "replay")

    await page.click("#replay-close")
    await page.wait_for_selector("#replay", state="hidden")
    assert await page.locator("#feed").is_visible()


async def test_several_devices_replay_at_once_each_where_it_was(
    replay_server: Server, page: Page, clients: list[Client]
) -> None:
    fleet = uid("fleet")
    t0 = (now_ms() - 2 * 3600_000) // 1000 * 1000
    devices = []
    for k in range(3):
        device, token = await add_device(replay_server, fleet)
        c = await device_client(replay_server, token, clients)
        # Device k goes north from its own start, k hundredths of a degree apart, the later ones later.
        start = t0 + k * 60_000
        await _fix(c, start, (52.40, 13.20 + k / 100), speed=10.0)
        await _fix(c, start + STEP_MS, (52.45, 13.20 + k / 100), speed=10.0)
        devices.append(device)
    await _open(page, replay_server, await add_viewer(replay_server, [fleet]))
    state = await _replay(page, devices, t0 - 60_000, t0 + 3 * STEP_MS)
    assert [t["id"] for t in state["tracks"]] == devices

    at = await _seek(page, t0 + 120_000)  # device 2 starts now, the others are on their way
    for k, device in enumerate(devices):
        done = (120_000 - k * 60_000) / STEP_MS
        assert _near(at["devices"][device], 52.40 + 0.05 * done, 13.20 + k / 100), (k, at)
    assert await page.locator(".replay-marker[data-replay-device]").count() == 3
    assert await page.evaluate("window.tracker.map.getLayer('devices') !== undefined")


async def test_too_long_a_window_is_refused_in_the_page(
    replay_server: Server, page: Page, clients: list[Client]
) -> None:
    fleet = uid("fleet")
    device, token = await add_device(replay_server, fleet)
    await _fix(await device_client(replay_server, token, clients), now_ms() - 1000, OUTSIDE)
    await _open(page, replay_server, await add_viewer(replay_server, [fleet]))
    await page.click("#replay-open")
    await page.fill("#replay-device", device)
    await page.dispatch_event("#replay-device", "change")
    await page.fill("#replay-from", "2026-01-01T00:00:00")
    await page.fill("#replay-to", "2026-01-09T00:00:00")
    await page.click("#replay-load")
    await page.wait_for_selector("#replay[data-replay-state=error]")
    assert "7 days" in await page.locator("#replay-note").inner_text()


async def test_clusters_count_devices_by_status_at_low_zoom_and_city_zoom_shows_each(
    replay_server: Server, page: Page, clients: list[Client]
) -> None:
    fleet = uid("fleet")
    now = now_ms()
    groups = {"berlin": (52.51, 13.38, 12), "munich": (48.14, 11.58, 8)}
    for lat, lon, n in groups.values():
        for k in range(n):
            _, token = await add_device(replay_server, fleet)
            c = await device_client(replay_server, token, clients)
            # A few streets apart, within 400 m; every other device moving.
            at = (lat + (k // 4) * 0.0015, lon + (k % 4) * 0.002)
            await _fix(c, now - 5000, at, speed=8.0 if k % 2 else 0.0, heading=90.0 * (k % 4))
    await _open(page, replay_server, await add_viewer(replay_server, [fleet]))
    # The page frames both cities at country zoom: a city is a cluster (two, should a square's edge
    # run through it), counted by status.
    clusters = await until(lambda: _clusters(page, 20))
    assert 2 <= len(clusters) <= 4, clusters
    assert sum(c["moving"] for c in clusters) == 10
    for c in clusters:
        assert c["moving"] + c["stopped"] == c["count"] and c["offline"] == 0
    biggest = max(c["count"] for c in clusters)
    marker = page.locator(f'.cluster[data-count="{biggest}"]').first
    assert await marker.inner_text() == str(biggest)
    await _shoot(page, "clusters")

    # City zoom on Berlin: no cluster, every device drawn as itself (none hidden).
    lat, lon, n = groups["berlin"]
    centre = [lon + 0.003, lat + 0.0015]
    await page.evaluate("c => window.tracker.map.jumpTo({ center: c, zoom: 15 })", centre)
    await page.wait_for_function("() => window.tracker.clusters().length === 0")
    await page.wait_for_selector(".cluster", state="detached")
    assert len(await page.evaluate("window.tracker.devicePoints()")) == n + groups["munich"][2]
    await _shoot(page, "live")


async def _clusters(page: Page, devices: int) -> list[dict[str, Any]] | None:
    """The clusters drawn, once they hold `devices` between them."""
    found: list[dict[str, Any]] = await page.evaluate("window.tracker.clusters()")
    return found if sum(c["count"] for c in found) == devices else None


# The trail's max_points, over HTTP.


async def test_max_points_keeps_the_budget_real_fixes_and_their_times(
    replay_server: Server, clients: list[Client]
) -> None:
    fleet = uid("fleet")
    device, token = await add_device(replay_server, fleet)
    c = await device_client(replay_server, token, clients)
    t0 = (now_ms() - 3600_000) // 1000 * 1000
    # 400 fixes a second apart: east for 200 s, a stop of 100 s, then north.
    fixes = []
    for i in range(400):
        east = min(i, 200) * 10.0
        north = max(0, i - 300) * 10.0
        fixes.append(
            {"ts": t0 + i * 1000, "lat": 52.0 + north / 111_320, "lon": 13.0 + east / 68_500, "speed": 10.0}
        )
    ack = await c.call("fix", fixes)
    assert ack["accepted"] == 400, ack
    viewer = await add_viewer(replay_server, [fleet])
    headers = {"Authorization": f"Bearer {viewer}"}
    url = f"/api/devices/{device}/trail"
    window = {"from": t0, "to": t0 + 400_000}
    async with web_client(base_url=replay_server.url, headers=headers) as http:
        r = await http.get(url, params={**window, "max_points": 10})
        assert r.status_code == 200, r.text
        p = r.json()["properties"]
        coords = r.json()["geometry"]["coordinates"]
        assert p["fixes"] == 400 and p["max_points"] == 10 and p["points"] == len(coords) == len(p["times"])
        assert p["points"] <= 10
        # The corners of the path in time, not only in space: the start and end of the stop are kept.
        assert {t0, t0 + 200_000, t0 + 300_000, t0 + 399_000} <= set(p["times"])
        stored = {f["ts"]: [f["lon"], f["lat"]] for f in fixes}
        for ts, xy in zip(p["times"], coords, strict=True):
            assert math.isclose(xy[0], stored[ts][0]) and math.isclose(xy[1], stored[ts][1])
        assert 2950 < p["distance_m"] < 3050

        everything = (await http.get(url, params={**window, "max_points": 1000})).json()["properties"]
        assert everything["points"] == 400
        # A window of over a day is read in two halves at once: the same fixes, the same ends.
        wide = {"from": t0 - 86_400_000, "to": t0 + 400_000, "max_points": 1000}
        p_wide = (await http.get(url, params=wide)).json()["properties"]
        assert p_wide["fixes"] == 400 and p_wide["times"][0] == t0 and p_wide["times"][-1] == t0 + 399_000
        assert set(p_wide["times"]) <= set(stored) and p_wide["times"] == sorted(p_wide["times"])
        bads: list[tuple[dict[str, Any], str]] = [
            ({"max_points": 5}, "max_points must be between 10 and 20000"),
            ({"max_points": 100, "simplify": 10}, "pass one of them"),
            ({"max_points": 100, "format": "csv"}, "max_points does not apply to format=csv"),
        ]
        for bad, says in bads:
            r = await http.get(url, params={**window, **bad})
            assert r.status_code == 400 and says in r.json()["error"], r.text
        # A gap shorter than the thinning slice (a week / 50000 = 12.1 s) would make each kept fix a run.
        week = {"from": t0 - 7 * 86_400_000 + 400_000, "to": t0 + 400_000, "max_points": 1000}
        r = await http.get(url, params={**week, "gap_s": 10})
        assert r.status_code == 400 and "gap_s must be 0 or at least 12.1 s" in r.json()["error"], r.text
        assert (await http.get(url, params={**week, "gap_s": 13})).status_code == 200
        gpx = await http.get(url, params={**window, "max_points": 10, "format": "gpx"})
        assert gpx.status_code == 200 and gpx.text.count("<trkpt") == p["points"]
        spec = (await http.get("/openapi.json")).json()
        names = [q.get("name") for q in spec["paths"]["/api/devices/{id}/trail"]["get"]["parameters"]]
        assert "max_points" in names


def test_screenshots_are_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    for name in ("live", "replay", "clusters"):
        assert f"docs/screenshots/{name}.png" in readme
    assert Path(ROOT / "docs" / "screenshots").is_dir()


def test_the_budget_keeps_a_stop_on_a_straight_road_and_each_run_s_ends() -> None:
    # East along a parallel at 10 m/s for 100 s, 60 s stopped, 100 s on: every fix on one straight line, so
    # plain Douglas-Peucker would keep only the ends; in time the stop is where a replay would go wrong.
    ts, lon = [], []
    x = 0.0
    for i in range(261):
        ts.append(1_700_000_000_000 + i * 1000)
        lon.append(13.0 + x / 68_000)
        if not 100 <= i < 160:
            x += 10.0
    track = Trail.from_columns(ts, [52.0] * len(ts), lon)
    kept = budget_indexes(track, run_starts(track.ts, 0), 4).tolist()
    assert kept == [0, 100, 160, 260]
    # Two runs (a silence of over 30 s between them): each keeps its first and last fix, within budget.
    gap = Trail.from_columns([*ts[:100], *(t + 60_000 for t in ts[100:])], [52.0] * 261, lon)
    starts = run_starts(gap.ts, 30_000)
    assert starts.tolist() == [0, 100]
    drawn, drawn_starts = budget_runs(gap, starts, 6)
    assert {0, 99, 100, 260} <= set(budget_indexes(gap, starts, 6).tolist()) and len(drawn) <= 6
    assert drawn_starts[0] == 0 and drawn.ts[drawn_starts[1]] == gap.ts[100]
    assert budget_indexes(track, run_starts(track.ts, 0), 1000).tolist() == list(range(261))
