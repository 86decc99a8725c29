"""Reading track files: every format on small hand-written files (including the server's own trail and
positions outputs), units, times, sorting and duplicates, errors with file and line, and every real track
under REALDATA/tracks checked against its manifest row."""

from __future__ import annotations

import csv
import math
from datetime import datetime
from pathlib import Path

import numpy as np
import orjson
import pytest
from harness import REALDATA, Client, Server, add_device, add_viewer, device_client, now_ms, uid, web_client

from tracker.tools.trackfile import FEET, TrackFileError, read_track

T0 = 1_764_151_200_000  # 2025-11-26T10:00:00Z
T0_ISO = "2025-11-26T10:00:00Z"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def refused(path: Path) -> str:
    with pytest.raises(TrackFileError) as info:
        read_track(path)
    return str(info.value)


# --- GPX ---------------------------------------------------------------------------------------------

GPX_11 = """<?xml version="1.0" encoding="UTF-8"?>
<gpx version="1.1" creator="test" xmlns="http://www.topografix.com/GPX/1/1"
     xmlns:gpxtpx="http://www.garmin.com/xmlschemas/TrackPointExtension/v2">
  <trk><name>one</name>
    <trkseg>
      <trkpt lat="52.5" lon="13.4"><ele>34.5</ele><time>2025-11-26T10:00:02Z</time></trkpt>
      <trkpt lat="52.501" lon="13.401"><time>2025-11-26T10:00:00Z</time>
        <extensions><gpxtpx:TrackPointExtension><gpxtpx:speed>3.5</gpxtpx:speed>
        <gpxtpx:course>90</gpxtpx:course></gpxtpx:TrackPointExtension></extensions></trkpt>
      <trkpt lat="52.502" lon="13.402"></trkpt>
    </trkseg>
    <trkseg>
      <trkpt lat="52.503" lon="13.403"><time>2025-11-26T12:00:05+02:00</time></trkpt>
      <trkpt lat="52.504" lon="13.404"><time>2025-11-26T10:00:05.250Z</time></trkpt>
    </trkseg>
  </trk>
</gpx>
"""


def test_gpx_points_of_every_segment_sorted_untimed_skipped_extensions_read(tmp_path: Path) -> None:
    track = read_track(write(tmp_path, "a.gpx", GPX_11))
    assert track.ts.tolist() == [T0, T0 + 2000, T0 + 5000, T0 + 5250]
    assert track.lat.tolist() == [52.501, 52.5, 52.503, 52.504]
    assert track.lon.tolist() == [13.401, 13.4, 13.403, 13.404]
    assert track.untimed == 1 and track.duplicates == 0
    assert track.optional["speed"][0] == 3.5 and track.optional["heading"][0] == 90
    assert math.isnan(track.optional["speed"][1])
    assert track.optional["altitude"][1] == 34.5 and math.isnan(track.optional["altitude"][0])
    assert track.describe().endswith(" (1 point without a time skipped)")


def test_gpx_1_0_speed_and_course_elements(tmp_path: Path) -> None:
    gpx = """<?xml version="1.0"?>
<gpx version="1.0" creator="test" xmlns="http://www.topografix.com/GPX/1/0">
  <trk><trkseg>
    <trkpt lat="50.57" lon="-2.45"><time>2025-11-26T10:00:00Z</time>
      <course>326.4</course><speed>0.23</speed></trkpt>
    <trkpt lat="50.58" lon="-2.46"><time>2025-11-26T10:00:01Z</time>
      <course>10</course><speed>4</speed></trkpt>
  </trkseg></trk>
</gpx>"""
    track = read_track(write(tmp_path, "b.gpx", gpx))
    assert track.optional["speed"].tolist() == [0.23, 4.0]
    assert track.optional["heading"].tolist() == [326.4, 10.0]


def test_gpx_route_points_when_there_is_no_track(tmp_path: Path) -> None:
    gpx = """<?xml version="1.0"?>
<gpx version="1.1" creator="test" xmlns="http://www.topografix.com/GPX/1/1">
  <rte><rtept lat="1" lon="2"><time>2025-11-26T10:00:00Z</time></rtept>
       <rtept lat="1.5" lon="2.5"><time>2025-11-26T10:01:00Z</time></rtept></rte>
</gpx>"""
    track = read_track(write(tmp_path, "r.gpx", gpx))
    assert track.ts.tolist() == [T0, T0 + 60_000] and track.lat.tolist() == [1.0, 1.5]


