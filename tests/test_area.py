"""`/api/area` (who was in a box or fence, from stored fixes) and `/api/nearby` (live devices near a
point) end to end against a real server and PostGIS, plus `LiveIndex.nearby` against a brute-force scan."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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
    write_rules,
)
from pyproj import Geod

from tracker.geo import cell_hex
from tracker.index import LiveIndex, assign_cells
from tracker.model import Fix, Position
from tracker.store.area import circle_boxes

WGS84 = Geod(ellps="WGS84")
BBOX = "13.38,52.50,13.42,52.53"
IN_BOX = [(52.51, 13.39), (52.52, 13.40), (52.525, 13.41)]
OUT_OF_BOX = (52.55, 13.39)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def get(server: Server, path: str, token: str, **query: Any) -> httpx.Response:
    async with web_client(base_url=server.url) as http:
        return await http.get(path, params=query, headers=bearer(token))


async def send(server: Server, token: str, clients: list[Client], fixes: list[dict[str, Any]]) -> None:
    d = await device_client(server, token, clients)
    ack = await d.call("fix", fixes)
    assert ack["accepted"] == len(fixes), ack


def fix(lat: float, lon: float, ts: int) -> dict[str, Any]:
    return {"lat": lat, "lon": lon, "ts": ts}


def offset(lat: float, lon: float, azimuth: float, metres: float) -> tuple[float, float]:
    """The point `metres` from (lat, lon) along `azimuth`, as (lat, lon)."""
    lon2, lat2, _ = WGS84.fwd(lon, lat, azimuth, metres)
    return lat2, lon2


async def test_area_bbox_counts_devices_with_exact_first_and_last_times(
    server: Server, clients: list[Client]
) -> None:
    fleet = uid("fleet")
    a, a_token = await add_device(server, fleet, uid("a"))
    b, b_token = await add_device(server, fleet, uid("b"))
    _, c_token = await add_device(server, fleet)
    t = now_ms() - 3_600_000
    await send(server, a_token, clients, [
        fix(*IN_BOX[0], t), fix(*IN_BOX[1], t + 1000), fix(*OUT_OF_BOX, t + 2000), fix(*IN_BOX[2], t + 3000),
    ])  # fmt: skip
    # b: inside, then exactly on the box's north-east corner (edges count).
    await send(server, b_token, clients, [fix(*IN_BOX[1], t + 500), fix(52.53, 13.42, t + 4000)])
    # c: outside, and a hair's breadth outside the corner (within `&&`'s float4 box rounding).
    await send(server, c_token, clients, [fix(*OUT_OF_BOX, t + 100), fix(52.5300001, 13.4200001, t + 200)])
    viewer = await add_viewer(server, [fleet])

    async def area(**query: Any) -> list[dict[str, Any]]:
        r = await get(server, "/api/area", viewer, **query)
        assert r.status_code == 200, r.text
        devices: list[dict[str, Any]] = r.json()["devices"]
        return devices

    assert await area(bbox=BBOX, **{"from": t, "to": t + 10_000}) == [
        {"id": a, "fleet": fleet, "first_ts": t, "last_ts": t + 3000, "fixes": 3},
        {"id": b, "fleet": fleet, "first_ts": t + 500, "last_ts": t + 4000, "fixes": 2},
    ]
    # from is inclusive, to exclusive.
    assert await area(bbox=BBOX, **{"from": t + 1000, "to": t + 3000}) == [
        {"id": a, "fleet": fleet, "first_ts": t + 1000, "last_ts": t + 1000, "fixes": 1},
    ]
    assert await area(bbox=BBOX, **{"from": t + 501, "to": t + 3001}) == [
        {"id": a, "fleet": fleet, "first_ts": t + 1000, "last_ts": t + 3000, "fixes": 2},
    ]
    assert await area(bbox=BBOX, **{"from": t + 500, "to": t + 501}) == [
        {"id": b, "fleet": fleet, "first_ts": t + 500, "last_ts": t + 500, "fixes": 1},
    ]
    assert await area(bbox=BBOX, **{"from": t + 4001, "to": t + 10_000}) == []
    # The default window is the last 24 hours, and ISO times work too.
    assert [d["id"] for d in await area(bbox=BBOX)] == [a, b]
    since = datetime.fromtimestamp((t + 501) / 1000, UTC).isoformat(timespec="milliseconds")
    iso = await area(
        bbox="13.395,52.515,13.415,52.53", **{"from": since.replace("+00:00", "Z"), "to": t + 3500}
    )
    assert iso == [{"id": a, "fleet": fleet, "first_ts": t + 1000, "last_ts": t + 3000, "fixes": 2}]


async def test_area_bbox_across_the_antimeridian(server: Server, clients: list[Client]) -> None:
    fleet = uid("fleet")
    device, token = await add_device(server, fleet)
    t = now_ms() - 60_000
    await send(
        server, token, clients, [fix(10.5, 179.9, t), fix(10.5, -179.9, t + 1000), fix(10.5, 0.0, t + 2000)]
    )
    viewer = await add_viewer(server, [fleet])
    window = {"from": t, "to": t + 5000}
    r = await get(server, "/api/area", viewer, bbox="179.5,10,-179.5,11", **window)
    assert r.json() == {
        "devices": [{"id": device, "fleet": fleet, "first_ts": t, "last_ts": t + 1000, "fixes": 2}]
    }
    r = await get(server, "/api/area", viewer, bbox="-179.5,10,179.5,11", **window)
    assert r.json()["devices"][0]["fixes"] == 1  # the other way round: only lon 0


async def test_area_is_scoped_to_the_tokens_fleets(server: Server, clients: list[Client]) -> None:
    fleet, other = uid("fleet"), uid("fleet")
    device, token = await add_device(server, fleet)
    t = now_ms() - 60_000
    await send(server, token, clients, [fix(*IN_BOX[0], t)])
    window = {"from": t, "to": t + 1}
    outsider = await add_viewer(server, [other])
    assert (await get(server, "/api/area", outsider, bbox=BBOX, **window)).json() == {"devices": []}
    both = await add_viewer(server, [other, fleet])
    assert [
        d["id"] for d in (await get(server, "/api/area", both, bbox=BBOX, **window)).json()["devices"]
    ] == [device]
    everyone = (await get(server, "/api/area", ADMIN_TOKEN, bbox=BBOX, **window)).json()["devices"]
    assert device in [d["id"] for d in everyone]
    async with web_client(base_url=server.url) as http:
        assert (await http.get("/api/area", params={"bbox": BBOX})).status_code == 401
        assert (await http.get("/api/nearby", params={"lat": 1, "lon": 1, "radius_m": 1})).status_code == 401


FENCES = """
fences:
  - id: yard
    polygon: [[13.40, 52.52], [13.41, 52.52], [13.41, 52.53], [13.40, 52.52]]
  - id: hub
    circle: {center: [13.45, 52.50], radius_m: 150}
