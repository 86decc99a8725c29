"""The dispatcher map in a real browser: Debian's Chromium driven by Playwright, against a real server.

Every page blocks requests that leave the server (the OpenStreetMap tiles cannot be reached here), so these
tests also show the page works without tiles. A page that throws an uncaught error fails its test. The
populated map is saved as `artifacts/map.png` to look at.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import (
    ROOT,
    Client,
    Server,
    add_device,
    add_viewer,
    device_client,
    free_port,
    now_ms,
    own_server,
    start_server,
    uid,
    until,
    web_client,
    write_rules,
)
from playwright.async_api import Browser, Page, async_playwright

from tracker.tools.browser import VIEWPORT, launch_chromium
from tracker.tools.trackfile import read_track

ARTIFACTS = ROOT / "artifacts"
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
IN_YARD = {"lat": 52.525, "lon": 13.405}
OUTSIDE = {"lat": 52.50, "lon": 13.30}


@pytest.fixture(scope="module")
def map_server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server of this module's own, with a fence to enter."""
    tmp = tmp_path_factory.mktemp("map")
    write_rules(tmp, RULES, "yard.yaml")
    with own_server(database_url, tmp) as s:
        yield s


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        b = await launch_chromium(p)
        yield b
        await b.close()


class MapPage:
    """One browser tab (with its own storage) on a server's map, and what went wrong in it."""

    def __init__(self, page: Page, server: Server) -> None:
        self.page = page
        self.server = server
        self.errors: list[str] = []
        self.blocked: list[str] = []
        page.on("pageerror", lambda e: self.errors.append(str(e)))

    async def block_outside(self) -> None:
        async def route(r: Any) -> None:
            if r.request.url.startswith(self.server.url):
                await r.continue_()
            else:
                self.blocked.append(r.request.url)
                await r.abort()

        await self.page.route("**/*", route)

    async def open(self, token: str | None = None) -> None:
        await self.page.goto(self.server.url + (f"/?token={token}" if token else "/"))
        if token:
            await self.live()

    async def live(self) -> None:
        await self.page.wait_for_selector("body[data-state=live]", timeout=20_000)

    def row(self, device: str) -> Any:
        return self.page.locator(f'[data-device-id="{device}"]')

    async def row_ts(self, device: str, ts: int) -> None:
        """Wait until the list shows `device` with newest fix `ts`."""
        await self.page.wait_for_selector(f'[data-device-id="{device}"][data-ts="{ts}"]', timeout=15_000)

    async def map_points(self) -> dict[str, list[float]]:
        """What the devices layer draws: device id -> [lon, lat] (the WebGL layer's data, not the list)."""
        points: dict[str, list[float]] = await self.page.evaluate("window.tracker.devicePoints()")
        return points


@pytest.fixture
async def tabs(browser: Browser) -> AsyncIterator[Callable[[Server], Awaitable[MapPage]]]:
    """Opens tabs on a server; at the end, closes them and fails the test if a page threw."""
    made: list[MapPage] = []

    async def open_tab(server: Server) -> MapPage:
        context = await browser.new_context(viewport=VIEWPORT)
        tab = MapPage(await context.new_page(), server)
        await tab.block_outside()
        made.append(tab)
        return tab

    yield open_tab
    for tab in made:
        await tab.page.context.close()
    assert not [e for tab in made for e in tab.errors], "the page threw"


async def fix(client: Client, ts: int, **fields: Any) -> None:
    ack = await client.call("fix", {"ts": ts, **fields})
    assert ack["accepted"] == 1, ack


async def test_token_from_the_url_is_kept_and_removed_from_the_address(
    map_server: Server, tabs: Callable[[Server], Awaitable[MapPage]]
) -> None:
    fleet = uid("fleet")
    token = await add_viewer(map_server, [fleet], name=uid("dispatcher"))
    tab = await tabs(map_server)
    await tab.open(token)
    assert "token" not in tab.page.url
    assert await tab.page.evaluate("localStorage.getItem('tracker.token')") == token
    await tab.page.reload()
    await tab.live()
    assert await tab.page.locator("#fleet option").all_inner_texts() == ["All my fleets", fleet]


