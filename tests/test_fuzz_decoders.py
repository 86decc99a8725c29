"""Property tests, in process, of what the server reads from outside besides the contract's fix: whatever an
app sends (OsmAnd fields, Traccar Client JSON, OwnTracks messages, HTTP Basic credentials) decodes to fixes
or to our own error naming the app's field, and whatever a rules file or its GeoJSON holds loads as fences
and rules or as `file:line: ...` problems; never another exception. Each `@example` is something a fuzzer
found that once raised one."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import orjson
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tracker.errors import InvalidInput
from tracker.geofence.geojson import GeoJSONError, read_features
from tracker.geofence.rules_file import FileResult, parse_file
from tracker.protocols import osmand, owntracks
from tracker.protocols.request import AppRequest
from tracker.validation import parse_batch

NOW_MS = 1_795_687_200_000  # 2026-11-26T10:00:00Z
PURE = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
# Numbers as apps write them, and text that only looks like one.
number_texts = (
    st.floats().map(str)
    | st.integers(-(10**25), 10**25).map(str)
    | st.sampled_from(["", " ", "nan", "-inf", "1e400", "1e-400", "+.5", ".5e3", "0x10", "١", "52.5,13.4"])
    | st.text(max_size=12)
)
times = st.sampled_from(
    ["2026-11-26T10:00:00Z", "2026-11-26T10:00:00", "9999-12-31T23:59:59-14:00", "1969-12-31T23:59:59Z"]
) | st.integers(-(10**20), 10**20)


def json_bytes(value: Any) -> bytes:
    """`value` as JSON text, integers of any size written out as they are."""
    return json.dumps(value).encode()


def described(app: AppRequest, item: int, error: str) -> str:
    """A problem with entry `item` as the app is told it, without the entry's index."""
    return re.sub(r"^(location|message)\[\d+\]: ", "", app.describe(item, error))


def assert_fixes_or_named_problems(app: AppRequest, fields: set[str]) -> None:
    """Every entry of `app` is a fix object, which validation takes or refuses, or a reason; either way a
    problem starts with one of the app's `fields`."""
    raws, positions = app.fix_objects()
    _, rejected = parse_batch(raws, "d", "f", NOW_MS)
    problems = [described(app, i, item) for i, item in enumerate(app.items) if isinstance(item, str)]
    problems += [described(app, positions[r["index"]], r["error"]) for r in rejected]
    for problem in problems:
        assert problem.split(" ", 1)[0] in fields, problem


# The fields each decoder's problems may name, in the app's words.
OSMAND_FIELDS = {"lat", "lon", "location", "timestamp", "speed", "bearing", "heading", "altitude", "accuracy"}
OSMAND_FIELDS |= {"batt"}
COORD_NAMES = ("latitude", "longitude", "speed", "heading", "accuracy", "altitude")
COORDS = {f"location.coords.{k}" for k in COORD_NAMES}
TRACCAR_FIELDS = {"location", "location.coords", "location.timestamp", "location.battery.level"} | COORDS
OWNTRACKS_FIELDS = {"tst", "lat", "lon", "vel", "cog", "acc", "alt", "batt"}

# OsmAnd: query and form fields.
field_names = st.sampled_from(sorted(OSMAND_FIELDS | {"id", "deviceid", "hdop"})) | st.text(max_size=6)
osmand_fields = st.dictionaries(field_names, number_texts | times.map(str), max_size=8)


@given(osmand_fields)
@PURE
@example({"id": "t", "lat": "52.5", "lon": "13.4", "x\x00": "1"})
def test_any_osmand_fields_decode_to_fixes_or_problems_naming_the_field(fields: dict[str, str]) -> None:
    try:
        app = osmand.decode(b"", "", fields, NOW_MS)
    except InvalidInput as exc:
        assert str(exc)
        return
    assert_fixes_or_named_problems(app, OSMAND_FIELDS)


@given(
    st.binary(max_size=80) | osmand_fields.map(lambda f: "&".join(f"{k}={v}" for k, v in f.items()).encode()),
    st.sampled_from(["", "application/x-www-form-urlencoded", "text/plain", "application/json", "image/png"]),
    osmand_fields,
)
@PURE
def test_any_osmand_body_decodes_to_fixes_or_our_error(
    body: bytes, content_type: str, query: dict[str, str]
) -> None:
    try:
        app = osmand.decode(body, content_type, query, NOW_MS)
    except InvalidInput as exc:
        assert str(exc)
        return
    assert_fixes_or_named_problems(app, OSMAND_FIELDS | TRACCAR_FIELDS)