"""


async def test_area_of_a_polygon_and_a_circle_fence(
    database_url: str, tmp_path: Path, clients: list[Client]
) -> None:
    write_rules(tmp_path, FENCES, "fences.yaml")
    with own_server(database_url, tmp_path) as server:
        fleet = uid("fleet")
        inner, inner_token = await add_device(server, fleet, uid("inner"))
        edge, edge_token = await add_device(server, fleet, uid("edge"))
        near, near_token = await add_device(server, fleet, uid("near"))
        far, far_token = await add_device(server, fleet, uid("far"))
        t = now_ms() - 600_000
        # Polygon (a triangle): inside, then inside its bounding box but outside it; on its edge and corner.
        await send(server, inner_token, clients, [fix(52.522, 13.408, t), fix(52.528, 13.402, t + 1)])
        await send(server, edge_token, clients, [fix(52.52, 13.405, t + 2), fix(52.53, 13.41, t + 3)])
        # Circle: 140 m from the centre (inside) and 160 m (outside), diagonally so the 160 m points lie
        # inside the circle's bounding box.
        await send(server, near_token, clients, [
            fix(*offset(52.50, 13.45, 45, 140), t + 10), fix(*offset(52.50, 13.45, 225, 149), t + 11),
            fix(*offset(52.50, 13.45, 135, 160), t + 12),
        ])  # fmt: skip
        await send(server, far_token, clients, [fix(*offset(52.50, 13.45, 315, 151), t + 20)])
        viewer = await add_viewer(server, [fleet])
        window = {"from": t, "to": t + 1000}
        r = await get(server, "/api/area", viewer, fence="yard", **window)
        assert r.json() == {
            "devices": [
                {"id": inner, "fleet": fleet, "first_ts": t, "last_ts": t, "fixes": 1},
                {"id": edge, "fleet": fleet, "first_ts": t + 2, "last_ts": t + 3, "fixes": 2},
            ]
        }
        r = await get(server, "/api/area", viewer, fence="hub", **window)
        assert r.json() == {
            "devices": [{"id": near, "fleet": fleet, "first_ts": t + 10, "last_ts": t + 11, "fixes": 2}]
        }
        assert far not in r.text
        outsider = await add_viewer(server, [uid("fleet")])
        assert (await get(server, "/api/area", outsider, fence="hub", **window)).json() == {"devices": []}
        r = await get(server, "/api/area", viewer, fence="nowhere")
        assert r.status_code == 404 and "nowhere" in r.json()["error"]
        r = await get(server, "/api/area", viewer, fence="yard", bbox=BBOX)
        assert r.status_code == 400 and "bbox" in r.json()["error"] and "fence" in r.json()["error"]


async def test_nearby_lists_live_devices_nearest_first_with_geodesic_distances(
    server: Server, clients: list[Client]
) -> None:
    fleet = uid("fleet")
    lat, lon = -33.87, 151.21
    placed = {"d400": (10, 400.0), "d100": (200, 100.0), "d900": (300, 900.0), "d250": (90, 250.0)}
    ids: dict[str, str] = {}
    t = now_ms() - 60_000
    for name, (azimuth, metres) in placed.items():
        ids[name], token = await add_device(server, fleet, uid(name))
        # An older fix far away: only the newest position counts.
        await send(server, token, clients, [fix(0.0, 0.0, t), fix(*offset(lat, lon, azimuth, metres), t + 1)])
    moved, moved_token = await add_device(server, fleet)
    await send(server, moved_token, clients, [fix(lat, lon, t), fix(lat + 1, lon, t + 1)])
    viewer = await add_viewer(server, [fleet])

    r = await get(server, "/api/nearby", viewer, lat=lat, lon=lon, radius_m=500)
    assert r.status_code == 200, r.text
    got = r.json()["devices"]
    assert [d["id"] for d in got] == [ids["d100"], ids["d250"], ids["d400"]]
    for d in got:
        _, _, expected = WGS84.inv(lon, lat, d["lon"], d["lat"])
        assert d["distance_m"] == pytest.approx(expected, abs=0.002)
        assert d["fleet"] == fleet and d["ts"] == t + 1
    assert got[0]["distance_m"] == pytest.approx(100.0, abs=0.01)

    r = await get(server, "/api/nearby", viewer, lat=lat, lon=lon, radius_m=5000, limit=2)
    assert [d["id"] for d in r.json()["devices"]] == [ids["d100"], ids["d250"]]
    r = await get(server, "/api/nearby", viewer, lat=lat, lon=lon, radius_m=5000)
    assert [d["id"] for d in r.json()["devices"]] == [ids[k] for k in ("d100", "d250", "d400", "d900")]
    r = await get(server, "/api/nearby", viewer, lat=lat, lon=lon, radius_m=99.9)
    assert r.json() == {"devices": []}
    r = await get(server, "/api/nearby", viewer, lat=lat + 1, lon=lon, radius_m=1)
    assert [d["id"] for d in r.json()["devices"]] == [moved]

    outsider = await add_viewer(server, [uid("fleet")])
    r = await get(server, "/api/nearby", outsider, lat=lat, lon=lon, radius_m=5000)
    assert r.json() == {"devices": []}
    everyone = await get(server, "/api/nearby", ADMIN_TOKEN, lat=lat, lon=lon, radius_m=5000, limit=1000)
    assert set(ids.values()) <= {d["id"] for d in everyone.json()["devices"]}


@pytest.mark.parametrize(
    ("path", "query", "words"),
    [
        ("/api/area", {}, "exactly one of bbox"),
        ("/api/area", {"bbox": "1,2,3"}, "bbox must be [west, south, east, north]"),
        ("/api/area", {"bbox": "a,b,c,d"}, "bbox must be four comma-separated numbers"),
        ("/api/area", {"bbox": "1,2,nan,4"}, "bbox must hold four finite numbers"),
        ("/api/area", {"bbox": "1,5,3,4"}, "bbox needs -90 <= south < north <= 90"),
        ("/api/area", {"bbox": "1,2,200,4"}, "bbox west and east must be between -180 and 180"),
        ("/api/area", {"bbox": "1,-91,3,4"}, "bbox needs -90 <= south < north <= 90"),
        ("/api/area", {"fence": "bad id!"}, "fence"),
        ("/api/area", {"bbox": BBOX, "from": "0", "to": str(32 * 86_400_000)}, "at most 31 days"),
        ("/api/area", {"bbox": BBOX, "from": "soon"}, "from must be"),
        ("/api/nearby", {"lon": "1", "radius_m": "10"}, "lat is required"),
        ("/api/nearby", {"lat": "91", "lon": "1", "radius_m": "10"}, "lat must be between -90 and 90"),
        ("/api/nearby", {"lat": "1", "lon": "east", "radius_m": "10"}, "lon must be a number"),
        ("/api/nearby", {"lat": "1", "lon": "-180.5", "radius_m": "10"}, "lon must be between -180 and 180"),
        ("/api/nearby", {"lat": "1", "lon": "1"}, "radius_m is required"),
        ("/api/nearby", {"lat": "1", "lon": "1", "radius_m": "0"}, "radius_m must be greater than 0"),
        (
            "/api/nearby",
            {"lat": "1", "lon": "1", "radius_m": "100001"},
            "radius_m must be greater than 0 and at most 100000",
        ),
        ("/api/nearby", {"lat": "inf", "lon": "1", "radius_m": "1"}, "lat must be a finite number"),
        (
            "/api/nearby",
            {"lat": "1", "lon": "1", "radius_m": "1", "limit": "0"},
            "limit must be between 1 and 1000",
        ),
        (
            "/api/nearby",
            {"lat": "1", "lon": "1", "radius_m": "1", "limit": "1001"},
            "limit must be between 1 and 1000",
        ),
    ],
)
async def test_bad_parameters_are_400_naming_the_parameter(
    server: Server, path: str, query: dict[str, str], words: str
) -> None:
    r = await get(server, path, ADMIN_TOKEN, **query)
    assert r.status_code == 400, r.text
    assert words in r.json()["error"]


def brute_force(
    positions: list[Fix], lat: float, lon: float, radius_m: float, fleets: set[str] | None, limit: int
) -> list[tuple[str, float]]:
    """Every position's geodesic distance, one pyproj call per point: the oracle for `nearby`."""
    found = []
    for f in positions:
        if fleets is not None and f.fleet not in fleets:
            continue
        _, _, d = WGS84.inv(lon, lat, f.lon, f.lat)
        if d <= radius_m:
            found.append((d, f.device))
    return [(device, d) for d, device in sorted(found)[:limit]]