async def test_sign_in_form_refuses_a_wrong_token_and_takes_a_good_one(
    map_server: Server, tabs: Callable[[Server], Awaitable[MapPage]]
) -> None:
    token = await add_viewer(map_server, [uid("fleet")])
    tab = await tabs(map_server)
    await tab.open()
    await tab.page.wait_for_selector("body[data-state=signin]")
    await tab.page.fill("#signin-token", "not-a-token")
    await tab.page.click("#signin button[type=submit]")
    await tab.page.wait_for_selector("#signin-error:has-text('not accepted')")
    await tab.page.fill("#signin-token", token)
    await tab.page.click("#signin button[type=submit]")
    await tab.live()
    await tab.page.click("#signout")
    await tab.page.wait_for_selector("body[data-state=signin]")
    assert await tab.page.evaluate("localStorage.getItem('tracker.token')") is None


async def test_devices_appear_and_move_and_another_fleet_never_shows(
    map_server: Server, tabs: Callable[[Server], Awaitable[MapPage]], clients: list[Client]
) -> None:
    fleet, other = uid("fleet"), uid("fleet")
    mine, mine_token = await add_device(map_server, fleet)
    theirs, theirs_token = await add_device(map_server, other)
    mine_c = await device_client(map_server, mine_token, clients)
    theirs_c = await device_client(map_server, theirs_token, clients)
    t = now_ms() - 60_000
    await fix(mine_c, t, lat=52.51, lon=13.39, speed=8.0, heading=90.0)
    await fix(theirs_c, t, lat=52.511, lon=13.391, speed=8.0, heading=90.0)

    tab = await tabs(map_server)
    await tab.open(await add_viewer(map_server, [fleet]))
    await tab.row_ts(mine, t)  # from the subscribe snapshot
    assert (await tab.map_points())[mine] == [13.39, 52.51]

    # Live: the other fleet's device moves first, then ours; once ours shows, theirs had its chance.
    for step in range(1, 4):
        await fix(theirs_c, t + step * 1000, lat=52.511 + step / 1000, lon=13.391)
    await fix(mine_c, t + 5000, lat=52.515, lon=13.395, speed=9.0, heading=45.0)
    await tab.row_ts(mine, t + 5000)
    assert await until(lambda: _at(tab, mine, [13.395, 52.515]))
    assert await tab.row(theirs).count() == 0
    assert theirs not in await tab.page.evaluate("window.tracker.deviceIds()")
    assert theirs not in await tab.map_points()
    row_text = await tab.row(mine).inner_text()
    assert fleet in row_text and "32 km/h" in row_text

    # A click on the arrow drawn on the map selects the device.
    box = await tab.page.locator("#map").bounding_box()
    assert box is not None
    at = await tab.page.evaluate("window.tracker.map.project([13.395, 52.515])")
    await tab.page.mouse.click(box["x"] + at["x"], box["y"] + at["y"])
    await tab.page.wait_for_selector(f"#details-title:has-text('{mine}')")


async def _at(tab: MapPage, device: str, lonlat: list[float]) -> bool:
    return (await tab.map_points()).get(device) == lonlat


async def test_entering_a_fence_shows_in_the_feed(
    map_server: Server, tabs: Callable[[Server], Awaitable[MapPage]], clients: list[Client]
) -> None:
    fleet = uid("fleet")
    device, token = await add_device(map_server, fleet)
    c = await device_client(map_server, token, clients)
    tab = await tabs(map_server)
    viewer = await add_viewer(map_server, [fleet])
    await tab.open(viewer)
    t = now_ms() - 10_000
    await fix(c, t, **OUTSIDE)
    await fix(c, t + 1000, **IN_YARD)
    async with web_client(base_url=map_server.url) as http:
        r = await http.get(
            "/api/events", params={"device": device}, headers={"Authorization": f"Bearer {viewer}"}
        )
    [event] = r.json()["events"]
    item = tab.page.locator(f'[data-event-id="{event["id"]}"]')
    await item.wait_for(timeout=15_000)
    text = await item.inner_text()
    assert "enter" in text.lower() and device in text and "yard" in text
    # Clicking the event selects its device.
    await item.click()
    await tab.page.wait_for_selector(f"#details-title:has-text('{device}')")


async def test_a_message_sent_from_the_page_reaches_the_device(
    map_server: Server, tabs: Callable[[Server], Awaitable[MapPage]], clients: list[Client]
) -> None:
    fleet = uid("fleet")
    name = uid("dispatcher")
    device, token = await add_device(map_server, fleet)
    c = await device_client(map_server, token, clients)
    await fix(c, now_ms() - 1000, lat=52.51, lon=13.39)
    tab = await tabs(map_server)
    await tab.open(await add_viewer(map_server, [fleet], name=name))
    await tab.row(device).click()
    await tab.page.wait_for_selector("#details:not([hidden])")
    await tab.page.fill("#send-body", '{"text": "Pick up at gate 3", "priority": 1}')
    await tab.page.click("#send button[type=submit]")
    message = await c.next("message", timeout=15)
    assert message["body"] == {"text": "Pick up at gate 3", "priority": 1}
    assert message["from"] == name
    # The device client acks it (its handler returns): the page shows it delivered.
    await tab.page.wait_for_selector(f'#sent li[data-message-id="{message["id"]}"][data-state="acked"]')
    assert await tab.page.input_value("#send-body") == ""