# Traccar Client 9+ JSON.
coords = st.fixed_dictionaries(
    {},
    optional={k: st.floats(-200, 200) | json_values for k in COORD_NAMES},
)
traccar_location = st.fixed_dictionaries(
    {},
    optional={
        "timestamp": times | json_values,
        "coords": coords | json_values,
        "battery": st.fixed_dictionaries({}, optional={"level": json_values, "is_charging": json_values}),
        "is_moving": json_values,
        "odometer": json_values,
        "activity": json_values,
        "extras": json_values,
        "event": json_values,
    },
)
traccar_root = st.fixed_dictionaries(
    {},
    optional={
        "location": traccar_location | st.lists(traccar_location, max_size=3) | json_values,
        "device_id": st.just("t") | json_values,
    },
)
traccar_bodies = traccar_root | st.lists(traccar_root, max_size=3) | json_values


@given(traccar_bodies)
@PURE
@example({"device_id": "t", "location": {"timestamp": 1795687000, "coords": {}, "extras": {"a": "\x00"}}})
def test_any_traccar_client_json_decodes_to_fixes_or_problems_naming_the_field(body: Any) -> None:
    try:
        app = osmand.decode(json_bytes(body), "application/json", {}, NOW_MS)
    except InvalidInput as exc:
        assert str(exc)
        return
    assert_fixes_or_named_problems(app, TRACCAR_FIELDS)


# OwnTracks in HTTP mode.
owntracks_location = st.fixed_dictionaries(
    {"_type": st.just("location") | json_values},
    optional={k: st.floats(-1e40, 1e40) | st.integers() | json_values for k in sorted(OWNTRACKS_FIELDS)}
    | {"tid": json_values, "t": json_values},
)
owntracks_bodies = owntracks_location | st.lists(owntracks_location | json_values, max_size=4) | json_values


@given(owntracks_bodies.map(json_bytes) | st.binary(max_size=60))
@PURE
@example(orjson.dumps({"_type": "location", "lat": 52.5, "lon": 13.4, "tst": 1795687000, "note": "a\x00b"}))
def test_any_owntracks_body_decodes_to_fixes_or_problems_naming_the_field(body: bytes) -> None:
    try:
        app = owntracks.decode(body, "t")
    except InvalidInput as exc:
        assert str(exc)
        return
    assert_fixes_or_named_problems(app, OWNTRACKS_FIELDS)


@given(st.text(max_size=40) | st.binary(max_size=30).map(lambda b: b.decode("latin-1")))
@PURE
@example("é")  # Starlette reads a header as latin-1: base64 refused it as not ASCII, with a 500
def test_any_basic_credentials_give_a_password_or_none(value: str) -> None:
    password = owntracks.basic_password("Basic " + value)
    assert password is None or (isinstance(password, str) and password)


def test_app_fields_that_postgresql_cannot_keep_are_left_out_of_attrs() -> None:
    """A NUL character made the write fail, and the app was told 503 "retry" for the same request forever."""
    fields = {"id": "t", "lat": "52.5", "lon": "13.4", "x\x00": "1", "y": "2"}
    (fix,) = osmand.decode(b"", "", fields, NOW_MS).items
    assert isinstance(fix, dict) and fix["attrs"] == {"y": 2}
    body = {"_type": "location", "lat": 52.5, "lon": 13.4, "tst": 1795687000, "note": "a\x00b", "tid": "v7"}
    (fix,) = owntracks.decode(orjson.dumps(body), "t").items
    assert isinstance(fix, dict) and fix["attrs"] == {"tid": "v7"}