def random_points(
    rng: np.random.Generator, n: int, lat: float, lon: float, spread_m: float
) -> list[tuple[float, float]]:
    lons, lats, _ = WGS84.fwd(
        np.full(n, lon), np.full(n, lat), rng.uniform(0, 360, n), spread_m * np.sqrt(rng.uniform(0, 1, n))
    )
    return list(zip(lats.tolist(), lons.tolist(), strict=True))


def test_live_index_nearby_matches_a_brute_force_geodesic_scan() -> None:
    rng = np.random.default_rng(7)
    # Clusters in an ordinary place, across the antimeridian, near the pole and around an H3 pentagon,
    # plus points all over the globe.
    pentagon = h3i.cell_to_latlng(h3i.get_pentagons(9)[3])
    centres = [(52.52, 13.40), (-0.5, 179.99), (89.95, 0.0), pentagon]
    points: list[tuple[float, float]] = []
    for lat, lon in centres:
        points += random_points(rng, 900, lat, lon, 15_000)
    z = rng.uniform(-1, 1, 400)
    points += list(zip(np.degrees(np.arcsin(z)).tolist(), rng.uniform(-180, 180, 400).tolist(), strict=True))
    fixes = [Fix(f"dev{i:05d}", f"fleet{i % 3}", 1, lat, lon) for i, (lat, lon) in enumerate(points)]
    assign_cells(fixes, 9)
    index = LiveIndex()
    index.advance(fixes)
    checked_disk = checked_scan = 0
    for lat, lon in centres:
        for radius in (50.0, 300.0, 1500.0, 6000.0, 40_000.0):
            for fleets in (None, {"fleet1"}, {"fleet0", "fleet2"}):
                for limit in (1000, 7):
                    want = brute_force(fixes, lat, lon, radius, fleets, limit)
                    got = index.nearby(lat, lon, radius, fleets, limit)
                    assert [p.device for p, _ in got] == [device for device, _ in want], (lat, lon, radius)
                    assert [d for _, d in got] == pytest.approx([d for _, d in want], abs=1e-6)
            if len(index._nearby_candidates(lat, lon, radius, None)) < len(index):
                checked_disk += 1
            else:
                checked_scan += 1
    assert checked_disk >= 8 and checked_scan >= 4  # both the grid disk and the scan were exercised
    # Candidates near a centre come from the disk, far fewer than the index holds.
    assert len(index._nearby_candidates(52.52, 13.40, 300.0, None)) < 100