async def test_reconnects_and_resubscribes_after_the_server_comes_back(
    database_url: str,
    tmp_path: Path,
    tabs: Callable[[Server], Awaitable[MapPage]],
    clients: list[Client],
) -> None:
    port = free_port()
    first = start_server(database_url, tmp_path / "a", port=port)
    try:
        fleet = uid("fleet")
        device, token = await add_device(first, fleet)
        viewer = await add_viewer(first, [fleet])
        tab = await tabs(first)
        await tab.open(viewer)
    finally:
        first.stop()
    await tab.page.wait_for_selector("#connection[data-connection=offline]", timeout=15_000)
    second = start_server(database_url, tmp_path / "b", port=port)
    try:
        await tab.live()  # by itself: no reload
        c = await device_client(second, token, clients)
        t = now_ms()
        await fix(c, t, lat=52.52, lon=13.4)
        await tab.row_ts(device, t)  # the new server's rooms have this tab again
        await c.close()
    finally:
        second.stop()


async def test_populated_map_screenshot(
    map_server: Server, tabs: Callable[[Server], Awaitable[MapPage]], clients: list[Client]
) -> None:
    """Forty devices of two fleets at points of the sample tracks, one selected with its trail, an event in
    the feed: saved to artifacts/map.png (and map-device.png with one selected) to look at."""
    fleets = [uid("couriers"), uid("vans")]
    files = sorted((ROOT / "sample_tracks").glob("*.gpx")) + sorted((ROOT / "sample_tracks").glob("*.csv"))
    devices: list[tuple[str, Client]] = []
    t0 = now_ms() - 120_000
    for i in range(40):
        track = read_track(files[i % len(files)])
        device, token = await add_device(map_server, fleets[i % 2], f"{fleets[i % 2]}-{i:02d}")
        c = await device_client(map_server, token, clients)
        at = (i * 97) % (len(track.lat) - 30)
        fixes = [
            {
                "ts": t0 + k * 5000,
                "lat": float(track.lat[at + k]),
                "lon": float(track.lon[at + k]),
                "speed": 0.0 if i % 5 == 0 else 6.0 + i % 7,
                "heading": float((i * 37 + k) % 360),
            }
            for k in range(0, 20, 4)
        ]
        if i % 9 == 0:  # some reported long ago: offline
            for f in fixes:
                f["ts"] -= 3600_000
        ack = await c.call("fix", fixes)
        assert ack["accepted"] == len(fixes), ack
        devices.append((device, c))
    c = devices[1][1]
    await fix(c, now_ms() - 2000, **OUTSIDE)
    await fix(c, now_ms() - 1000, **IN_YARD)

    tab = await tabs(map_server)
    await tab.open(await add_viewer(map_server, fleets, name="Dispatch Berlin"))
    await until(lambda: _count(tab, 40))
    await tab.page.locator("[data-event-id]").first.wait_for()
    await until(lambda: _rendered(tab, "world-land"))  # without tiles: Natural Earth (below)
    ARTIFACTS.mkdir(exist_ok=True)
    await tab.page.screenshot(path=str(ARTIFACTS / "map.png"))
    assert len(await tab.map_points()) == 40
    # The tiles were asked for (credited) and Natural Earth drawn in their place (credited too).
    credits = await tab.page.inner_text(".maplibregl-ctrl-attrib")
    assert "OpenStreetMap" in credits and "Natural Earth" in credits, credits
    tiles = [u for u in tab.blocked if "tile.openstreetmap.org" in u]
    assert tiles  # it tried the tiles, and still works
    # Only once the fleet was framed, never at the world's zoom first. The first framing may hold only the
    # devices drawn so far (zoom 9 here, for two at the ends of Berlin), the refit a few seconds later all.
    assert min(int(u.split("/")[3]) for u in tiles) >= 8, tiles
    # Without tiles, Natural Earth stands in for them: land under the devices, water around it.
    background = "window.tracker.map.getPaintProperty('background', 'background-color')"
    assert await tab.page.evaluate(background) == "#c9d8e4"

    # Search narrows the (virtualised) list; picking a device shows its details and trail.
    await tab.page.fill("#search", fleets[1])
    await tab.page.wait_for_selector("#count:has-text('20 of 40')")
    shown = await tab.page.locator("[data-device-id]:visible").evaluate_all(
        "rs => rs.map(r => r.dataset.deviceId)"
    )
    assert shown and all(d.startswith(fleets[1]) for d in shown)
    await tab.row(devices[3][0]).click()
    await tab.page.wait_for_selector("#details-trail:has-text('fixes')")
    await tab.page.wait_for_timeout(500)  # let the fly-to finish before the picture
    await tab.page.screenshot(path=str(ARTIFACTS / "map-device.png"))


