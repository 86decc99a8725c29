"""Fleet rules from YAML: shapes, `file:line: reason` errors, the last good set, the CLI, the watcher."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import subprocess
import sys
from pathlib import Path
from textwrap import dedent

import pytest
from harness import REALDATA
from shapely.geometry import MultiPolygon, Point, Polygon, shape

from tracker.errors import ConfigError
from tracker.geofence.config import FenceLoader, check_folder, load_folder
from tracker.geofence.watch import watch
from tracker.model import RULE_TYPES

ZURICH = REALDATA / "geofences" / "zurich_stadtkreise.geojson"


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dedent(text).lstrip("\n"))
    return path


def geojson(folder: Path, name: str, doc: object) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


SQUARE = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.0, 0.0]]


def test_polygon_is_closed_and_circle_and_rule_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "depots.yaml",
        """
        fences:
          - id: depot-north
            name: North depot
            tags: [depot]
            polygon: [[13.40, 52.52], [13.41, 52.52], [13.41, 52.53]]
          - id: hub
            circle: {center: [13.40, 52.52], radius_m: 150}
        rules:
          - id: depot-arrival
            on: enter
            fences: [depot-north]
        """,
    )
    result = load_folder(tmp_path)
    assert result.errors == ()
    depot, hub = result.fences
    assert depot.id == "depot-north" and depot.name == "North depot" and depot.tags == ("depot",)
    assert isinstance(depot.geometry, Polygon) and not depot.is_circle
    assert list(depot.geometry.exterior.coords) == [
        (13.40, 52.52),
        (13.41, 52.52),
        (13.41, 52.53),
        (13.40, 52.52),
    ]
    assert depot.source == f"{path}:2"
    assert (
        hub.is_circle and hub.center_lonlat == (13.40, 52.52) and hub.radius_m == 150 and hub.geometry is None
    )
    assert hub.source == f"{path}:6"
    (rule,) = result.rules
    assert rule.id == "depot-arrival" and rule.on == "enter"  # YAML 1.1 would read the key `on` as True
    assert rule.fences == ("depot-north",) and rule.fleets is None
    assert rule.notify == ("viewers",) and rule.confirm_fixes == 1 and rule.dwell_s is None
    assert rule.source == f"{path}:9"
    assert result.files == {str(path): hashlib.sha256(path.read_bytes()).hexdigest()}


def test_polygon_with_holes(tmp_path: Path) -> None:
    write(
        tmp_path,
        "a.yaml",
        """
        fences:
          - id: yard
            polygon:
              exterior: [[0, 0], [10, 0], [10, 10], [0, 10]]
              holes: [[[4, 4], [6, 4], [6, 6], [4, 6], [4, 4]]]
        """,
    )
    (yard,) = load_folder(tmp_path).fences
    assert len(yard.geometry.interiors) == 1 and yard.geometry.area == 96
    assert yard.geometry.covers(Point(1, 1)) and not yard.geometry.covers(Point(5, 5))
    assert yard.geometry.covers(Point(4, 5))  # the hole's edge belongs to the fence


def test_rule_options_and_tags_and_cross_file_references(tmp_path: Path) -> None:
    write(
        tmp_path,
        "a.yaml",
        """
        rules:
          - id: slow-down
            on: speeding
            fence_tags: [yard]
            fences: [hub, b1]
            fleets: [couriers, vans]
            max_speed_kmh: 30
            confirm_fixes: 3
            notify: [device, "https://example.org/hook", viewers, device]
          - id: linger
            on: dwell
            fences: [b2]
            dwell_s: 600
        """,
    )
    write(
        tmp_path,
        "b.yaml",
        """
        fences:
          - {id: b1, tags: [yard], circle: {center: [1, 1], radius_m: 5}}
          - {id: hub, circle: {center: [2, 2], radius_m: 5}}
          - {id: b2, tags: [yard, depot], circle: {center: [3, 3], radius_m: 5}}
        """,
    )
    result = load_folder(tmp_path)
    assert result.errors == ()
    speeding, dwell = result.rules
    assert speeding.fences == ("b1", "hub", "b2")  # load order, no duplicates
    assert speeding.fleets == frozenset({"couriers", "vans"}) and speeding.max_speed_kmh == 30
    assert speeding.confirm_fixes == 3 and speeding.dwell_s is None
    assert speeding.notify == ("device", "https://example.org/hook", "viewers")
    assert speeding.webhooks == ("https://example.org/hook",)
    assert dwell.on == "dwell" and dwell.dwell_s == 600 and dwell.fences == ("b2",)


def test_geojson_geometry_feature_and_collection(tmp_path: Path) -> None:
    geojson(tmp_path, "shapes/plain.geojson", {"type": "Polygon", "coordinates": [SQUARE]})
    two = [[[[x + 2, y] for x, y in SQUARE]], [[[x + 4, y] for x, y in SQUARE]]]
    geojson(
        tmp_path,
        "shapes/feature.json",
        {
            "type": "Feature",
            "properties": {"name": "Two"},
            "geometry": {"type": "MultiPolygon", "coordinates": two},
        },
    )
    collection = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "id": "north",
                "properties": {"name": "North"},
                "geometry": {"type": "Polygon", "coordinates": [SQUARE]},
            },
            {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [SQUARE]}},
            {
                "type": "Feature",
                "id": 7,
                "properties": None,
                "geometry": {"type": "Polygon", "coordinates": [SQUARE]},
            },
        ],
    }
    absolute = geojson(tmp_path / "elsewhere", "areas.geojson", collection)
    path = write(
        tmp_path,
        "a.yaml",
        f"""
        fences:
          - id: plain
            geojson: shapes/plain.geojson
          - id: feat
            geojson: shapes/feature.json
          - id: areas
            name: Area
            tags: [zone]
            geojson: {absolute}
        rules:
          - {{id: r, on: exit, fences: [areas]}}
          - {{id: s, on: exit, fences: ["areas:north"]}}
        """,
    )
    result = load_folder(tmp_path)
    assert result.errors == ()
    assert [f.id for f in result.fences] == ["plain", "feat", "areas:north", "areas:1", "areas:7"]
    assert [f.name for f in result.fences] == [None, "Two", "North", "Area", "Area"]
    plain, feat, *areas = result.fences
    assert isinstance(plain.geometry, Polygon) and plain.geometry.area == 1
    assert isinstance(feat.geometry, MultiPolygon) and len(feat.geometry.geoms) == 2
    assert all(f.tags == ("zone",) and f.source == f"{path}:6" for f in areas)
    assert result.rules[0].fences == ("areas:north", "areas:1", "areas:7")
    assert result.rules[1].fences == ("areas:north",)
    assert set(result.files) == {
        str(path),
        str(tmp_path / "shapes/plain.geojson"),
        str(tmp_path / "shapes/feature.json"),
        str(absolute),
    }
    assert result.files[str(absolute)] == hashlib.sha256(absolute.read_bytes()).hexdigest()


@pytest.mark.skipif(not ZURICH.exists(), reason="the shared real-data folder is not mounted")
def test_real_zurich_districts_are_repaired_not_rejected(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write(
        tmp_path,
        "zurich.yaml",
        f"""
        fences:
          - id: kreis
            geojson: {ZURICH}
        rules:
          - {{id: r, on: enter, fences: [kreis]}}
        """,
    )
    with caplog.at_level(logging.WARNING, logger="tracker.geofence"):
        result = load_folder(tmp_path)
    assert result.errors == ()
    ids = [f"kreis:{i}" for i in range(12)]
    assert [f.id for f in result.fences] == ids and result.rules[0].fences == tuple(ids)
    assert all(f.geometry.is_valid and f.geometry.area > 0 for f in result.fences)
    repaired = [r.getMessage() for r in caplog.records if "not valid" in r.getMessage()]
    assert len(repaired) == 2 and "kreis:4" in repaired[0] and "kreis:6" in repaired[1]
    original = json.loads(ZURICH.read_text())["features"]
    for i in (4, 6):  # the repair keeps the district's area
        assert result.fences[i].geometry.area == pytest.approx(shape(original[i]["geometry"]).area, rel=1e-6)
    # Main station, zoo, Letzigrund stadium, Oerlikon station: each in exactly one district, all different.
    landmarks = [
        Point(8.5402, 47.3782),
        Point(8.5744, 47.3849),
        Point(8.5040, 47.3826),
        Point(8.5445, 47.4116),
    ]
    hits = [[f.id for f in result.fences if f.geometry.covers(p)] for p in landmarks]
    assert all(len(h) == 1 for h in hits) and len({h[0] for h in hits}) == 4
    assert not any(f.geometry.covers(Point(7.4474, 46.9481)) for f in result.fences)  # Bern


def test_empty_files_are_valid(tmp_path: Path) -> None:
    write(tmp_path, "empty.yaml", "")
    write(tmp_path, "comments.yml", "# nothing yet\nfences:\nrules:\n")
    result = load_folder(tmp_path)
    assert result.errors == () and result.fences == () and result.rules == ()
    assert len(result.files) == 2


GOOD_FENCE = "  - {id: hub, tags: [depot], circle: {center: [13.4, 52.5], radius_m: 100}}\n"

# (file content, the exact errors: `a.yaml:<line>: <path>: <reason>`)
ERRORS = {
    "yaml syntax": (
        "fences:\n  - id: a\n    circle: {center: [1, 2], radius_m: 3\nrules: []\n",
        ["4: YAML syntax error: expected ',' or '}', but got ':' (while parsing a flow mapping at line 3)"],
    ),
    "unknown key": (
        "fences:\n  - id: a\n    circle:\n      center: [1, 2]\n      radius: 3\n",
        [
            "3: fences[0].circle.radius_m: is required",
            "5: fences[0].circle.radius: unknown key (did you mean 'radius_m'?)",
        ],
    ),
    "unknown fence key": (
        "fences:\n  - id: a\n    radius_m: 3\n    circle: {center: [1, 2], radius_m: 3}\n",
        ["3: fences[0].radius_m: unknown key (expected one of id, name, tags, polygon, circle, geojson)"],
    ),
    "wrong type": (
        "fences:\n  - id: a\n    circle:\n      center: [1, 2]\n      radius_m: ten\n",
        ["5: fences[0].circle.radius_m: must be a valid number, not 'ten'"],
    ),
    "radius not positive": (
        "fences:\n" + GOOD_FENCE * 0 + "  - id: a\n    circle: {center: [1, 2], radius_m: 0}\n",
        ["3: fences[0].circle.radius_m: must be greater than 0"],
    ),
    "lon out of range": (
        "fences:\n  - id: a\n    polygon:\n"
        "      - [13.40, 52.52]\n      - [213.41, 52.52]\n      - [13.41, 52.53]\n",
        ["5: fences[0].polygon[1]: lon 213.41 is outside -180..180"],
    ),
    "lat out of range in a hole": (
        "fences:\n  - id: a\n    polygon:\n      exterior: [[0, 0], [9, 0], [9, 9]]\n"
        "      holes:\n        - [[1, 1], [2, 1], [2, 95]]\n",
        ["6: fences[0].polygon.holes[0][2]: lat 95.0 is outside -90..90"],
    ),
    "circle centre out of range": (
        "fences:\n  - id: a\n    circle: {center: [0, -91], radius_m: 1}\n",
        ["3: fences[0].circle.center: lat -91.0 is outside -90..90"],
    ),
    "too few points": (
        "fences:\n  - id: a\n    polygon: [[0, 0], [1, 1], [0, 0]]\n",
        ["3: fences[0].polygon: needs at least 3 distinct points, has 2"],
    ),
    "zero area": (
        "fences:\n  - id: a\n    polygon: [[0, 0], [1, 1], [2, 2]]\n",
        ["3: fences[0].polygon: has zero area"],
    ),
    "no shape": (
        "fences:\n  - id: a\n    name: A\n",
        ["2: fences[0]: needs one of polygon, circle or geojson"],
    ),
    "two shapes": (
        "fences:\n  - id: a\n    polygon: [[0, 0], [1, 0], [1, 1]]\n"
        "    circle: {center: [1, 2], radius_m: 3}\n",
        ["4: fences[0].circle: needs one of polygon, circle or geojson (only one)"],
    ),
    "bad id": (
        "fences:\n  - id: no spaces\n    circle: {center: [1, 2], radius_m: 3}\n",
        [
            "2: fences[0].id: 'no spaces' is not a valid id "
            "(1-64 letters, digits or '_.:-', starting with a letter or digit)"
        ],
    ),
    "circle not a mapping": (
        "fences:\n  - {id: a, circle: 5}\n",
        ["2: fences[0].circle: must be a mapping of keys to values, not 5"],
    ),
    "missing geojson": (
        "fences:\n  - id: a\n    geojson: nowhere.geojson\n",
        ["3: fences[0].geojson: cannot read {dir}/nowhere.geojson: No such file or directory"],
    ),
    "duplicate key": (
        "fences:\n  - id: a\n    circle: {center: [1, 2], radius_m: 3}\n    id: b\n",
        ["4: fences[0].id: duplicate key 'id'"],
    ),
    "not a mapping": ("- id: a\n", ["1: must be a mapping with fences and rules"]),
    "missing dwell_s": (
        "fences:\n" + GOOD_FENCE + "rules:\n  - id: r\n    on: dwell\n    fences: [hub]\n",
        ["4: rules[0].dwell_s: is required with on: dwell"],
    ),
    "dwell_s on an enter rule": (
        "fences:\n" + GOOD_FENCE + "rules:\n  - id: r\n    on: enter\n    fences: [hub]\n    dwell_s: 60\n",
        ["7: rules[0].dwell_s: is only allowed with on: dwell"],
    ),
    "missing max_speed_kmh": (
        "fences:\n" + GOOD_FENCE + "rules:\n  - {id: r, on: speeding, fences: [hub]}\n",
        ["4: rules[0].max_speed_kmh: is required with on: speeding"],
    ),
    "unknown event type": (
        "fences:\n" + GOOD_FENCE + "rules:\n  - id: r\n    on: leave\n    fences: [hub]\n",
        ["5: rules[0].on: must be one of enter, exit, dwell, speeding, cross, near, not 'leave'"],
    ),
    "confirm_fixes out of range": (
        "fences:\n" + GOOD_FENCE + "rules:\n  - {id: r, on: exit, fences: [hub], confirm_fixes: 101}\n",
        ["4: rules[0].confirm_fixes: must be less than or equal to 100"],
    ),
    "bad notify target": (
        "fences:\n" + GOOD_FENCE + "rules:\n  - id: r\n    on: enter\n    fences: [hub]\n"
        "    notify:\n      - viewers\n      - ftp://example.org/x\n",
        ["9: rules[0].notify[1]: must be viewers, device or an http(s) URL, not 'ftp://example.org/x'"],
    ),
    "no fences named": (
        "fences:\n" + GOOD_FENCE + "rules:\n  - id: r\n    on: enter\n",
        ["4: rules[0]: needs fences or fence_tags"],
    ),
    "empty fences list": (
        "fences:\n" + GOOD_FENCE + "rules:\n  - {id: r, on: enter, fences: []}\n",
        ["4: rules[0]: fences and fence_tags select no fence"],
    ),
    "unknown fence id": (
        "fences:\n"
        + GOOD_FENCE
        + "rules:\n  - id: r\n    on: enter\n    fences:\n      - hub\n      - hbu\n",
        ["8: rules[0].fences[1]: unknown fence 'hbu'"],
    ),
    "tag matching nothing": (
        "fences:\n" + GOOD_FENCE + "rules:\n  - id: r\n    on: enter\n    fence_tags: [depots]\n",
        ["6: rules[0].fence_tags[0]: no fence has tag 'depots'"],
    ),
    "keep_every_s without min_distance_m": (
        "filters:\n  - max_speed_kmh: 200\n    keep_every_s: 60\n",
        ["3: filters[0].keep_every_s: is only allowed with min_distance_m (it keeps a repeated position)"],
    ),
    "duplicate id in one file": (
        "fences:\n" + GOOD_FENCE + GOOD_FENCE,
        ["3: fences[1].id: duplicate fence id 'hub' (first defined at {dir}/a.yaml:2)"],
    ),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_errors_name_file_line_and_field(tmp_path: Path, case: str) -> None:
    text, expected = ERRORS[case]
    (tmp_path / "a.yaml").write_text(text)
    result = load_folder(tmp_path)
    assert list(result.errors) == [f"{tmp_path}/a.yaml:{e.replace('{dir}', str(tmp_path))}" for e in expected]
    assert result.fences == () and result.rules == ()
    assert check_folder(tmp_path) == list(result.errors)


def test_duplicate_ids_across_files_name_the_first(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "fences:\n" + GOOD_FENCE + "rules:\n  - {id: r, on: enter, fences: [hub]}\n")
    write(
        tmp_path,
        "b.yaml",
        """
        # the same ids again
        fences:
          - id: other
            circle: {center: [1, 2], radius_m: 3}
          - id: hub
            circle: {center: [1, 2], radius_m: 3}
        rules:
          - {id: r, on: exit, fences: [other]}
        """,
    )
    assert load_folder(tmp_path).errors == (
        f"{tmp_path}/b.yaml:5: fences[1].id: duplicate fence id 'hub' (first defined at {tmp_path}/a.yaml:2)",
        f"{tmp_path}/b.yaml:8: rules[0].id: duplicate rule id 'r' (first defined at {tmp_path}/a.yaml:4)",
    )


def test_collection_ids_share_the_fence_namespace(tmp_path: Path) -> None:
    geojson(
        tmp_path,
        "c.geojson",
        {
            "type": "FeatureCollection",
            "features": [{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [SQUARE]}}],
        },
    )
    write(
        tmp_path,
        "a.yaml",
        """
        fences:
          - {id: "c:0", circle: {center: [1, 2], radius_m: 3}}
          - {id: c, geojson: c.geojson}
        """,
    )
    assert load_folder(tmp_path).errors == (
        f"{tmp_path}/a.yaml:3: fences[1].id: duplicate fence id 'c:0' (first defined at {tmp_path}/a.yaml:2)",
    )


def test_bad_geojson_content_is_reported_at_the_entry(tmp_path: Path) -> None:
    geojson(tmp_path, "point.geojson", {"type": "Point", "coordinates": [1, 2]})
    geojson(
        tmp_path,
        "far.geojson",
        {
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [200, 1], [0, 0]]]},
        },
    )
    (tmp_path / "broken.geojson").write_text('{"type": "Polygon",\n "coordinates": [}')
    # A crs whose properties are not an object (used to escape the loader as an AttributeError).
    geojson(tmp_path, "crs.geojson", {"type": "Polygon", "coordinates": [SQUARE], "crs": {"properties": 3}})
    write(
        tmp_path,
        "a.yaml",
        """
        fences:
          - {id: p, geojson: point.geojson}
          - {id: f, geojson: far.geojson}
          - {id: b, geojson: broken.geojson}
          - {id: c, geojson: crs.geojson}
        """,
    )
    d = tmp_path
    assert load_folder(tmp_path).errors == (
        f"{d}/a.yaml:2: fences[0].geojson: {d}/point.geojson: "
        "geometry: type 'Point' is not Polygon or MultiPolygon",
        f"{d}/a.yaml:3: fences[1].geojson: {d}/far.geojson: "
        "feature.geometry.coordinates[0]: point 2: lon 200 is outside -180..180",
        f"{d}/a.yaml:4: fences[2].geojson: {d}/broken.geojson: line 2: not valid JSON: Expecting value",
        f"{d}/a.yaml:5: fences[3].geojson: {d}/crs.geojson: crs {{'properties': 3}} is not WGS84 lon/lat "
        "(RFC 7946); reproject the file",
    )


FENCES_A = """
fences:
  - {id: a1, tags: [t], circle: {center: [1, 1], radius_m: 10}}