def test_gpx_without_any_time_or_broken_is_refused(tmp_path: Path) -> None:
    untimed = write(tmp_path, "u.gpx", GPX_11.replace("<time>", "<!--").replace("</time>", "-->"))
    assert refused(untimed) == f"{untimed}: none of its 5 points has a time, and replaying needs times"
    broken = write(tmp_path, "x.gpx", GPX_11[:300])
    assert refused(broken).startswith(f"{broken}: not valid GPX:")


def test_gpx_with_a_stuck_clock_is_refused(tmp_path: Path) -> None:
    points = "".join(
        f'<trkpt lat="46.43" lon="13.7{i}"><time>1901-12-13T20:45:52Z</time></trkpt>' for i in range(5)
    )
    gpx = f'<gpx version="1.1" creator="t" xmlns="http://www.topografix.com/GPX/1/1"><trk><trkseg>{points}'
    path = write(tmp_path, "stuck.gpx", gpx + "</trkseg></trk></gpx>")
    message = refused(path)
    assert message.startswith(f"{path}: only 1 distinct time among 5 points (from 1901-12-13T20:45:52.000Z")
    assert "clock looks stuck" in message


# --- CSV ---------------------------------------------------------------------------------------------


def test_the_servers_trail_csv_reads_back(tmp_path: Path) -> None:
    text = f"ts,lat,lon,speed,heading\n{T0},40.4165,-3.7041,,\n{T0 + 1000},40.4166,-3.704,0,359.5\n"
    track = read_track(write(tmp_path, "trail.csv", text))
    assert track.ts.tolist() == [T0, T0 + 1000]
    assert track.lat.tolist() == [40.4165, 40.4166] and track.lon.tolist() == [-3.7041, -3.704]
    assert math.isnan(track.optional["speed"][0]) and track.optional["speed"][1] == 0
    assert track.optional["heading"][1] == 359.5


def test_csv_column_aliases_iso_times_sorting_and_duplicates(tmp_path: Path) -> None:
    text = (
        "Timestamp; Latitude ;longitude;Course;accuracy;elevation;battery\n"
        "2025-11-26T12:00:03+02:00;47.3;8.5;10;20;400;99\n"
        f"{T0_ISO};47.1;8.1;;5;;\n"
        "2025-11-26T10:00:01.5Z;47.2;8.2;20;;;\n"
        "\n"
        "2025-11-26T11:00:03+01:00;47.9;8.9;30;;;\n"  # the same instant as the first row: dropped
    )
    track = read_track(write(tmp_path, "g.csv", text))
    assert track.ts.tolist() == [T0, T0 + 1500, T0 + 3000]
    assert track.lat.tolist() == [47.1, 47.2, 47.3] and track.lon.tolist() == [8.1, 8.2, 8.5]
    assert track.duplicates == 1
    assert track.optional["heading"][1:].tolist() == [20.0, 10.0] and math.isnan(track.optional["heading"][0])
    assert track.optional["accuracy"][0] == 5 and track.optional["altitude"][2] == 400
    assert track.optional["battery"][2] == 99


@pytest.mark.parametrize(
    ("value", "ms"),
    [
        (str(T0), T0),  # milliseconds
        (str(T0 // 1000), T0),  # seconds: below 1e11
        (f"{T0 / 1000 + 0.25}", T0 + 250),  # fractional seconds
        ("2025-11-26T11:00:00.125+01:00", T0 + 125),
    ],
)
def test_csv_numeric_and_iso_times(tmp_path: Path, value: str, ms: int) -> None:
    track = read_track(write(tmp_path, "t.csv", f"time,lat,lng\n{value},1,2\n"))
    assert track.ts.tolist() == [ms]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "ts,lat,lon\n1764151200000,52.5,13.4\n1764151201000,52.x,13.4\n",
            ":3: lat must be a number; got '52.x'",
        ),
        ("when,lat,lon\n1,2,3\n", ":1: no time column: expected one of ts, time, timestamp, tracked_at; "),
        ("ts,lat,x\n1764151200000,52.5,13.4\n", ":1: no longitude column: expected one of lon, lng, long"),
        (
            "ts,lat,lon\n2025-11-26T10:00:00,52.5,13.4\n",
            ":2: ts needs a UTC offset (for example a trailing Z)",
        ),
        ("ts,lat,lon\n,52.5,13.4\n", ":2: ts is empty"),
        ("ts,lat,lon\n1764151200000,95,13.4\n", ":2: latitude must be between -90 and 90; got 95"),
        ("ts,lat,lon,speed\n1764151200000,52,13,-1\n", ":2: speed must be at least 0; got -1"),
        ("ts,lat,lon,heading\n1764151200000,52,13\n", ":2: 3 fields where the header names 4"),
        ("ts,lat,lon\n", ": no track points found"),
    ],
)
def test_broken_csv_names_file_line_and_problem(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, "bad.csv", text)
    message = refused(path)
    assert message.startswith(f"{path}{expected}"), message


