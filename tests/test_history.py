"""History: trails (GeoJSON, GPX, CSV), stops and trips. Pure detection and simplification on hand-made
arrays first, then end to end against a real server and PostGIS with fixes sent over Socket.IO."""

from __future__ import annotations

import math
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import gpxpy
import h3.api.basic_int as h3i
import httpx
import numpy as np
import pytest
from harness import (
    ADMIN_TOKEN,
    Client,
    Server,
    add_device,
    add_viewer,
    device_client,
    now_ms,
    own_server,
    uid,
    web_client,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from pyproj import Geod

from tracker.stops import find_stops, find_trips, stop_item, trip_item
from tracker.trail import (
    Trail,
    plane_m,
    run_starts,
    runs_length_m,
    segment_distance_m,
    simplify_indexes,
    simplify_runs,
    to_geojson,
)

# The end-to-end tests (those that use `server`) run on one process and on a cluster (tests/harness.py).
pytestmark = pytest.mark.cluster

GEOD = Geod(ellps="WGS84")
STEP = 0.001  # degrees of latitude between moving fixes: about 111 m


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def line_m(lats: list[float], lons: list[float]) -> float:
    return float(GEOD.line_length(lons, lats)) if len(lats) > 1 else 0.0


# --- pure: simplification -------------------------------------------------------------------------


def test_simplify_drops_a_collinear_middle_point_and_keeps_endpoints() -> None:
    lat = np.array([52.0, 52.001, 52.002, 52.002])
    lon = np.array([13.0, 13.0, 13.0, 13.003])
    assert simplify_indexes(lat, lon, 1.0).tolist() == [0, 2, 3]
    assert simplify_indexes(lat, lon, 0.0).tolist() == [0, 1, 2, 3]
    assert simplify_indexes(lat, lon, 1e7).tolist() == [0, 3]
    assert simplify_indexes(lat[:1], lon[:1], 5.0).tolist() == [0]


def test_simplify_keeps_a_point_beyond_the_tolerance_only() -> None:
    # The middle point is ~68 m (0.001 deg of longitude at 52 N) off the line between the others.
    lat, lon = np.array([52.0, 52.001, 52.002]), np.array([13.0, 13.001, 13.0])
    assert simplify_indexes(lat, lon, 60.0).tolist() == [0, 1, 2]
    assert simplify_indexes(lat, lon, 75.0).tolist() == [0, 2]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.floats(-0.01, 0.01), st.floats(-0.01, 0.01)), min_size=2, max_size=60),
    st.floats(0.5, 300),
)
def test_simplify_every_dropped_point_is_within_tolerance_of_its_kept_segment(
    offsets: list[tuple[float, float]], tolerance: float
) -> None:
    lat = np.array([48.0 + a for a, _ in offsets])
    lon = np.array([2.0 + b for _, b in offsets])
    kept = simplify_indexes(lat, lon, tolerance).tolist()
    assert kept[0] == 0 and kept[-1] == len(lat) - 1 and kept == sorted(set(kept))
    x, y = plane_m(lat, lon)
    for a, b in zip(kept, kept[1:], strict=False):
        inner = slice(a + 1, b)
        d = segment_distance_m(x[inner], y[inner], x[a], y[a], x[b], y[b])
        assert (d <= tolerance + 1e-9).all()


def test_track_from_columns_sorts_by_time() -> None:
    t = Trail.from_columns([3, 1, 2], [3.0, 1.0, 2.0], [0.0, 0.0, 0.0], [None, 1.5, None])
    assert t.ts.tolist() == [1, 2, 3] and t.lat.tolist() == [1.0, 2.0, 3.0]
    assert t.speed[0] == 1.5 and math.isnan(t.speed[1])


# --- pure: runs (a trail breaks where the device was silent) -------------------------------------