def test_live_index_load_recells_positions_stored_at_another_resolution() -> None:
    # Positions seeded from fixes stored under an earlier TRACKER_H3_RESOLUTION get cells at the index's.
    index = LiveIndex(10)
    old = [Fix(f"old{i}", "f", 1, 48.0 + i * 1e-4, 11.0) for i in range(50)]
    assign_cells(old, 7)
    index.load(
        (Position(f.device, f.fleet, f.ts, f.lat, f.lon, None, None, cell_hex(f.cell)), f.cell) for f in old
    )
    new = [Fix(f"new{i}", "f", 1, 48.0 - i * 1e-4, 11.0) for i in range(1, 50)]
    elsewhere = [Fix(f"far{i}", "f", 1, 10.0, 10.0 + i * 1e-3) for i in range(1000)]
    assign_cells(new + elsewhere, 10)
    index.advance(new + elsewhere)
    got = index.nearby(48.0, 11.0, 120.0, None, 1000)
    want = brute_force(old + new, 48.0, 11.0, 120.0, None, 1000)
    assert [p.device for p, _ in got] == [d for d, _ in want]
    assert {p.device[:3] for p, _ in got} == {"old", "new"}
    assert len(index._nearby_candidates(48.0, 11.0, 120.0, None)) == 99  # from the disk, not a scan
    assert {h3i.get_resolution(int(p.cell, 16)) for p, _ in got} == {10}


def test_circle_boxes_contain_the_circle_across_the_antimeridian_and_at_the_pole() -> None:
    circles = [  # (lon, lat) of the centre, radius
        ((13.4, 52.5), 150.0),
        ((179.999, 10.0), 5000.0),
        ((-179.999, -10.0), 5000.0),
        ((0.0, 89.99), 5000.0),
        ((40.0, -89.999), 300.0),
        ((0.0, 70.0), 90_000.0),
    ]
    for center, radius in circles:
        boxes = circle_boxes(center[1], center[0], radius)
        assert all(w <= e and -180 <= w and e <= 180 and -90 <= s <= n <= 90 for w, s, e, n in boxes)
        lons, lats, _ = WGS84.fwd(
            np.full(720, center[0]), np.full(720, center[1]), np.linspace(0, 360, 720), np.full(720, radius)
        )
        for x, y in zip(lons, lats, strict=True):
            assert any(w <= x <= e and s <= y <= n for w, s, e, n in boxes), (center, radius, x, y)
    assert len(circle_boxes(10.0, 179.999, 5000.0)) == 2