rules:
  - {id: ra, on: enter, fence_tags: [t]}
"""


def test_loader_keeps_last_good_version_of_a_broken_file(tmp_path: Path) -> None:
    a = write(tmp_path, "a.yaml", FENCES_A)
    b = write(
        tmp_path, "b.yaml", "fences:\n  - {id: b1, tags: [t], circle: {center: [2, 2], radius_m: 10}}\n"
    )
    loader = FenceLoader(tmp_path)
    first = loader.load()
    assert first.errors == () and [f.id for f in first.fences] == ["a1", "b1"]
    assert first.rules[0].fences == ("a1", "b1")

    a.write_text(FENCES_A.replace("radius_m: 10", "radius_m: -10"))
    b.write_text("fences:\n  - {id: b2, tags: [t], circle: {center: [2, 2], radius_m: 10}}\n")
    broken = loader.load()
    assert broken.errors == (f"{a}:3: fences[0].circle.radius_m: must be greater than 0",)
    assert [f.id for f in broken.fences] == ["a1", "b2"]  # a's last good version, b's new one
    assert broken.rules[0].id == "ra" and broken.rules[0].fences == ("a1", "b2")
    assert broken.files[str(a)] == hashlib.sha256(a.read_bytes()).hexdigest()

    a.write_text(FENCES_A.replace("a1", "a9"))
    fixed = loader.load()
    assert fixed.errors == () and [f.id for f in fixed.fences] == ["a9", "b2"]
    assert fixed.rules[0].fences == ("a9", "b2")

    b.unlink()
    gone = loader.load()
    assert gone.errors == () and [f.id for f in gone.fences] == ["a9"] and str(b) not in gone.files

    b.write_text("fences: [")  # back, but broken: its version from before the removal does not return
    back = loader.load()
    assert [f.id for f in back.fences] == ["a9"] and len(back.errors) == 1


def test_a_file_that_never_loaded_contributes_nothing(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", FENCES_A)
    loader = FenceLoader(tmp_path)
    assert [f.id for f in loader.load().fences] == ["a1"]
    c = write(tmp_path, "c.yaml", "fences:\n  - {id: c1, circle: {center: [2, 2], radius_m: 0}}\n")
    result = loader.load()
    assert [f.id for f in result.fences] == ["a1"]
    assert result.errors == (f"{c}:2: fences[0].circle.radius_m: must be greater than 0",)


def test_failed_cross_check_keeps_the_whole_previous_set(tmp_path: Path) -> None:
    a = write(tmp_path, "a.yaml", FENCES_A)
    b = write(tmp_path, "b.yaml", "rules:\n  - {id: rb, on: exit, fences: [a1]}\n")
    loader = FenceLoader(tmp_path)
    good = loader.load()
    assert good.errors == () and [r.id for r in good.rules] == ["ra", "rb"]

    a.write_text(FENCES_A.replace("a1", "a2"))  # valid on its own, but b still names a1
    refused = loader.load()
    assert refused.errors == (f"{b}:2: rules[0].fences[0]: unknown fence 'a1'",)
    assert refused.fences == good.fences and refused.rules == good.rules

    b.write_text("rules:\n  - {id: rb, on: exit, fences: [a2]}\n")
    accepted = loader.load()
    assert accepted.errors == () and [f.id for f in accepted.fences] == ["a2"]
    assert accepted.rules[1].fences == ("a2",)


def test_changed_geojson_is_reread(tmp_path: Path) -> None:
    shapes = geojson(tmp_path, "s.geojson", {"type": "Polygon", "coordinates": [SQUARE]})
    write(tmp_path, "a.yaml", "fences:\n  - {id: s, geojson: s.geojson}\n")
    loader = FenceLoader(tmp_path)
    before = loader.load()
    assert before.fences[0].geometry.area == 1
    geojson(tmp_path, "s.geojson", {"type": "Polygon", "coordinates": [[[2 * x, 2 * y] for x, y in SQUARE]]})
    after = loader.load()
    assert after.fences[0].geometry.area == 4
    assert after.files[str(shapes)] != before.files[str(shapes)]


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        check_folder(tmp_path / "nope")
    assert load_folder(tmp_path / "nope") == load_folder(tmp_path)


def tracker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tracker", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_cli_geofences_check(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", FENCES_A)
    write(tmp_path, "b.yml", "fences:\n  - {id: b1, polygon: [[0, 0], [1, 0], [1, 1]]}\n")
    ok = tracker("geofences", "check", str(tmp_path))
    assert (ok.returncode, ok.stdout, ok.stderr) == (0, "2 fences, 1 rules in 2 files\n", "")

    write(tmp_path, "c.yaml", "rules:\n  - id: rc\n    on: dwell\n    fences: [nowhere]\n")
    bad = tracker("geofences", "check", str(tmp_path))
    assert bad.returncode == 1 and bad.stdout == ""
    assert bad.stderr.splitlines() == [f"{tmp_path}/c.yaml:2: rules[0].dwell_s: is required with on: dwell"]

    missing = tracker("geofences", "check", str(tmp_path / "nope"))
    assert (
        missing.returncode == 2 and "does not exist" in missing.stderr and "Traceback" not in missing.stderr
    )


async def test_watch_reports_changes_and_a_folder_that_appears_later(tmp_path: Path) -> None:
    folder = tmp_path / "rules"
    changed = asyncio.Event()

    async def on_change() -> None:
        changed.set()

    stop = asyncio.Event()
    task = asyncio.create_task(watch(folder, on_change, stop))
    try:
        await asyncio.sleep(0)  # the watcher's first step runs: it finds no folder and starts polling
        folder.mkdir()  # found by the next poll (every 2 s)
        await asyncio.wait_for(changed.wait(), 10)

        # The watcher may not be set up yet when the first write lands: keep writing until it reports.
        changed.clear()

        async def keep_writing() -> None:
            for i in range(100):
                (folder / "a.yaml").write_text(f"# {i}\n")
                await asyncio.sleep(0.1)

        writer = asyncio.create_task(keep_writing())
        try:
            await asyncio.wait_for(changed.wait(), 10)
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    assert task.done() and task.exception() is None


async def test_watch_sees_a_removed_file(tmp_path: Path) -> None:
    changed = asyncio.Event()
    stop = asyncio.Event()
    rules = tmp_path / "a.yaml"

    async def on_change() -> None:
        changed.set()

    task = asyncio.create_task(watch(tmp_path, on_change, stop))
    try:

        async def keep_writing() -> None:
            for i in range(100):
                rules.write_text(f"# {i}\n")
                await asyncio.sleep(0.1)

        writer = asyncio.create_task(keep_writing())
        try:
            await asyncio.wait_for(changed.wait(), 10)  # now the watcher surely runs
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        changed.clear()
        rules.unlink()
        await asyncio.wait_for(changed.wait(), 10)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


def test_the_projects_own_fleet_rules_load_cleanly() -> None:
    """Every file in geofences/ (the demo's rules) is valid, and uses every rule type and option its
    README documents: each `on:`, accuracy: strict, near_fleets, and fix filters."""
    result = load_folder(Path(__file__).resolve().parent.parent / "geofences")
    assert result.errors == ()
    assert {r.on for r in result.rules} == set(RULE_TYPES)
    assert any(r.strict for r in result.rules) and any(r.near_fleets for r in result.rules)
    assert any(r.confirm_fixes > 1 for r in result.rules) and any(r.fleets for r in result.rules)
    assert any(f.max_accuracy_m is not None for f in result.filters)
    tags = {t for f in result.fences for t in f.tags}
    assert {"depot", "zone", "restricted"} <= tags