def test_runs_start_after_each_silence_longer_than_the_gap() -> None:
    ts = np.array([0, 1000, 601_000, 1_201_001, 1_202_000], dtype=np.int64)
    assert run_starts(ts, 600_000).tolist() == [0, 3]  # 600 s exactly is no gap; 600.001 s is
    assert run_starts(ts, 500_000).tolist() == [0, 2, 3]
    assert run_starts(ts, 0).tolist() == [0]  # 0: never breaks
    assert run_starts(ts[:0], 600_000).tolist() == []


def test_length_and_simplification_stay_within_runs() -> None:
    # Two runs 20 minutes and about 55 km apart; the second run's middle fix is collinear.
    lat = [52.0, 52.001, 52.5, 52.501, 52.502]
    track = Trail.from_columns([0, 1000, 1_201_000, 1_202_000, 1_203_000], lat, [13.0] * 5)
    starts = run_starts(track.ts, 600_000)
    assert runs_length_m(track, starts) == pytest.approx(
        line_m(lat[:2], [13.0] * 2) + line_m(lat[2:], [13.0] * 3)
    )
    assert runs_length_m(track, run_starts(track.ts, 0)) == pytest.approx(line_m(lat, [13.0] * 5))
    drawn, drawn_starts = simplify_runs(track, starts, 5.0)
    assert drawn.ts.tolist() == [0, 1000, 1_201_000, 1_203_000] and drawn_starts.tolist() == [0, 2]


def test_geojson_of_several_runs_is_a_multilinestring_with_flat_times() -> None:
    track = Trail.from_columns([0, 1000, 900_000, 2_000_000, 2_001_000], [1.0, 1.1, 2.0, 3.0, 3.1], [5.0] * 5)
    feature = to_geojson("d", 0, 1, track, 0.0, run_starts(track.ts, 600_000))
    geometry = feature["geometry"]
    assert geometry["type"] == "MultiLineString"
    lines = [np.asarray(line).tolist() for line in geometry["coordinates"]]
    # The lone fix of the middle run is a line repeating it, its time twice.
    assert lines == [[[5.0, 1.0], [5.0, 1.1]], [[5.0, 2.0], [5.0, 2.0]], [[5.0, 3.0], [5.0, 3.1]]]
    assert feature["properties"]["times"].tolist() == [0, 1000, 900_000, 900_000, 2_000_000, 2_001_000]
    assert feature["properties"]["points"] == 5
    one = to_geojson("d", 0, 1, track, 0.0, run_starts(track.ts, 0))
    assert one["geometry"]["type"] == "LineString" and len(one["geometry"]["coordinates"]) == 5


# --- pure: stops and trips ------------------------------------------------------------------------


def journey(
    parts: list[tuple[str, int]], t0: int = 1_000_000, dt: int = 10_000
) -> tuple[list[int], list[float], list[float]]:
    """Fixes every `dt` ms along a meridian: ("move", n) steps north STEP each, ("stay", n) stays at
    the last place with jitter of up to ~11 m (each fix at least 6.8 m from the one before)."""
    ts: list[int] = []
    lat: list[float] = []
    lon: list[float] = []
    here, t = 52.0, t0
    for kind, n in parts:
        for i in range(n):
            if kind == "move":
                here += STEP
                lat.append(here)
                lon.append(13.0)
            else:
                lat.append(here + (i % 3) * 0.00005)
                lon.append(13.0 + (i % 2) * 0.0001)
            ts.append(t)
            t += dt
    return ts, lat, lon


def test_a_known_stop_is_found_with_exact_bounds_and_jitter_keeps_it_one() -> None:
    ts, lat, lon = journey([("move", 10), ("stay", 61), ("move", 10)])
    track = Trail.from_columns(ts, lat, lon)
    assert find_stops(track, 50, 300_000) == [(9, 70)]
    # The stop begins at the last moving fix: the device arrived there and stayed within 50 m.
    item = stop_item(track, (9, 70))
    assert item["start_ts"] == ts[9] and item["end_ts"] == ts[70]
    assert item["duration_s"] == 610.0 and item["fixes"] == 62
    assert item["lat"] == pytest.approx(np.mean(lat[9:71]))
    assert item["lon"] == pytest.approx(np.mean(lon[9:71]))
    # A tighter radius than the jitter breaks it up; none of the pieces lasts 300 s.
    assert find_stops(track, 5, 300_000) == []


