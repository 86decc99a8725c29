"""Daily reports: the local day of a time zone (DST days included), then `GET /api/reports/daily` against a
real server and PostGIS, with fixes sent over Socket.IO: the figures agree with `/stops` and `/trips` over
the same window, CSV carries the same rows, events and messages are counted by day, flagged fixes are left
out, and the report keeps to the token's fleets."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import math
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import numpy as np
import pytest
from harness import (
    ADMIN_TOKEN,
    ROOT,
    Client,
    Server,
    add_device,
    add_viewer,
    device_client,
    screenshot_file,
    server_tab,
    uid,
    web_client,
)
from playwright.async_api import async_playwright

from tracker.errors import InvalidInput
from tracker.reports import local_day, movement
from tracker.stops import find_stops, find_trips, stop_item, trip_item
from tracker.tools.browser import VIEWPORT, launch_chromium
from tracker.trail import Trail

BERLIN = "Europe/Berlin"
DAY = "2026-06-10"  # a summer day: local midnight is 22:00 UTC the day before
STEP = 0.001  # degrees of latitude between moving fixes: about 111 m


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def journey(
    parts: list[tuple[str, int]], t0: int, dt: int = 10_000
) -> tuple[list[int], list[float], list[float]]:
    """Fixes every `dt` ms: ("move", n) steps north STEP each, ("stay", n) stays with ~10 m of jitter."""
    ts: list[int] = []
    lat: list[float] = []
    lon: list[float] = []
    here, t = 52.0, t0
    for kind, n in parts:
        for i in range(n):
            if kind == "move":
                here += STEP
            lat.append(here if kind == "move" else here + (i % 3) * 0.00005)
            lon.append(13.0 if kind == "move" else 13.0 + (i % 2) * 0.0001)
            ts.append(t)
            t += dt
    return ts, lat, lon


# --- pure: the day and the figures ----------------------------------------------------------------


def test_a_local_day_is_its_zone_s_calendar_day_with_23_and_25_hours_on_dst_changes() -> None:
    summer = local_day(DAY, BERLIN)
    assert summer.from_ms == 1_781_042_400_000  # 2026-06-09T22:00:00Z
    assert summer.hours == 24
    assert local_day("2026-03-29", BERLIN).hours == 23  # clocks go forward at 02:00
    assert local_day("2026-10-25", BERLIN).hours == 25  # and back at 03:00
    assert local_day("2026-10-25", "UTC").hours == 24
    assert local_day("2026-10-25", BERLIN).to_ms == local_day("2026-10-26", BERLIN).from_ms
    # Santiago springs forward at midnight: the day starts at 01:00, the change's own instant.
    santiago = local_day("2026-09-06", "America/Santiago")
    assert santiago.hours == 23 and santiago.from_ms == 1_788_667_200_000  # 2026-09-06T04:00:00Z


@pytest.mark.parametrize(
    ("date", "tz", "words"),
    [
        ("2026-02-30", "UTC", "date is not a day of the calendar"),
        ("20260301", "UTC", "date must be a day as YYYY-MM-DD"),
        ("2026-3-1", "UTC", "date must be a day as YYYY-MM-DD"),
        ("0001-01-01", "UTC", "date must be between"),
        (DAY, "Mars/Olympus", "tz must be an IANA time zone"),
        (DAY, "../../etc/passwd", "tz must be an IANA time zone"),
        (DAY, "", "tz must be an IANA time zone"),
    ],
)
def test_a_bad_day_or_zone_is_refused_naming_it(date: str, tz: str, words: str) -> None:
    with pytest.raises(InvalidInput, match=words):
        local_day(date, tz)


def test_the_figures_are_the_sums_of_the_stops_and_trips() -> None:
    ts, lat, lon = journey([("move", 10), ("stay", 61), ("move", 6), ("stay", 40), ("move", 6)], t0=0)
    speed = [8.5 if i < 10 else 0.0 if i < 71 else 11.25 for i in range(len(ts))]
    track = Trail.from_columns(ts, lat, lon, speed)
    stops = find_stops(track, 50.0, 300_000)
    trips = [trip_item(track, s) for s in find_trips(track, stops, 50.0)]
    got = movement(track, 50.0, 300_000)
    assert got["stops"] == len(stops) == 2
    assert got["stopped_s"] == sum(stop_item(track, s)["duration_s"] for s in stops)
    assert got["distance_m"] == pytest.approx(sum(t["distance_m"] for t in trips), abs=1e-6)
    assert got["moving_s"] == sum(t["duration_s"] for t in trips)
    assert got["max_speed"] == 11.25
    assert (got["first_ts"], got["last_ts"]) == (ts[0], ts[-1])
    empty = movement(Trail.from_columns([], [], []), 50.0, 300_000)
    assert empty == {
        "distance_m": 0.0,
        "moving_s": 0.0,
        "stopped_s": 0.0,
        "stops": 0,
        "max_speed": None,
        "first_ts": None,
        "last_ts": None,
    }


# --- against the server ---------------------------------------------------------------------------


@pytest.fixture
async def http(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with web_client(base_url=server.url, timeout=60) as client:
        yield client


async def send(server: Server, clients: list[Client], token: str, fixes: list[dict[str, Any]]) -> None:
    d = await device_client(server, token, clients)
    for i in range(0, len(fixes), 1000):
        ack = await d.call("fix", fixes[i : i + 1000])
        assert ack["accepted"] == len(fixes[i : i + 1000]), ack


def fixes_of(
    ts: list[int], lat: list[float], lon: list[float], speed: list[float] | None = None
) -> list[Any]:
    return [
        {"ts": t, "lat": la, "lon": lo} | ({"speed": speed[i]} if speed else {})
        for i, (t, la, lo) in enumerate(zip(ts, lat, lon, strict=True))
    ]


async def report(http: httpx.AsyncClient, token: str, **query: str) -> Any:
    r = await http.get("/api/reports/daily", params=query, headers=bearer(token))
    assert r.status_code == 200, r.text
    return r.json() if query.get("format", "json") == "json" else r


async def test_the_day_agrees_with_stops_and_trips_in_json_and_csv(
    server: Server, http: httpx.AsyncClient, clients: list[Client], database_url: str
) -> None:
    fleet = uid("fleet")
    busy, busy_token = await add_device(server, fleet)
    idle, _ = await add_device(server, fleet)
    viewer = await add_viewer(server, [fleet])
    day = local_day(DAY, BERLIN)
    # A morning drive, a 10-minute stop, a drive, a 40-minute stop, a drive; one fix just before the day
    # (local 23:59:59 the day before) and one at the next day's first instant, which are not in it.
    t0 = day.from_ms + 8 * 3_600_000
    ts, lat, lon = journey([("move", 10), ("stay", 61), ("move", 6), ("stay", 240), ("move", 12)], t0=t0)
    speed = [8.5 if i < 10 else 0.0 if i < 71 else 11.25 for i in range(len(ts))]
    outside = [
        {"ts": day.from_ms - 1000, "lat": 51.0, "lon": 12.0},
        {"ts": day.to_ms, "lat": 53.0, "lon": 14.0},
    ]
    await send(server, clients, busy_token, fixes_of(ts, lat, lon, speed) + outside)

    body = await report(http, viewer, date=DAY, tz=BERLIN, fleet=fleet)
    rows = {row["device"]: row for row in body["days"]}
    assert [row["device"] for row in body["days"]] == sorted([busy, idle])
    row = rows[busy]
    window = {"from": day.from_ms, "to": day.to_ms}
    stops = (await http.get(f"/api/devices/{busy}/stops", params=window, headers=bearer(viewer))).json()[
        "stops"
    ]
    trips = (await http.get(f"/api/devices/{busy}/trips", params=window, headers=bearer(viewer))).json()[
        "trips"
    ]
    assert len(stops) == 2 and len(trips) == 3
    assert row["stops"] == len(stops)
    assert row["stopped_s"] == pytest.approx(sum(s["duration_s"] for s in stops), abs=1e-6)
    assert row["distance_m"] == pytest.approx(sum(t["distance_m"] for t in trips), abs=1e-3)
    assert row["moving_s"] == pytest.approx(sum(t["duration_s"] for t in trips), abs=1e-6)
    assert row["max_speed"] == max(t["max_speed"] for t in trips) == 11.25
    assert (row["first_ts"], row["last_ts"]) == (ts[0], ts[-1])
    assert row["fleet"] == fleet and row["date"] == DAY
    assert row["events"]["enter"] == 0 and row["messages"] == {"to_device": 0, "from_device": 0}
    assert rows[idle] | {"events": {}} == {
        "device": idle,
        "fleet": fleet,
        "date": DAY,
        "distance_m": 0.0,
        "moving_s": 0.0,
        "stopped_s": 0.0,
        "stops": 0,
        "max_speed": None,
        "first_ts": None,
        "last_ts": None,
        "events": {},
        "messages": {"to_device": 0, "from_device": 0},
    }
    (totals,) = body["fleets"]
    assert totals["fleet"] == fleet and totals["devices"] == 2 and totals["active"] == 1
    assert totals["distance_m"] == row["distance_m"] and totals["stops"] == 2

    r = await report(http, viewer, date=DAY, tz=BERLIN, fleet=fleet, format="csv")
    assert r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"]
    table = list(csv.DictReader(io.StringIO(r.text)))
    assert [t["device"] for t in table] == sorted([busy, idle])
    header = next(csv.reader(io.StringIO(r.text)))
    assert header[:10] == [
        "device",
        "fleet",
        "date",
        "distance_m",
        "moving_s",
        "stopped_s",
        "stops",
        "max_speed",
        "first_ts",
        "last_ts",
    ]
    assert {"events_enter", "events_exit", "messages_to_device", "messages_from_device"} <= set(header)
    line = next(t for t in table if t["device"] == busy)
    assert float(line["distance_m"]) == row["distance_m"] and int(line["stops"]) == 2
    assert int(line["first_ts"]) == ts[0] and float(line["max_speed"]) == 11.25
    empty = next(t for t in table if t["device"] == idle)
    assert empty["max_speed"] == "" and empty["first_ts"] == "" and empty["stops"] == "0"

    # `tracker report daily`, for cron: the same day, as CSV and as JSON, straight from the database.
    for fmt in ("csv", "json"):
        argv = [sys.executable, "-m", "tracker", "report", "daily", "--date", DAY, "--tz", BERLIN]
        argv += ["--fleet", fleet, "--format", fmt, "--database-url", database_url]
        proc = await asyncio.to_thread(
            subprocess.run, argv, cwd=ROOT, capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0, proc.stderr
        if fmt == "csv":
            assert list(csv.DictReader(io.StringIO(proc.stdout))) == table
        else:
            assert json.loads(proc.stdout) == body


async def test_the_day_follows_the_zone_on_a_dst_day(
    server: Server, http: httpx.AsyncClient, clients: list[Client]
) -> None:
    fleet = uid("fleet")
    device, token = await add_device(server, fleet)
    viewer = await add_viewer(server, [fleet])
    long_day = local_day("2026-10-25", BERLIN)  # 25 hours: 2026-10-24T22:00Z to 2026-10-25T23:00Z
    inside = [long_day.from_ms, long_day.from_ms + 3_600_000, long_day.to_ms - 1000]
    before, after = long_day.from_ms - 1000, long_day.to_ms
    await send(
        server,
        clients,
        token,
        [{"ts": t, "lat": 52.0 + i * 0.01, "lon": 13.0} for i, t in enumerate([before, *inside, after])],
    )
    (row,) = (await report(http, viewer, date="2026-10-25", tz=BERLIN, device=device))["days"]
    assert (row["first_ts"], row["last_ts"]) == (inside[0], inside[-1])
    # The same date in UTC is another window: 00:00Z to 24:00Z holds only the last two.
    (utc,) = (await report(http, viewer, date="2026-10-25", tz="UTC", device=device))["days"]
    assert (utc["first_ts"], utc["last_ts"]) == (inside[-1], after)
    # The short day in spring has 23 hours: a fix at its last second is in it.
    short = local_day("2026-03-29", BERLIN)
    await send(server, clients, token, [{"ts": short.to_ms - 1000, "lat": 52.0, "lon": 13.0}])
    (row,) = (await report(http, viewer, date="2026-03-29", tz=BERLIN, device=device))["days"]
    assert row["first_ts"] == row["last_ts"] == short.to_ms - 1000


async def test_events_and_messages_are_counted_by_day_and_flagged_fixes_left_out(
    server: Server, http: httpx.AsyncClient, clients: list[Client], db: asyncpg.Connection
) -> None:
    fleet = uid("fleet")
    device, token = await add_device(server, fleet)
    viewer = await add_viewer(server, [fleet])
    day = local_day(DAY, BERLIN)
    noon = day.from_ms + 12 * 3_600_000
    await send(server, clients, token, [{"ts": noon + i * 1000, "lat": 52.0, "lon": 13.0} for i in range(3)])
    await db.execute(
        "UPDATE fixes SET flag = 'jump' WHERE device_id = $1 AND ts = to_timestamp($2)", device, noon / 1000
    )
    events = [("enter", noon), ("enter", noon + 1), ("exit", noon + 2), ("dwell", day.to_ms)]
    for kind, ts in events:
        await db.execute(
            "INSERT INTO events (type, rule_id, fence_id, device_id, fleet, ts, lat, lon) "
            "VALUES ($1, 'r', 'f', $2, $3, $4, 52, 13)",
            kind,
            device,
            fleet,
            ts,
        )
    messages = [
        ("to_device", noon),
        ("to_device", day.from_ms),
        ("from_device", noon),
        ("to_device", day.to_ms),
    ]
    for direction, ts in messages:
        await db.execute(
            "INSERT INTO messages (device_id, body, sender, created_ts, direction) "
            "VALUES ($1, '\"hi\"', 'x', $2, $3)",
            device,
            ts,
            direction,
        )
    (row,) = (await report(http, viewer, date=DAY, tz=BERLIN, fleet=fleet))["days"]
    assert row["events"] == {"enter": 2, "exit": 1} | {
        k: 0 for k in row["events"] if k not in ("enter", "exit")
    }
    assert row["messages"] == {"to_device": 2, "from_device": 1}
    assert (row["first_ts"], row["last_ts"]) == (noon + 1000, noon + 2000)  # the flagged first fix is out
    table = list(
        csv.DictReader(
            io.StringIO((await report(http, viewer, date=DAY, tz=BERLIN, format="csv", fleet=fleet)).text)
        )
    )
    assert table[0]["events_enter"] == "2" and table[0]["messages_from_device"] == "1"


async def test_the_report_keeps_to_the_token_s_fleets(server: Server, http: httpx.AsyncClient) -> None:
    mine, theirs = uid("fleet"), uid("fleet")
    my_device, _ = await add_device(server, mine)
    their_device, _ = await add_device(server, theirs)
    viewer = await add_viewer(server, [mine])
    query = {"date": DAY, "tz": "UTC"}
    r = await http.get("/api/reports/daily", params=query)
    assert r.status_code == 401
    body = await report(http, viewer, **query)
    assert [row["device"] for row in body["days"]] == [my_device]
    r = await http.get("/api/reports/daily", params=query | {"fleet": theirs}, headers=bearer(viewer))
    assert r.status_code == 403 and theirs in r.json()["error"]
    r = await http.get("/api/reports/daily", params=query | {"device": their_device}, headers=bearer(viewer))
    assert r.status_code == 403 and their_device in r.json()["error"]
    r = await http.get("/api/reports/daily", params=query | {"device": uid("nobody")}, headers=bearer(viewer))
    assert r.status_code == 404
    r = await http.get(
        "/api/reports/daily",
        params=query | {"device": my_device, "fleet": theirs},
        headers=bearer(ADMIN_TOKEN),
    )
    assert r.status_code == 400 and "not in fleet" in r.json()["error"]
    admin = await report(http, ADMIN_TOKEN, **query, fleet=theirs)
    assert [row["device"] for row in admin["days"]] == [their_device]
    r = await http.get(
        "/api/reports/daily", params=query | {"fleet": theirs, "format": "csv"}, headers=bearer(viewer)
    )
    assert r.status_code == 403


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ({"tz": "UTC"}, "date is required"),
        ({"date": DAY}, "tz is required"),
        ({"date": "10.06.2026", "tz": "UTC"}, "date must be a day as YYYY-MM-DD"),
        ({"date": DAY, "tz": "Nowhere/Town"}, "tz must be an IANA time zone"),
        ({"date": DAY, "tz": "UTC", "format": "xlsx"}, "format must be one of json, csv"),
        ({"date": DAY, "tz": "UTC", "fleet": "bad fleet!"}, "fleet must be"),
        ({"date": DAY, "tz": "UTC", "device": "bad id!"}, "device must be"),
        ({"date": DAY, "tz": "UTC", "radius_m": "0"}, "radius_m must be between 1 and 100000"),
        ({"date": DAY, "tz": "UTC", "min_duration_s": "nan"}, "min_duration_s must be a finite number"),
    ],
)
async def test_bad_parameters_are_400_naming_the_parameter(
    http: httpx.AsyncClient, query: dict[str, str], words: str
) -> None:
    r = await http.get("/api/reports/daily", params=query, headers=bearer(ADMIN_TOKEN))
    assert r.status_code == 400, r.text
    assert words in r.json()["error"]


def test_reported_distance_is_the_geodesic_length_of_the_trips() -> None:
    """The trips' lengths, and so the report's, sum the fast local steps: within micrometres of the Geod."""
    from pyproj import Geod

    rng = np.random.default_rng(7)
    lat = 48.1 + np.cumsum(rng.normal(0, 0.0004, 5000))
    lon = 11.5 + np.cumsum(rng.normal(0, 0.0006, 5000))
    track = Trail.from_columns(list(range(0, 5_000_000, 1000)), lat.tolist(), lon.tolist())
    item = trip_item(track, (0, 4999))
    exact = float(Geod(ellps="WGS84").line_length(lon, lat))
    assert math.isclose(item["distance_m"], exact, abs_tol=1e-3)


# --- the reports page in Chromium -----------------------------------------------------------------


async def test_the_reports_page_shows_the_day_sorts_by_column_and_exports_csv(
    server: Server, http: httpx.AsyncClient, clients: list[Client], tmp_path: Any
) -> None:
    fleet = uid("fleet")
    day = local_day(DAY, "UTC")
    t0 = day.from_ms + 9 * 3_600_000
    far, far_token = await add_device(server, fleet, uid("far"))
    near, near_token = await add_device(server, fleet, uid("near"))
    idle, _ = await add_device(server, fleet, uid("idle"))
    viewer = await add_viewer(server, [fleet])
    ts, lat, lon = journey([("move", 30), ("stay", 40), ("move", 10)], t0=t0)
    await send(server, clients, far_token, fixes_of(ts, lat, lon, [12.5] * len(ts)))
    ts2, lat2, lon2 = journey([("move", 5)], t0=t0)
    await send(server, clients, near_token, fixes_of(ts2, lat2, lon2, [4.0] * len(ts2)))
    api = await report(http, viewer, date=DAY, tz="UTC", fleet=fleet)
    by_id = {row["device"]: row for row in api["days"]}
    assert by_id[far]["distance_m"] > by_id[near]["distance_m"] > by_id[idle]["distance_m"] == 0

    async with async_playwright() as p:
        browser = await launch_chromium(p)
        try:
            async with server_tab(browser, server, VIEWPORT, accept_downloads=True) as page:
                await page.goto(f"{server.url}/?token={viewer}")
                await page.wait_for_selector("body[data-state=live]", timeout=20_000)
                await page.click("#reports-open")
                await page.wait_for_selector("#reports:not([hidden])")
                await page.fill("#reports-date", DAY)
                await page.fill("#reports-tz", "UTC")
                await page.select_option("#reports-fleet", fleet)
                await page.click("#reports-form button[type=submit]")
                await page.wait_for_selector("#reports[data-reports-state=ready]", timeout=20_000)

                async def column(key: str) -> list[str]:
                    cells = page.locator(f"#reports-table tbody td[data-key={key}]")
                    return [
                        str(await cells.nth(i).get_attribute("data-value"))
                        for i in range(await cells.count())
                    ]

                assert await column("device") == sorted([far, near, idle])  # by device first
                distances = await column("distance_m")
                assert [float(d) for d in distances] == [
                    by_id[d]["distance_m"] for d in sorted([far, near, idle])
                ]
                assert await column("stops") == [str(by_id[d]["stops"]) for d in sorted([far, near, idle])]
                assert await column("first_ts") == [
                    str(by_id[d]["first_ts"] or "") for d in sorted([far, near, idle])
                ]
                await page.click("#reports-table th[data-key=distance_m]")
                assert await column("device") == [idle, near, far]
                assert (
                    await page.get_attribute("#reports-table th[data-key=distance_m]", "aria-sort")
                    == "ascending"
                )
                await page.click("#reports-table th[data-key=distance_m]")
                assert await column("device") == [far, near, idle]
                await page.click("#reports-table th[data-key=max_speed]")  # no speed (idle) sorts last
                assert await column("device") == [near, far, idle]
                text = await page.inner_text(
                    f"#reports-table tbody tr[data-device='{far}'] td[data-key=max_speed]"
                )
                assert text == "45 km/h"
                assert "Fleet total (2/3 active)" in await page.inner_text("#reports-table tfoot")

                async with page.expect_download() as info:
                    await page.click("#reports-export")
                download = await info.value
                saved = tmp_path / "report.csv"
                await download.save_as(saved)
                expected = await report(http, viewer, date=DAY, tz="UTC", fleet=fleet, format="csv")
                assert saved.read_text() == expected.text
                assert download.suggested_filename == f"report-{DAY}-{fleet}.csv"

                shot = screenshot_file("reports")  # docs/screenshots/ with TRACKER_UPDATE_SCREENSHOTS=1
                await page.screenshot(path=str(shot))
                assert shot.read_bytes().startswith(b"\x89PNG")
                await page.click("#reports-close")
                assert await page.is_hidden("#reports")
        finally:
            await browser.close()


def test_the_fast_radius_decisions_are_the_geod_s_everywhere() -> None:
    """Stops decide "within the radius" through the local form; its answer must be the Geod's, also near
    the radius, near the poles, across the antimeridian and far beyond 100 km."""
    from pyproj import Geod

    from tracker.geo import farther_than_m, local_distance_m, pairwise_farther_than_m

    geod = Geod(ellps="WGS84")
    rng = np.random.default_rng(19)
    n = 200_000
    for far_m in (60.0, 250.0, 5_000.0, 150_000.0, 5_000_000.0):
        lat1, lon1 = rng.uniform(-89.9, 89.9, n), rng.uniform(-180.0, 180.0, n)
        lon2, lat2, _ = geod.fwd(lon1, lat1, rng.uniform(0.0, 360.0, n), rng.uniform(0.0, far_m, n))
        exact = np.asarray(geod.inv(lon1, lat1, lon2, lat2)[2])
        assert float(np.abs(local_distance_m(lat1, lon1, lat2, lon2) - exact).max()) < 2e-6
        for radius_m in (1.0, 50.0, far_m / 2, 100_000.0):
            assert np.array_equal(pairwise_farther_than_m(lat1, lon1, lat2, lon2, radius_m), exact > radius_m)
        for i in range(20):  # from one point, as a stop's scan measures: a parked device's box included
            ends = slice(i * 1000, (i + 1) * 1000)
            here = (float(lat1[i * 1000]), float(lon1[i * 1000]))
            lon3, lat3, _ = geod.fwd(
                np.full(1000, here[1]),
                np.full(1000, here[0]),
                rng.uniform(0, 360, 1000),
                rng.uniform(0, far_m, 1000),
            )
            from_here = np.asarray(geod.inv(np.full(1000, here[1]), np.full(1000, here[0]), lon3, lat3)[2])
            for radius_m in (5.0, 50.0, far_m / 2):
                assert np.array_equal(farther_than_m(*here, lat3, lon3, radius_m), from_here > radius_m), ends
        for i in range(50):  # a radius exactly at the pair's distance, and a hair below it
            one = (lat1[i : i + 1], lon1[i : i + 1], lat2[i : i + 1], lon2[i : i + 1])
            assert not pairwise_farther_than_m(*one, float(exact[i]))[0]
            assert pairwise_farther_than_m(*one, float(np.nextafter(exact[i], 0.0)))[0] == (exact[i] > 0)


async def test_the_copy_stream_is_cut_into_whole_devices_whatever_the_chunks() -> None:
    """The binary COPY parser (`tracker.store.reports`): devices named by their position in the share,
    one of them long enough to span several parses, read back exactly from chunks of any size; a stream
    that breaks the order the query promises is an error, never a wrong report."""
    import asyncio
    import struct

    from tracker.store import reports as store

    rng = np.random.default_rng(3)
    devices = {"a": 3, "bb-2": 40_000, "c": 1, "dddddddddd-10": 700, "e": 5}  # id -> fixes
    ids = list(devices)
    expected: dict[str, list[tuple[int, float, float, float]]] = {}

    def row(position: int, ts_ms: int, lat: float, lon: float, speed: float) -> bytes:
        return (
            struct.pack(">hii", 4, 4, position)
            + struct.pack(">iq", 8, (ts_ms - 946_684_800_000) * 1000)
            + struct.pack(">i", 21)
            + struct.pack("<BIdd", 1, 1, lon, lat)
            + struct.pack(">if", 4, speed)
        )

    header, trailer = b"PGCOPY\n\xff\r\n\x00" + bytes(8), struct.pack(">h", -1)
    body = bytearray(header)
    for position, (device, n) in enumerate(devices.items(), start=1):
        rows = expected.setdefault(device, [])
        for i in range(n):
            ts_ms, lat, lon = (
                1_700_000_000_000 + i * 5000,
                float(rng.uniform(-80, 80)),
                float(rng.uniform(-180, 180)),
            )
            speed = float("nan") if i % 3 == 0 else float(np.float32(rng.uniform(0, 30)))
            rows.append((ts_ms, lat, lon, speed))
            body += row(position, ts_ms, lat, lon, speed)
    body += trailer

    async def parse(stream: bytes) -> dict[str, Trail]:
        queue: asyncio.Queue[Any] = asyncio.Queue()
        splitter = store._Splitter(queue, ids)
        i = 0
        while i < len(stream):
            step = int(rng.integers(1, 200_000))
            await splitter.feed(bytes(stream[i : i + step]))
            i += step
        await splitter.finish()
        got = {}
        while not queue.empty():
            device, trail = queue.get_nowait()
            assert device not in got
            got[device] = trail
        return got

    for _ in range(3):
        got = await parse(bytes(body))
        assert set(got) == set(devices)
        for device, rows in expected.items():
            trail = got[device]
            assert trail.ts.tolist() == [r[0] for r in rows]
            assert trail.lat.tolist() == [r[1] for r in rows] and trail.lon.tolist() == [r[2] for r in rows]
            assert np.array_equal(trail.speed, np.array([r[3] for r in rows]), equal_nan=True)
    wrong = {
        "out of order": row(2, 1, 0.0, 0.0, 1.0) + row(1, 2, 0.0, 0.0, 1.0),
        "out of time order": row(1, 2, 0.0, 0.0, 1.0) + row(1, 1, 0.0, 0.0, 1.0),
        "partial row": row(1, 1, 0.0, 0.0, 1.0)[:-1],
    }
    for problem, rows_ in wrong.items():
        with pytest.raises(store.CopyFormatError, match=problem):
            await parse(header + rows_ + trailer)