async def _rendered(tab: MapPage, layer: str) -> bool:
    """Whether the map draws something of `layer` in view."""
    found: bool = await tab.page.evaluate(
        f"window.tracker.map.getLayer('{layer}') !== undefined && "
        f"window.tracker.map.queryRenderedFeatures({{layers: ['{layer}']}}).length > 0"
    )
    return found


async def _count(tab: MapPage, n: int) -> bool:
    return len(await tab.page.evaluate("window.tracker.deviceIds()")) == n


async def test_page_headers_assets_and_a_missing_build(
    map_server: Server, database_url: str, tmp_path: Path
) -> None:
    async with web_client(base_url=map_server.url) as http:
        page = await http.get("/")
        assert page.status_code == 200
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["cache-control"] == "no-cache"
        assert '"tiles":"https://tile.openstreetmap.org/{z}/{x}/{y}.png"' in page.text
        script = re.search(r'src="(/assets/main-[^"]+\.js)"', page.text)
        assert script is not None
        js = await http.get(script.group(1), headers={"Accept-Encoding": "gzip"})
        assert js.status_code == 200 and js.headers["content-encoding"] == "gzip"
        assert "immutable" in js.headers["cache-control"]
        assert js.headers["content-type"].startswith("text/javascript")
        assert (await http.get("/assets/..%2Fsrc%2Fmain.js")).status_code == 404
        assert (await http.get("/assets/nothing.js")).status_code == 404
        icon = await http.get("/favicon.ico")
        assert icon.status_code == 200 and icon.headers["content-type"] == "image/svg+xml"
        assert icon.text.startswith("<svg") and len(icon.content) < 1000
        assert 'rel="icon" href="/favicon.ico"' in page.text
        world = re.search(r"/assets/world-50m-[0-9a-f]+\.json", js.text)
        assert world is not None
        land = await http.get(world.group(0), headers={"Accept-Encoding": "gzip"})
        assert land.status_code == 200 and land.headers["content-type"].startswith("application/json")
        assert land.headers["content-encoding"] == "gzip" and land.json()["type"] == "Topology"
        no_overlay = await http.get("/map/overlay.geojson")
        assert no_overlay.status_code == 404 and "TRACKER_MAP_OVERLAY" in no_overlay.json()["error"]
    lan_tiles = "http://tiles.lan:8080/{z}/{x}/{y}.png"
    env = {"TRACKER_WEB_DIR": str(tmp_path / "nowhere"), "TRACKER_MAP_TILES": lan_tiles}
    with own_server(database_url, tmp_path, env) as bare:
        r = httpx.get(bare.url + "/")
        icon = httpx.get(bare.url + "/favicon.ico")
    assert r.status_code == 503
    assert "npm --prefix web ci" in r.text and str(tmp_path / "nowhere") in r.text
    assert icon.status_code == 404 and "not built" in icon.json()["error"]
    # A tile server on plain http is allowed by the page's CSP (https ones always are).
    csp = r.headers["content-security-policy"]
    assert "img-src 'self' data: blob: https: http://tiles.lan:8080;" in csp


async def test_the_fleet_selector_narrows_the_map_to_one_fleet_and_back(
    map_server: Server, tabs: Callable[[Server], Awaitable[MapPage]], clients: list[Client]
) -> None:
    a, b = sorted([uid("fleet"), uid("fleet")])
    t = now_ms() - 5000
    ids = {}
    for fleet, lon in ((a, 13.38), (b, 13.42)):
        device, token = await add_device(map_server, fleet)
        await fix(await device_client(map_server, token, clients), t, lat=52.51, lon=lon)
        ids[fleet] = device
    tab = await tabs(map_server)
    await tab.open(await add_viewer(map_server, [a, b]))
    await until(lambda: _count(tab, 2))
    assert await tab.page.locator("#fleet option").all_inner_texts() == ["All my fleets", a, b]

    await tab.page.select_option("#fleet", b)
    await tab.row(ids[b]).wait_for()
    await tab.live()
    await until(lambda: _drawn(tab, {ids[b]}))
    assert await tab.page.evaluate("window.tracker.deviceIds()") == [ids[b]]

    await tab.page.select_option("#fleet", "")
    await until(lambda: _drawn(tab, set(ids.values())))
    # Colour by fleet: the legend lists the fleets.
    await tab.page.select_option("#colour", "fleet")
    assert await tab.page.locator("#legend span").all_inner_texts() == [a, b]