# --- GeoJSON and JSON --------------------------------------------------------------------------------


def test_the_servers_trail_geojson_reads_back_including_a_single_fix(tmp_path: Path) -> None:
    trail = {
        "type": "Feature",
        "geometry": {"type": "LineString", "coordinates": [[13.4, 52.5], [13.41, 52.51], [13.42, 52.52]]},
        "properties": {"device": "d", "from": 0, "to": 1, "points": 3, "times": [T0, T0 + 1000, T0 + 2000]},
    }
    track = read_track(write(tmp_path, "trail.geojson", orjson.dumps(trail).decode()))
    assert track.ts.tolist() == [T0, T0 + 1000, T0 + 2000]
    assert track.lat.tolist() == [52.5, 52.51, 52.52] and track.lon.tolist() == [13.4, 13.41, 13.42]
    single = trail | {
        "geometry": {"type": "LineString", "coordinates": [[13.4, 52.5], [13.4, 52.5]]},
        "properties": {"times": [T0, T0], "points": 1},
    }
    one = read_track(write(tmp_path, "one.geojson", orjson.dumps(single).decode()))
    assert one.ts.tolist() == [T0] and one.duplicates == 0


def test_geojson_multilinestring_with_nested_iso_times_speeds_and_altitudes(tmp_path: Path) -> None:
    doc = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "geometry": {
                    "type": "MultiLineString",
                    "coordinates": [[[2.0, 48.0, 35.0], [2.1, 48.1, 36.0]], [[2.2, 48.2, 37.5]]],
                },
                "properties": {
                    "coordinateProperties": {
                        "times": [[T0_ISO, "2025-11-26T10:00:10Z"], ["2025-11-26T10:00:20Z"]]
                    },
                    "speeds": [1.0, None, 3.0],
                    "headings": [0, 90, 180],
                },
            }
        ],
    }
    track = read_track(write(tmp_path, "m.json", orjson.dumps(doc).decode()))
    assert track.ts.tolist() == [T0, T0 + 10_000, T0 + 20_000]
    assert track.optional["altitude"].tolist() == [35.0, 36.0, 37.5]
    assert track.optional["speed"][0] == 1.0 and math.isnan(track.optional["speed"][1])
    assert track.optional["heading"].tolist() == [0.0, 90.0, 180.0]


def test_geojson_points_in_the_shape_of_the_servers_positions(tmp_path: Path) -> None:
    def point(ts: int, lon: float, lat: float, speed: float | None) -> dict[str, object]:
        return {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [lon, lat]},
            "properties": {"ts": ts, "speed": speed, "heading": None, "accuracy": 4.0, "cell": "891f1d48"},
        }

    doc = {
        "type": "FeatureCollection",
        "features": [point(T0 + 1000, 13.1, 52.1, 2.5), point(T0, 13.0, 52.0, None)],
        "next_cursor": None,
    }
    track = read_track(write(tmp_path, "p.geojson", orjson.dumps(doc).decode()))
    assert track.ts.tolist() == [T0, T0 + 1000] and track.lon.tolist() == [13.0, 13.1]
    assert track.optional["accuracy"].tolist() == [4.0, 4.0]
    assert math.isnan(track.optional["speed"][0]) and track.optional["speed"][1] == 2.5
    assert "heading" not in track.optional