def test_a_short_pause_is_not_a_stop_unless_min_duration_allows_it() -> None:
    ts, lat, lon = journey([("move", 5), ("stay", 12), ("move", 5)])  # 120 s where it paused
    track = Trail.from_columns(ts, lat, lon)
    assert find_stops(track, 50, 300_000) == []
    assert find_stops(track, 50, 120_000) == [(4, 16)]
    assert find_stops(track, 50, 120_001) == []
    # Without a stop, the whole window is one trip.
    assert find_trips(track, [], 50) == [(0, len(ts) - 1)]


def test_trips_run_between_stops_and_around_them_when_they_move() -> None:
    ts, lat, lon = journey([("move", 10), ("stay", 40), ("move", 8), ("stay", 40), ("move", 6)])
    track = Trail.from_columns(ts, lat, lon)
    stops = find_stops(track, 50, 300_000)
    assert stops == [(9, 49), (57, 97)]
    assert find_trips(track, stops, 50) == [(0, 9), (49, 57), (97, 103)]
    trip = trip_item(track, (49, 57))
    assert trip["start_ts"] == ts[49] and trip["end_ts"] == ts[57] and trip["fixes"] == 9
    assert trip["distance_m"] == pytest.approx(line_m(lat[49:58], lon[49:58]), abs=1e-3)
    assert trip["avg_speed"] == pytest.approx(trip["distance_m"] / 80, abs=1e-3)
    # No speed reported: max_speed is the fastest step (one STEP in 10 s, the largest hop of the trip).
    steps = [line_m(lat[i : i + 2], lon[i : i + 2]) / 10 for i in range(49, 57)]
    assert trip["max_speed"] == pytest.approx(max(steps), abs=1e-3)
    assert trip["start"] == {"lat": lat[49], "lon": lon[49]}
    assert trip["end"] == {"lat": lat[57], "lon": lon[57]}


def test_a_window_that_starts_and_ends_parked_has_no_edge_trips() -> None:
    ts, lat, lon = journey([("stay", 40), ("move", 5), ("stay", 40)])
    track = Trail.from_columns(ts, lat, lon)
    stops = find_stops(track, 50, 300_000)
    assert stops == [(0, 39), (44, 84)]
    # From the last fix of the first stop to the first of the next; jitter at the ends is no trip.
    assert find_trips(track, stops, 50) == [(39, 44)]


def test_a_stop_across_the_antimeridian_is_averaged_there() -> None:
    track = Trail.from_columns([0, 200_000, 400_000], [10.0, 10.0, 10.0], [179.9999, -179.9999, 179.9999])
    assert find_stops(track, 50, 300_000) == [(0, 2)]
    item = stop_item(track, (0, 2))
    assert abs(item["lon"]) == pytest.approx(179.99996667, abs=1e-6)


# --- end to end -----------------------------------------------------------------------------------