async def _drawn(tab: MapPage, devices: set[str]) -> bool:
    return set(await tab.map_points()) == devices


async def test_an_unreachable_map_style_falls_back_to_a_plain_background(
    database_url: str,
    tmp_path: Path,
    tabs: Callable[[Server], Awaitable[MapPage]],
    clients: list[Client],
) -> None:
    style = {"TRACKER_MAP_STYLE": "https://tiles.invalid/style.json"}
    with own_server(database_url, tmp_path, style) as server:
        fleet = uid("fleet")
        device, token = await add_device(server, fleet)
        tab = await tabs(server)
        await tab.open(await add_viewer(server, [fleet]))
        await fix(await device_client(server, token, clients), now_ms(), lat=52.52, lon=13.4, heading=10.0)
        await until(lambda: _drawn(tab, {device}))
        assert any("tiles.invalid/style.json" in u for u in tab.blocked)


async def test_a_viewer_of_all_fleets_keeps_every_fleet_to_choose_from(
    map_server: Server, tabs: Callable[[Server], Awaitable[MapPage]], clients: list[Client]
) -> None:
    a, b = uid("fleet"), uid("fleet")
    for fleet in (a, b):
        _, token = await add_device(map_server, fleet)
        await fix(await device_client(map_server, token, clients), now_ms(), lat=52.51, lon=13.39)
    tab = await tabs(map_server)
    await tab.open(await add_viewer(map_server, "all"))
    options = tab.page.locator("#fleet option")
    await tab.page.wait_for_selector(f'#fleet option[value="{b}"]', state="attached")
    assert (await options.all_inner_texts())[0] == "All fleets"
    await tab.page.select_option("#fleet", a)
    # The selector is rebuilt once the new subscription's device list is in.
    await until(lambda: tab.page.evaluate("window.tracker.subscriptions() === 2"))
    assert {a, b} <= set(await options.evaluate_all("os => os.map(o => o.value)"))


async def _trail_lines(tab: MapPage) -> list[list[list[float]]]:
    """The lines the trail layer draws (a MultiLineString's, or a LineString's one)."""
    data = await tab.page.evaluate("window.tracker.map.getSource('trail').serialize().data")
    geometry = data.get("geometry") or {}
    if geometry.get("type") == "LineString":
        return [geometry["coordinates"]]
    lines: list[list[list[float]]] = geometry.get("coordinates", [])
    return lines


async def test_the_trail_breaks_where_the_device_was_silent_and_its_line_stays_current(
    map_server: Server, tabs: Callable[[Server], Awaitable[MapPage]], clients: list[Client]
) -> None:
    """Two runs 20 minutes apart are two lines, not one across town; a live fix after a silence starts a
    third, and the panel's fix count and length follow every live fix, as `/trail` counts them."""
    fleet = uid("fleet")
    device, token = await add_device(map_server, fleet)
    c = await device_client(map_server, token, clients)
    now = now_ms()
    first = [(now - 2_400_000 + k * 5000, 52.50 + k * 0.001, 13.40) for k in range(4)]
    second = [(now - 1_200_000 + k * 5000, 52.45, 13.30 + k * 0.001) for k in range(4)]
    for ts, lat, lon in first + second:
        await fix(c, ts, lat=lat, lon=lon)
    viewer = await add_viewer(map_server, [fleet])
    tab = await tabs(map_server)
    await tab.open(viewer)

    async def note() -> str:
        return await tab.page.inner_text("#details-trail")

    async def server_km() -> str:
        async with web_client(base_url=map_server.url) as http:
            r = await http.get(
                f"/api/devices/{device}/trail",
                params={"from": now - 3 * 3_600_000, "gap_s": 600},  # as the page asks
                headers={"Authorization": f"Bearer {viewer}"},
            )
        p = r.json()["properties"]
        return f"{p['fixes']} fixes, {p['distance_m'] / 1000:.1f} km"

    await tab.row(device).click()
    await tab.page.wait_for_selector("#details-trail:has-text('fixes')")
    assert await note() == f"Trail, last 3 h: {await server_km()}, 2 parts"
    assert await _trail_lines(tab) == [[[lon, lat] for _, lat, lon in run] for run in (first, second)]

    # Silent for 20 minutes, then live again elsewhere: a third part, drawn as the one fix it has so far.
    await fix(c, now - 2000, lat=52.52, lon=13.45)
    await tab.page.wait_for_selector("#details-trail:has-text('9 fixes')")
    assert (await note()).endswith(", 3 parts")
    assert (await _trail_lines(tab))[2] == [[13.45, 52.52], [13.45, 52.52]]
    # The next fix, 0.9 km on, extends it; the line in the panel says what /trail says (1.43 km).
    await fix(c, now - 1000, lat=52.528, lon=13.45)
    await tab.page.wait_for_selector("#details-trail:has-text('10 fixes')")
    assert await note() == f"Trail, last 3 h: {await server_km()}, 3 parts"
    assert (await _trail_lines(tab))[2] == [[13.45, 52.52], [13.45, 52.528]]