# Rules files and their GeoJSON.
_LINE = re.compile(r"^(?P<file>.+?):(?P<line>\d+): \S")
_YAML_BREAK = re.compile("\r\n|[\n\r\x85\u2028\u2029]")  # what YAML counts as the end of a line
keys = st.sampled_from(
    ["fences", "rules", "id", "name", "tags", "polygon", "circle", "center", "radius_m", "geojson"]
    + ["exterior", "holes", "on", "fleets", "dwell_s", "max_speed_kmh", "confirm_fixes", "notify"]
)
yaml_scalars = json_scalars | st.sampled_from(
    ["enter", "dwell", "speeding", "viewers", "http://[::1", "https://x/", "f1", "x\x00.json", 10**400]
)
yaml_keys = keys | st.text(max_size=6)
yaml_values = st.recursive(
    yaml_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(yaml_keys, inner, max_size=4),
    max_leaves=25,
)
position = st.lists(st.floats(-200, 200) | st.integers(-(10**400), 10**400), min_size=2, max_size=3)
fence = st.fixed_dictionaries(
    {"id": st.just("f1") | yaml_scalars},
    optional={
        "polygon": st.lists(position, max_size=5) | yaml_values,
        "circle": st.fixed_dictionaries({"center": position | yaml_values, "radius_m": yaml_values}),
        "geojson": yaml_scalars,
        "tags": yaml_values,
    },
)
rule = st.fixed_dictionaries(
    {"id": st.just("r1") | yaml_scalars, "on": st.sampled_from(["enter", "dwell"]) | yaml_scalars},
    optional={k: yaml_values for k in ("fences", "fence_tags", "notify", "fleets", "dwell_s")},
)
documents = st.fixed_dictionaries(
    {}, optional={"fences": st.lists(fence | yaml_values, max_size=3), "rules": st.lists(rule, max_size=3)}
)
# Text as a hand editor gets it wrong: YAML's own pieces, tags PyYAML reads with Python's parsers, and noise.
yaml_pieces = st.sampled_from(
    ["fences:", "rules:", "- ", "id: ", "{", "}", "[", "]", ", ", ": ", "\n", "  ", "&a ", "*a", "? ", "'"]
    + ["!!int ", "!!float ", "!!bool ", "!!timestamp ", "!!binary ", "!!set ", "!!omap ", "!!python/name:x "]
    + ["2026-02-30", "2026-13-01 10:00:00", "0x", "0b2", "1_0", ".inf", "~", "|", ">", "---", "...", "\t"]
)
yaml_texts = st.lists(yaml_pieces | st.text(max_size=4), max_size=30).map("".join)


def _dump(document: Any) -> str:
    try:
        return yaml.safe_dump(document, allow_unicode=True)
    except (yaml.YAMLError, OverflowError):  # what PyYAML cannot write is not worth a file
        return ""


def assert_loaded_or_problems_at_file_line(result: FileResult, path: Path, text: str) -> None:
    """Fences and rules, or problems that each start with `path:line: `, the line within the file."""
    if not result.errors:
        assert all(e.fences for e in result.entries)
        return
    assert not result.entries and not result.drafts
    for error in result.errors:
        where = _LINE.match(error)
        assert where and where["file"] == str(path), error
        assert 1 <= int(where["line"]) <= len(_YAML_BREAK.findall(text)) + 1, error


def test_any_rules_file_loads_or_reports_problems_at_file_line(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"

    @given(yaml_texts | documents.map(_dump))
    @settings(PURE, max_examples=600)
    @example("a: 2026-02-30")  # PyYAML let Python's ValueError through from its timestamp
    @example("a: !!int x\n")
    @example("a: !!bool 1\n")  # KeyError
    @example("!!float &a ''")  # IndexError
    @example("a: !!timestamp x")  # AttributeError
    @example("[" * 5000)  # RecursionError in PyYAML's composer
    @example("rules:\n  - {id: r1, on: enter, fences: [f1], notify: ['http://[::1']}\n")  # urlsplit raised
    @example('fences:\n  - {id: f1, geojson: "x\\0.json"}\n')  # a NUL in a path
    @example(f"fences:\n  - {{id: f1, polygon: [[1{'0' * 400}, 2], [3, 4], [5, 6]]}}\n")
    def load(text: str) -> None:
        path.write_text(text, encoding="utf-8")
        assert_loaded_or_problems_at_file_line(parse_file(path), path, text)

    load()


geometry = st.fixed_dictionaries(
    {"type": st.sampled_from(["Polygon", "MultiPolygon", "Point"]) | json_values},
    optional={"coordinates": st.lists(st.lists(position, max_size=5), max_size=3) | json_values},
)
geojson_documents = (
    geometry
    | st.fixed_dictionaries(
        {"type": st.just("Feature"), "geometry": geometry | json_values}, optional={"id": json_values}
    )
    | st.fixed_dictionaries(
        {"type": st.just("FeatureCollection"), "features": st.lists(json_values, max_size=3) | json_values},
        optional={"crs": json_values},
    )
    | json_values
)


@given(geojson_documents.map(json_bytes) | st.binary(max_size=60))
@PURE
@example(b'{"type": "Polygon", "coordinates": [[[1' + b"0" * 400 + b", 2], [3, 4], [5, 6]]]}")  # Overflow
@example(b"[" * 100_000)  # RecursionError in json.loads
def test_any_geojson_gives_shapes_or_a_geojson_error(content: bytes) -> None:
    try:
        collection, shapes = read_features(content)
    except GeoJSONError as exc:
        assert str(exc)
        return
    assert shapes and (collection or len(shapes) == 1)