def test_json_array_of_fixes_or_wkt_points_with_local_offsets(tmp_path: Path) -> None:
    fixes = [
        {"ts": T0, "lat": 1.0, "lon": 2.0, "battery": 50},
        {"ts": T0_ISO.replace("00Z", "01Z"), "lat": 1.1, "lon": 2.1},
    ]
    track = read_track(write(tmp_path, "f.json", orjson.dumps(fixes).decode()))
    assert track.ts.tolist() == [T0, T0 + 1000] and track.optional["battery"][0] == 50
    barefoot = [
        {"point": "POINT(11.5643 48.1635)", "time": "2025-11-26 12:00:15+0200", "id": "\\x0001"},
        {"point": "POINT(11.5636 48.1619)", "time": "2025-11-26 12:00:00+0200", "id": "\\x0001"},
    ]
    track = read_track(write(tmp_path, "x0001.json", orjson.dumps(barefoot).decode()))
    assert track.ts.tolist() == [T0, T0 + 15_000]
    assert track.lon.tolist() == [11.5636, 11.5643] and track.lat.tolist() == [48.1619, 48.1635]


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({"type": "Polygon"}, ": expected a GeoJSON Feature or FeatureCollection, or a JSON array of fixes"),
        (
            {
                "type": "Feature",
                "geometry": {"type": "LineString", "coordinates": [[1, 2], [3, 4]]},
                "properties": {},
            },
            ": feature.properties: no times: a line needs `times` parallel to its coordinates",
        ),
        (
            {
                "type": "Feature",
                "geometry": {"type": "LineString", "coordinates": [[1, 2], [3, 4]]},
                "properties": {"times": [T0]},
            },
            ": feature.properties.times has 1 entries for 2 coordinates",
        ),
        (
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "geometry": {"type": "Point", "coordinates": [1, 2]},
                        "properties": {},
                    }
                ],
            },
            ": features[0].properties: no time: expected one of ts, time, timestamp, tracked_at",
        ),
        ([{"ts": T0, "lat": 1}], ": [0]: no position: expected lat and lon (or a WKT point)"),
        (
            [{"ts": "noon", "lat": 1, "lon": 2}],
            ": [0]: ts must be milliseconds since the epoch or an ISO 8601",
        ),
    ],
)
def test_broken_json_names_file_place_and_problem(tmp_path: Path, doc: object, expected: str) -> None:
    path = write(tmp_path, "bad.geojson", orjson.dumps(doc).decode())
    message = refused(path)
    assert message.startswith(f"{path}{expected}"), message


def test_invalid_json_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.json", '{"type": "Feature",')
    assert refused(path).startswith(f"{path}: not valid JSON:")


# --- GeoLife PLT -------------------------------------------------------------------------------------

PLT_HEADER = "\r\n".join(
    [
        "Geolife trajectory",
        "WGS 84",
        "Altitude is in Feet",
        "Reserved 3",
        "0,2,255,My Track,0,0,2,8421376",
        "0",
        "",
    ]
)


def test_plt_times_are_utc_and_altitude_feet_become_metres(tmp_path: Path) -> None:
    rows = (
        "39.98,116.31,0,492,45987.4166666667,2025-11-26,10:00:00\r\n"
        "39.99,116.32,0,-777,45987.41667824,2025-11-26,10:00:01\r\n"
    )
    track = read_track(write(tmp_path, "g.plt", PLT_HEADER + rows))
    assert track.ts.tolist() == [T0, T0 + 1000]
    assert track.lat.tolist() == [39.98, 39.99] and track.lon.tolist() == [116.31, 116.32]
    assert track.optional["altitude"][0] == pytest.approx(492 * FEET) and math.isnan(
        track.optional["altitude"][1]
    )


def test_broken_plt_names_the_line(tmp_path: Path) -> None:
    rows = "39.98,116.31,0,492,45987.41,2025-11-26,10:00:00\r\n39.98,116.31,0,492,45987.41,2025-11-26\r\n"
    path = write(tmp_path, "g.plt", PLT_HEADER + rows)
    assert refused(path) == f"{path}:8: expected 7 fields (lat,lon,0,altitude_ft,days,date,time); got 6"
    path = write(tmp_path, "h.plt", PLT_HEADER + "39.98,116.31,0,492,45987.41,2025-13-26,10:00:00\r\n")
    assert refused(path).startswith(f"{path}:7: date and time must be YYYY-MM-DD,HH:MM:SS")
    path = write(tmp_path, "i.plt", "lat,lon\n1,2\n")
    assert refused(path).startswith(f"{path}:1: not a GeoLife PLT file")


# --- any format --------------------------------------------------------------------------------------