async def test_the_overlay_is_drawn_without_tiles(
    database_url: str,
    tmp_path: Path,
    tabs: Callable[[Server], Awaitable[MapPage]],
    clients: list[Client],
) -> None:
    """TRACKER_MAP_OVERLAY (the demo's simulated streets) is drawn over Natural Earth when tiles fail."""
    streets = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {"main": True},
                "geometry": {"type": "LineString", "coordinates": [[13.39, 52.515], [13.41, 52.525]]},
            },
            {
                "type": "Feature",
                "properties": {"main": False},
                "geometry": {"type": "LineString", "coordinates": [[13.39, 52.525], [13.41, 52.515]]},
            },
        ],
    }
    overlay = tmp_path / "streets.geojson"
    overlay.write_text(json.dumps(streets))
    with own_server(database_url, tmp_path, {"TRACKER_MAP_OVERLAY": str(overlay)}) as server:
        r = httpx.get(server.url + "/map/overlay.geojson")
        assert r.status_code == 200 and r.headers["content-type"] == "application/geo+json"
        assert r.json() == streets
        fleet = uid("fleet")
        device, token = await add_device(server, fleet)
        await fix(await device_client(server, token, clients), now_ms(), lat=52.52, lon=13.4)
        tab = await tabs(server)
        await tab.open(await add_viewer(server, [fleet]))
        await until(lambda: _drawn(tab, {device}))
        await until(lambda: _rendered(tab, "overlay-line"))
        await until(lambda: _rendered(tab, "world-land"))


async def test_fixes_leave_the_trail_as_they_leave_its_three_hours(
    map_server: Server, tabs: Callable[[Server], Awaitable[MapPage]], clients: list[Client]
) -> None:
    """The window slides: a fix that becomes older than 3 h leaves the drawn trail, its count and its length
    with the next redraw (here, the next live fix), as `/trail` of the same window counts them."""
    fleet = uid("fleet")
    device, token = await add_device(map_server, fleet)
    c = await device_client(map_server, token, clients)
    soon_old = now_ms() - 3 * 3_600_000 + 15_000  # still in the window for 15 s
    await fix(c, soon_old, lat=52.50, lon=13.40)
    await fix(c, soon_old + 5000, lat=52.51, lon=13.40)  # 1.1 km: goes with the first fix
    recent = now_ms() - 60_000
    await fix(c, recent, lat=52.51, lon=13.40)
    await fix(c, recent + 5000, lat=52.514, lon=13.40)
    tab = await tabs(map_server)
    await tab.open(await add_viewer(map_server, [fleet]))
    await tab.row(device).click()
    await tab.page.wait_for_selector("#details-trail:has-text('4 fixes')")
    assert await tab.page.inner_text("#details-trail") == "Trail, last 3 h: 4 fixes, 1.6 km, 2 parts"

    await asyncio.sleep((soon_old + 5000 + 3 * 3_600_000 - now_ms()) / 1000 + 0.5)  # both are older now
    await fix(c, now_ms() - 1000, lat=52.516, lon=13.40)
    await tab.page.wait_for_selector("#details-trail:has-text('3 fixes')")
    assert await tab.page.inner_text("#details-trail") == "Trail, last 3 h: 3 fixes, 0.7 km"
    assert await _trail_lines(tab) == [[[13.40, 52.51], [13.40, 52.514], [13.40, 52.516]]]