@pytest.fixture
async def http(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with web_client(base_url=server.url, timeout=60) as client:
        yield client


async def device_with(server: Server, clients: list[Client], fixes: list[dict[str, Any]]) -> tuple[str, str]:
    """A new device in a new fleet that sent `fixes` (in the order given); return (device, viewer token)."""
    fleet = uid("fleet")
    device, token = await add_device(server, fleet)
    d = await device_client(server, token, clients)
    for i in range(0, len(fixes), 1000):
        ack = await d.call("fix", fixes[i : i + 1000])
        assert ack["accepted"] == len(fixes[i : i + 1000]), ack
    return device, await add_viewer(server, [fleet])


def fixes_of(ts: list[int], lat: list[float], lon: list[float], **extra: list[Any]) -> list[dict[str, Any]]:
    out = []
    for i in range(len(ts)):
        fix = {"ts": ts[i], "lat": lat[i], "lon": lon[i]}
        fix |= {k: v[i] for k, v in extra.items() if v[i] is not None}
        out.append(fix)
    return out


async def test_trail_is_in_time_order_with_exact_coordinates_times_and_distance(
    server: Server, http: httpx.AsyncClient, clients: list[Client]
) -> None:
    t = now_ms() - 3_600_000
    ts = [t + i * 1000 for i in range(6)]
    lat = [52.5, 52.5012, 52.5031, 52.5031, 52.5046, 52.51]
    lon = [13.4, 13.4009, 13.4011, 13.4032, 13.405, 13.41]
    sent = fixes_of(ts, lat, lon)
    order = [3, 0, 5, 1, 4, 2]  # out of order; the last fix (ts == to) is outside the window
    device, viewer = await device_with(server, clients, [sent[i] for i in order])
    r = await http.get(
        f"/api/devices/{device}/trail", params={"from": ts[0], "to": ts[5]}, headers=bearer(viewer)
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/geo+json")
    body = r.json()
    assert body["type"] == "Feature"
    assert body["geometry"] == {"type": "LineString", "coordinates": [[lon[i], lat[i]] for i in range(5)]}
    p = body["properties"]
    assert p["device"] == device and p["from"] == ts[0] and p["to"] == ts[5]
    assert p["times"] == ts[:5] and p["points"] == 5 and p["fixes"] == 5
    assert p["distance_m"] == pytest.approx(line_m(lat[:5], lon[:5]), abs=1e-3)
    # ISO 8601 times select the same window.
    iso = await http.get(
        f"/api/devices/{device}/trail",
        params={"from": "1970-01-01T00:00:00Z", "to": "2100-01-01T00:00:00+02:00"},
        headers=bearer(viewer),
    )
    assert iso.json()["properties"]["times"] == ts


async def test_simplify_removes_a_collinear_point_keeps_endpoints_times_and_distance(
    server: Server, http: httpx.AsyncClient, clients: list[Client]
) -> None:
    t = now_ms() - 3_600_000
    ts = [t, t + 1000, t + 2000, t + 3000]
    lat, lon = [52.0, 52.001, 52.002, 52.002], [13.0, 13.0, 13.0, 13.003]
    device, viewer = await device_with(server, clients, fixes_of(ts, lat, lon))
    url = f"/api/devices/{device}/trail"
    window = {"from": t, "to": t + 4000}
    full = (await http.get(url, params=window, headers=bearer(viewer))).json()
    simple = (await http.get(url, params=window | {"simplify": "5"}, headers=bearer(viewer))).json()
    assert simple["geometry"]["coordinates"] == [[13.0, 52.0], [13.0, 52.002], [13.003, 52.002]]
    assert simple["properties"]["times"] == [ts[0], ts[2], ts[3]]
    assert simple["properties"]["points"] == 3 and simple["properties"]["fixes"] == 4
    assert simple["properties"]["distance_m"] == full["properties"]["distance_m"]
    assert full["properties"]["points"] == 4
    coarse = (await http.get(url, params=window | {"simplify": "1e6"}, headers=bearer(viewer))).json()
    assert coarse["properties"]["times"] == [ts[0], ts[3]]


async def test_gpx_is_a_gpx_1_1_track_that_parses_back(
    server: Server, http: httpx.AsyncClient, clients: list[Client]
) -> None:
    t = now_ms() - 3_600_000
    ts = [t + 250, t + 1000, t + 2999]
    lat, lon = [-33.8688, -33.8679, -33.8671], [151.2093, 151.2101, 151.2115]
    device, viewer = await device_with(server, clients, fixes_of(ts, lat, lon))
    r = await http.get(
        f"/api/devices/{device}/trail",
        params={"from": t, "to": t + 3000, "format": "gpx"},
        headers=bearer(viewer),
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/gpx+xml")
    assert 'version="1.1"' in r.text and "http://www.topografix.com/GPX/1/1" in r.text
    gpx = gpxpy.parse(r.text)
    assert len(gpx.tracks) == 1 and len(gpx.tracks[0].segments) == 1
    points = gpx.tracks[0].segments[0].points
    assert [(p.latitude, p.longitude) for p in points] == list(zip(lat, lon, strict=True))
    assert all(p.time is not None and p.time.tzinfo is not None for p in points)
    assert [round(p.time.timestamp() * 1000) for p in points if p.time] == ts


async def test_csv_has_the_header_and_a_row_per_fix(
    server: Server, http: httpx.AsyncClient, clients: list[Client]
) -> None:
    t = now_ms() - 3_600_000
    fixes = [
        {"ts": t + 2000, "lat": 40.4168, "lon": -3.7038, "speed": 4.2, "heading": 90},
        {"ts": t, "lat": 40.4165, "lon": -3.7041},
        {"ts": t + 1000, "lat": 40.4166, "lon": -3.704, "speed": 0, "heading": 359.5},
    ]
    device, viewer = await device_with(server, clients, fixes)
    r = await http.get(
        f"/api/devices/{device}/trail",
        params={"from": t, "to": t + 3000, "format": "csv"},
        headers=bearer(viewer),
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert r.text.splitlines() == [
        "ts,lat,lon,speed,heading",
        f"{t},40.4165,-3.7041,,",
        f"{t + 1000},40.4166,-3.704,0,359.5",
        f"{t + 2000},40.4168,-3.7038,4.2,90",
    ]


async def test_a_window_over_the_cap_is_400_for_geojson_and_streams_completely_as_csv(
    server: Server, http: httpx.AsyncClient, clients: list[Client], db: asyncpg.Connection
) -> None:
    n = 200_001  # one more than the GeoJSON/GPX cap
    t = now_ms() - 6 * 3_600_000
    step = 2.0**-20  # exact in binary, so PostGIS and Python agree on every longitude
    device, viewer = await device_with(server, clients, [{"ts": t, "lat": 52.0, "lon": 13.0}])
    # The rest straight into the table (a device's rate limit would take minutes over Socket.IO).
    # Real H3 cells: the shared server's live index is seeded from the newest fix at its next start.
    cells = [h3i.latlng_to_cell(52.0, 13.0 + i * step, 9) for i in range(1, n)]
    await db.execute(
        """
        INSERT INTO fixes (device_id, ts, geom, cell)
        SELECT $1, timestamptz 'epoch' + ($2::bigint + i * 100) * interval '1 millisecond',
               ST_SetSRID(ST_MakePoint(13.0 + i * $3::float8, 52.0), 4326), c
        FROM unnest($4::bigint[]) WITH ORDINALITY AS u(c, i)
        """,
        device,
        t,
        step,
        cells,
    )
    url = f"/api/devices/{device}/trail"
    window = {"from": t, "to": t + n * 100}
    r = await http.get(url, params=window, headers=bearer(viewer))
    assert r.status_code == 400
    assert "from/to" in r.json()["error"] and "format=csv" in r.json()["error"]
    r = await http.get(url, params=window | {"format": "gpx"}, headers=bearer(viewer))
    assert r.status_code == 400
    chunks = 0
    text = []
    async with http.stream("GET", url, params=window | {"format": "csv"}, headers=bearer(viewer)) as r:
        assert r.status_code == 200
        assert "content-length" not in r.headers  # streamed, not built in memory first
        async for chunk in r.aiter_text():
            chunks += 1
            text.append(chunk)
    lines = "".join(text).splitlines()
    assert len(lines) == n + 1 and chunks > 1
    assert lines[0] == "ts,lat,lon,speed,heading"
    expected = [f"{t + i * 100},52.0,{13.0 + i * step!r},," for i in range(n)]
    assert lines[1:] == expected


async def test_empty_and_single_fix_trails(
    server: Server, http: httpx.AsyncClient, clients: list[Client]
) -> None:
    t = now_ms() - 3_600_000
    device, viewer = await device_with(server, clients, [{"ts": t, "lat": 1.5, "lon": 2.5}])
    url = f"/api/devices/{device}/trail"
    empty = (await http.get(url, params={"from": t + 1, "to": t + 10}, headers=bearer(viewer))).json()
    assert empty["geometry"] is None
    assert empty["properties"] == {
        "device": device,
        "from": t + 1,
        "to": t + 10,
        "points": 0,
        "fixes": 0,
        "gap_s": 0,
        "distance_m": 0,
        "times": [],
    }
    one = (await http.get(url, params={"from": t, "to": t + 10}, headers=bearer(viewer))).json()
    assert one["geometry"] == {"type": "LineString", "coordinates": [[2.5, 1.5], [2.5, 1.5]]}
    assert one["properties"]["times"] == [t, t] and one["properties"]["points"] == 1
    assert one["properties"]["distance_m"] == 0
    gpx = await http.get(url, params={"from": t + 1, "to": t + 10, "format": "gpx"}, headers=bearer(viewer))
    assert gpx.status_code == 200 and gpxpy.parse(gpx.text).get_track_points_no() == 0


async def test_stops_and_trips_of_a_journey_with_exact_times(
    server: Server, http: httpx.AsyncClient, clients: list[Client]
) -> None:
    t0 = now_ms() - 3 * 3_600_000
    # Moving, a 10-minute stop with jitter, moving, a 2-minute pause, moving.
    ts, lat, lon = journey([("move", 10), ("stay", 61), ("move", 6), ("stay", 12), ("move", 6)], t0=t0)
    speed = [8.5 if i < 10 else 0.0 if i < 71 else 11.25 for i in range(len(ts))]
    sent = fixes_of(ts, lat, lon, speed=speed)
    random.Random(4).shuffle(sent)
    device, viewer = await device_with(server, clients, sent)
    window = {"from": t0, "to": ts[-1] + 1}
    r = await http.get(f"/api/devices/{device}/stops", params=window, headers=bearer(viewer))
    assert r.status_code == 200, r.text
    stops = r.json()["stops"]
    assert [(s["start_ts"], s["end_ts"], s["fixes"]) for s in stops] == [(ts[9], ts[70], 62)]
    assert stops[0]["duration_s"] == 610
    assert stops[0]["lat"] == pytest.approx(np.mean(lat[9:71]), abs=1e-9)
    assert stops[0]["lon"] == pytest.approx(np.mean(lon[9:71]), abs=1e-9)

    r = await http.get(f"/api/devices/{device}/trips", params=window, headers=bearer(viewer))
    assert r.status_code == 200, r.text
    trips = r.json()["trips"]
    last = len(ts) - 1
    assert [(x["start_ts"], x["end_ts"], x["fixes"]) for x in trips] == [
        (ts[0], ts[9], 10),
        (ts[70], ts[last], last - 70 + 1),
    ]
    first, second = trips
    assert first["distance_m"] == pytest.approx(line_m(lat[:10], lon[:10]), abs=1e-3)
    assert first["start"] == {"lat": lat[0], "lon": lon[0]} and first["end"] == {"lat": lat[9], "lon": lon[9]}
    assert first["max_speed"] == 8.5 and second["max_speed"] == 11.25
    assert first["duration_s"] == 90
    assert first["avg_speed"] == pytest.approx(first["distance_m"] / 90, abs=1e-3)
    assert second["distance_m"] == pytest.approx(line_m(lat[70:], lon[70:]), abs=1e-3)

    # A shorter min_duration_s makes the 2-minute pause a stop too, splitting the second trip.
    short = window | {"min_duration_s": "100", "radius_m": "50"}
    stops = (await http.get(f"/api/devices/{device}/stops", params=short, headers=bearer(viewer))).json()
    assert [(s["start_ts"], s["end_ts"]) for s in stops["stops"]] == [(ts[9], ts[70]), (ts[76], ts[88])]
    trips = (await http.get(f"/api/devices/{device}/trips", params=short, headers=bearer(viewer))).json()
    assert [(x["start_ts"], x["end_ts"]) for x in trips["trips"]] == [
        (ts[0], ts[9]),
        (ts[70], ts[76]),
        (ts[88], ts[last]),
    ]


async def test_a_trail_breaks_where_the_device_was_silent_in_geojson_and_gpx(
    server: Server, http: httpx.AsyncClient, clients: list[Client]
) -> None:
    """A device drives, is silent for 20 minutes (switched off, or a server restarted), and drives on
    elsewhere: no line across the silence unless the request asks for a longer gap."""
    t = now_ms() - 3_600_000
    ts = [t, t + 2000, t + 4000, t + 1_204_000, t + 1_206_000, t + 1_208_000]
    lat = [52.5, 52.501, 52.502, 52.45, 52.451, 52.452]
    lon = [13.4, 13.4, 13.4, 13.3, 13.3, 13.3]
    device, viewer = await device_with(server, clients, fixes_of(ts, lat, lon))
    url = f"/api/devices/{device}/trail"
    window = {"from": t, "to": t + 1_300_000}

    # Unasked, GeoJSON is the contract's single LineString, across the silence.
    whole = (await http.get(url, params=window, headers=bearer(viewer))).json()
    assert whole["geometry"]["type"] == "LineString" and whole["properties"]["gap_s"] == 0
    r = await http.get(url, params=window | {"gap_s": "600"}, headers=bearer(viewer))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["geometry"] == {
        "type": "MultiLineString",
        "coordinates": [[[lon[i], lat[i]] for i in range(3)], [[lon[i], lat[i]] for i in range(3, 6)]],
    }
    p = body["properties"]
    assert p["times"] == ts and p["points"] == 6 and p["fixes"] == 6 and p["gap_s"] == 600
    assert p["distance_m"] == pytest.approx(line_m(lat[:3], lon[:3]) + line_m(lat[3:], lon[3:]), abs=1e-3)

    # A longer gap (or 0, never) joins the runs again, and the length crosses the silence.
    for gap in ("1300", "0"):
        joined = (await http.get(url, params=window | {"gap_s": gap}, headers=bearer(viewer))).json()
        assert joined["geometry"] == {
            "type": "LineString",
            "coordinates": [[lon[i], lat[i]] for i in range(6)],
        }
        assert joined["properties"]["gap_s"] == float(gap)
        assert joined["properties"]["distance_m"] == pytest.approx(line_m(lat, lon), abs=1e-3)

    # A shorter gap makes a lone fix a run of its own; simplification keeps every run's endpoints.
    short = window | {"gap_s": "1.5", "simplify": "1e6"}
    pieces = (await http.get(url, params=short, headers=bearer(viewer))).json()
    assert [len(line) for line in pieces["geometry"]["coordinates"]] == [2, 2, 2, 2, 2, 2]
    assert pieces["properties"]["times"] == [x for x in ts for _ in (0, 1)]
    assert pieces["properties"]["distance_m"] == 0

    r = await http.get(url, params=window | {"format": "gpx"}, headers=bearer(viewer))
    assert r.status_code == 200
    gpx = gpxpy.parse(r.text)
    assert [[(q.latitude, q.longitude) for q in seg.points] for seg in gpx.tracks[0].segments] == [
        list(zip(lat[:3], lon[:3], strict=True)),
        list(zip(lat[3:], lon[3:], strict=True)),
    ]
    r = await http.get(url, params=window | {"format": "gpx", "gap_s": "0"}, headers=bearer(viewer))
    assert len(gpxpy.parse(r.text).tracks[0].segments) == 1


async def test_the_gap_setting_is_the_default_of_gap_s_in_gpx_and_the_map(
    database_url: str, tmp_path: Path, clients: list[Client]
) -> None:
    with own_server(database_url, tmp_path, {"TRACKER_TRAIL_GAP_S": "1.5"}) as s:
        t = now_ms() - 60_000
        async with web_client(base_url=s.url, timeout=30) as http:
            fixes = fixes_of([t, t + 1000, t + 3000], [1.0, 1.001, 1.002], [2.0] * 3)
            device, viewer = await device_with(s, clients, fixes)
            url = f"/api/devices/{device}/trail"
            gpx = (await http.get(url, params={"from": t, "format": "gpx"}, headers=bearer(viewer))).text
            assert len(gpxpy.parse(gpx).tracks[0].segments) == 2
            body = (await http.get(url, params={"from": t}, headers=bearer(viewer))).json()
            assert body["geometry"]["type"] == "LineString"
            # The page is told the setting, and asks /trail with it.
            page = (await http.get("/")).text
            assert '"trailGapS":1.5' in page


@pytest.mark.parametrize("endpoint", ["trail", "stops", "trips"])
async def test_scoping_on_every_history_endpoint(
    server: Server, http: httpx.AsyncClient, endpoint: str
) -> None:
    theirs, _ = await add_device(server, uid("fleet"))
    viewer = await add_viewer(server, [uid("fleet")])
    r = await http.get(f"/api/devices/{theirs}/{endpoint}")
    assert r.status_code == 401 and "error" in r.json()
    r = await http.get(f"/api/devices/{theirs}/{endpoint}", headers=bearer("not-a-token"))
    assert r.status_code == 401
    r = await http.get(f"/api/devices/{theirs}/{endpoint}", headers=bearer(viewer))
    assert r.status_code == 403 and theirs in r.json()["error"]
    r = await http.get(f"/api/devices/{uid('nobody')}/{endpoint}", headers=bearer(viewer))
    assert r.status_code == 404
    r = await http.get(f"/api/devices/{theirs}/{endpoint}", headers=bearer(ADMIN_TOKEN))
    assert r.status_code == 200


@pytest.mark.parametrize(
    ("endpoint", "query", "words"),
    [
        ("trail", {"simplify": "-1"}, "simplify must be at least 0"),
        ("trail", {"simplify": "nan"}, "simplify must be a finite number"),
        ("trail", {"simplify": "inf"}, "simplify must be a finite number"),
        ("trail", {"simplify": "1e400"}, "simplify must be a finite number"),
        ("trail", {"simplify": "ten"}, "simplify must be a number"),
        ("trail", {"format": "kml"}, "format must be one of geojson, gpx, csv"),
        ("trail", {"format": "csv", "simplify": "5"}, "simplify does not apply to format=csv"),
        ("trail", {"format": "csv", "gap_s": "600"}, "gap_s does not apply to format=csv"),
        ("trail", {"gap_s": "-1"}, "gap_s must be between 0 and 31536000"),
        ("trail", {"gap_s": "soon"}, "gap_s must be a number"),
        ("trail", {"from": "yesterday"}, "from must be"),
        ("trail", {"from": "2026-11-26T10:00:00Z", "to": "2026-11-25T10:00:00Z"}, "from must not be later"),
        ("stops", {"radius_m": "0"}, "radius_m must be between 1 and 100000"),
        ("stops", {"radius_m": "-5"}, "radius_m must be between"),
        ("stops", {"radius_m": "wide"}, "radius_m must be a number"),
        ("stops", {"min_duration_s": "0"}, "min_duration_s must be between 1 and 2592000"),
        ("stops", {"min_duration_s": "nan"}, "min_duration_s must be a finite number"),
        ("trips", {"radius_m": "1e9"}, "radius_m must be between"),
        ("trips", {"min_duration_s": "-inf"}, "min_duration_s must be a finite number"),
        ("trips", {"to": "2026-11-26T10:00:00"}, "to needs a UTC offset"),
    ],
)
async def test_bad_parameters_are_400_naming_the_parameter(
    server: Server, http: httpx.AsyncClient, endpoint: str, query: dict[str, str], words: str
) -> None:
    device, _ = await add_device(server, uid("fleet"))
    r = await http.get(f"/api/devices/{device}/{endpoint}", params=query, headers=bearer(ADMIN_TOKEN))
    assert r.status_code == 400, r.text
    assert words in r.json()["error"]
    r = await http.get(f"/api/devices/bad id!/{endpoint}", headers=bearer(ADMIN_TOKEN))
    assert r.status_code == 400 and "device id" in r.json()["error"]