def test_empty_missing_and_unknown_files_are_refused(tmp_path: Path) -> None:
    empty = write(tmp_path, "e.gpx", "  \n")
    assert refused(empty) == f"{empty}: the file is empty"
    missing = tmp_path / "nope.csv"
    assert refused(missing).startswith(f"{missing}: cannot read the file:")
    kml = write(tmp_path, "t.kml", "<kml/>")
    assert refused(kml) == f"{kml}: unknown track format '.kml'; use one of .gpx, .csv, .geojson, .json, .plt"


# --- the server's own outputs, fetched from a real server --------------------------------------------


async def test_trail_csv_geojson_and_positions_from_a_real_server_read_back_identically(
    server: Server, tmp_path: Path, clients: list[Client]
) -> None:
    fleet = uid("fleet")
    device, token = await add_device(server, fleet)
    viewer = await add_viewer(server, [fleet])
    d = await device_client(server, token, clients)
    t = now_ms() - 600_000
    sent = [
        {"ts": t + i * 1000, "lat": 52.5 + i * 1e-4, "lon": 13.4 - i * 1e-4, "speed": 1.5 * i, "heading": 90}
        for i in range(5)
    ]
    sent[2].pop("speed")
    ack = await d.call("fix", sent)
    assert ack["accepted"] == 5, ack
    window = {"from": t, "to": t + 5000}
    async with web_client(base_url=server.url, headers={"Authorization": f"Bearer {viewer}"}) as http:
        bodies = {
            "trail.csv": (
                await http.get(f"/api/devices/{device}/trail", params=window | {"format": "csv"})
            ).text,
            "trail.geojson": (await http.get(f"/api/devices/{device}/trail", params=window)).text,
            "positions.geojson": (await http.get(f"/api/devices/{device}/positions", params=window)).text,
        }
    for name, body in bodies.items():
        track = read_track(write(tmp_path, name, body))
        assert track.ts.tolist() == [f["ts"] for f in sent], name
        assert track.lat.tolist() == [f["lat"] for f in sent], name
        assert track.lon.tolist() == [f["lon"] for f in sent], name
        if "speed" in track.optional:  # the trail's GeoJSON carries no speeds
            speeds = [None if math.isnan(s) else s for s in track.optional["speed"].tolist()]
            assert speeds == [f.get("speed") for f in sent], name


# --- every real track --------------------------------------------------------------------------------

REFUSED = {
    "tracks/gpxpy/Mojstrovka.gpx": "clock looks stuck",  # 184 points at one instant in 1901
    "tracks/geolife/010/labels.txt": "unknown track format '.txt'",  # transport-mode labels, no track
}


def _manifest() -> dict[str, dict[str, str]]:
    path = REALDATA / "manifest.csv"
    if not path.is_file():
        return {}
    with path.open(newline="", encoding="utf-8") as f:
        return {row["file"]: row for row in csv.DictReader(f) if row["kind"] in ("track", "labels")}


MANIFEST = _manifest()


def _ms(iso_time: str) -> int:
    return int(datetime.fromisoformat(iso_time).timestamp() * 1000)


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_every_real_track_is_read_as_its_manifest_says_or_refused_clearly(name: str) -> None:
    path, row = REALDATA / name, MANIFEST[name]
    if name in REFUSED:
        message = refused(path)
        assert message.startswith(str(path)) and REFUSED[name] in message
        return
    track = read_track(path)
    # Every timed fix is kept but for repeated timestamps; untimed ones are skipped and counted.
    assert len(track) + track.duplicates == int(row["timed"])
    assert track.untimed == int(row["fixes"]) - int(row["timed"])
    assert len(track) >= int(row["timed"]) // 2
    assert int(track.ts[0]) == _ms(row["start"]) and int(track.ts[-1]) == _ms(row["end"])
    assert bool(np.all(np.diff(track.ts) > 0))
    assert float(row["min_lat"]) - 1e-6 <= track.lat.min() and track.lat.max() <= float(row["max_lat"]) + 1e-6
    assert float(row["min_lon"]) - 1e-6 <= track.lon.min() and track.lon.max() <= float(row["max_lon"]) + 1e-6


def test_the_manifest_lists_every_real_track_file() -> None:
    if not MANIFEST:
        pytest.skip(f"no real data at {REALDATA}")
    on_disk = {str(p.relative_to(REALDATA)) for p in (REALDATA / "tracks").rglob("*") if p.is_file()}
    assert on_disk == set(MANIFEST)