async def test_the_conversation_shows_both_directions_with_ticks_and_counts_unread_messages(
    map_server: Server, tabs: Callable[[Server], Awaitable[MapPage]], clients: list[Client]
) -> None:
    fleet = uid("fleet")
    name = uid("dispatcher")
    viewer_token = await add_viewer(map_server, [fleet], name=name)
    talker, talker_token = await add_device(map_server, fleet)
    quiet, quiet_token = await add_device(map_server, fleet)
    t = await device_client(map_server, talker_token, clients)
    q = await device_client(map_server, quiet_token, clients)
    await fix(t, now_ms() - 1000, lat=52.51, lon=13.39)
    await fix(q, now_ms() - 1000, lat=52.51, lon=13.40)
    # Before the page opens: a dispatcher's message the device acked, then the device's answer.
    async with web_client(base_url=map_server.url) as http:
        r = await http.post(
            f"/api/devices/{talker}/messages",
            json={"body": "Where are you?"},
            headers={"Authorization": f"Bearer {viewer_token}"},
        )
    asked = r.json()["id"]
    assert (await t.next("message"))["id"] == asked
    answer = await t.call("send", {"body": {"text": "At the depot"}, "client_id": "a-1"})

    tab = await tabs(map_server)
    await tab.open(viewer_token)
    await tab.row(talker).click()
    items = tab.page.locator("#sent li")
    await tab.page.wait_for_selector(f'#sent li[data-message-id="{answer["id"]}"]')
    await tab.page.wait_for_selector(f'#sent li[data-message-id="{asked}"][data-state="acked"]')
    assert [await li.get_attribute("data-direction") for li in await items.all()] == [
        "to_device",
        "from_device",
    ]
    assert "At the depot" in await items.nth(1).inner_text() and name in await items.nth(0).inner_text()

    # Live: the open conversation grows; another device's messages count as unread in the list.
    live = await t.call("send", {"body": "Leaving now"})
    await tab.page.wait_for_selector(
        f'#sent li[data-message-id="{live["id"]}"][data-direction="from_device"]'
    )
    for text in ("Door is locked", "Call me"):
        assert (await q.call("send", {"body": text}))["ok"]
    await tab.page.wait_for_selector(f'[data-device-id="{quiet}"][data-unread="2"]')
    assert await tab.row(talker).get_attribute("data-unread") is None

    # Opening it reads them, and an answer from the page goes round: queued, sent, delivered, shown once.
    await tab.row(quiet).click()
    await tab.page.wait_for_selector(f'[data-device-id="{quiet}"]:not([data-unread])')
    await tab.page.wait_for_selector("#sent li[data-direction=from_device] >> text=Call me")
    assert await items.count() == 2
    await tab.page.fill("#send-body", "Coming to open it")
    await tab.page.click("#send button[type=submit]")
    message = await q.next("message", timeout=15)
    assert message["body"] == "Coming to open it"
    done = tab.page.locator(f'#sent li[data-message-id="{message["id"]}"][data-state="acked"]')
    await done.wait_for()
    assert "✓✓" in await done.inner_text()
    assert await items.count() == 3
    assert await tab.page.input_value("#send-body") == ""
    ARTIFACTS.mkdir(exist_ok=True)
    await tab.page.screenshot(path=str(ARTIFACTS / "map-conversation.png"))


TRIP_DEST = {"lat": 52.50, "lon": 13.45}


def _south_of_dest(metres: float, ts: int) -> dict[str, Any]:
    """A fix `metres` due south of TRIP_DEST, driving north at 10 m/s."""
    return {"lat": TRIP_DEST["lat"] - metres / 111_257.0, "lon": TRIP_DEST["lon"], "ts": ts, "speed": 10.0}


async def _destination(tab: MapPage) -> list[dict[str, Any]]:
    """The features the map draws for the shown trip's destination."""
    features: list[dict[str, Any]] = await tab.page.evaluate(
        "window.tracker.map.getSource('trip-destination').serialize().data.features"
    )
    return features


async def test_a_trip_shows_its_status_destination_and_eta_and_follows_its_device(
    map_server: Server, tabs: Callable[[Server], Awaitable[MapPage]], clients: list[Client]
) -> None:
    fleet = uid("fleet")
    viewer = await add_viewer(map_server, [fleet])
    device, token = await add_device(map_server, fleet)
    c = await device_client(map_server, token, clients)
    # 10 m/s north from 2020 m south of the destination, a fix every 5 s (up to 3 minutes ahead of the clock,
    # which the server allows, so that the ETA lies minutes ahead).
    t0 = now_ms() - 30_000
    route = [_south_of_dest(2020 - 50 * k, t0 + 5000 * k) for k in range(41)]
    assert (await c.call("fix", route[:8]))["accepted"] == 8
    tab = await tabs(map_server)
    await tab.open(viewer)
    await tab.row(device).click()
    panel = tab.page.locator("#details-trip")
    await tab.page.wait_for_selector("#details:not([hidden])")
    assert await panel.is_hidden()

    async with web_client(base_url=map_server.url, headers={"Authorization": f"Bearer {viewer}"}) as http:
        r = await http.post(
            "/api/trips",
            json={
                "device": device,
                "destination": {**TRIP_DEST, "radius_m": 60},
                "approach_m": 1050,
                "ref": "order-9",
            },
        )
        assert r.status_code == 201, r.text
        trip = r.json()
        assert trip["eta_ts"] is not None
        # The live `trip` event shows it: status, ETA as a clock time and minutes ahead, km to go, ref.
        await tab.page.wait_for_selector(
            f'#details-trip[data-trip-id="{trip["id"]}"][data-trip-status="started"]'
        )
        text = await panel.inner_text()
        assert "order-9" in text and "1.7 km" in text, text
        assert re.search(r"\(in [34] min\)", text), text
        await tab.page.wait_for_selector(f'[data-device-id="{device}"][data-trip-status="started"]')
        drawn = await _destination(tab)
        assert sorted(f["geometry"]["type"] for f in drawn) == ["Point", "Polygon"]
        point = next(f for f in drawn if f["geometry"]["type"] == "Point")
        assert point["geometry"]["coordinates"] == [TRIP_DEST["lon"], TRIP_DEST["lat"]]

        # A fix that changes no status still moves the ETA and the distance to go.
        eta = await panel.get_attribute("data-eta-ts")
        assert (await c.call("fix", route[8]))["accepted"] == 1
        await tab.page.wait_for_selector(
            f'#details-trip[data-trip-status="started"]:not([data-eta-ts="{eta}"])'
        )
        assert "1.6 km" in await panel.inner_text()

        # Within 1050 m: approaching; inside the 60 m: arrived (no ETA any more), in the list too.
        assert (await c.call("fix", route[9:21]))["accepted"] == 12
        await tab.page.wait_for_selector('#details-trip[data-trip-status="approaching"]')
        await tab.page.wait_for_selector(f'[data-device-id="{device}"][data-trip-status="approaching"]')
        assert "1.0 km" in await panel.inner_text()
        ARTIFACTS.mkdir(exist_ok=True)
        await tab.page.evaluate("window.tracker.map.jumpTo({center: [13.45, 52.4955], zoom: 14.5})")
        await tab.page.screenshot(path=str(ARTIFACTS / "map-trip.png"))
        assert (await c.call("fix", route[21:]))["accepted"] == 20
        await tab.page.wait_for_selector('#details-trip[data-trip-status="arrived"]')
        await tab.page.wait_for_selector(f'[data-device-id="{device}"][data-trip-status="arrived"]')
        assert "(in" not in await panel.inner_text()

        # Completed: the panel says so, the destination and the list's mark go.
        assert (await http.post(f"/api/trips/{trip['id']}/complete")).status_code == 200
        await tab.page.wait_for_selector('#details-trip[data-trip-status="completed"]')
        await tab.page.wait_for_selector(f'[data-device-id="{device}"]:not([data-trip-status])')
        assert await _destination(tab) == []

        # A fence as the destination is outlined; cancelled, it goes too.
        r = await http.post("/api/trips", json={"device": device, "destination": {"fence": "yard"}})
        assert r.status_code == 201, r.text
        fenced = r.json()["id"]
        await tab.page.wait_for_selector(
            f'#details-trip[data-trip-id="{fenced}"][data-trip-status="started"]'
        )
        drawn = await _destination(tab)
        assert [(f["geometry"]["type"], f["properties"]["fence"]) for f in drawn] == [("Polygon", "yard")]
        assert (await http.post(f"/api/trips/{fenced}/cancel")).status_code == 200
        await tab.page.wait_for_selector('#details-trip[data-trip-status="cancelled"]')
        assert await _destination(tab) == []

    # A page opened later finds the open trip by itself (not from an event).
    async with web_client(base_url=map_server.url, headers={"Authorization": f"Bearer {viewer}"}) as http:
        r = await http.post("/api/trips", json={"device": device, "destination": TRIP_DEST})
    later = await tabs(map_server)
    await later.open(viewer)
    await later.page.wait_for_selector(f'[data-device-id="{device}"][data-trip-status="started"]')
    await later.row(device).click()
    await later.page.wait_for_selector(f'#details-trip[data-trip-id="{r.json()["id"]}"]')
