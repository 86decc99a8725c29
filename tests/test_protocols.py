"""The app decoders against the apps' own published requests, in process: Traccar's
OsmAndProtocolDecoderTest and OwnTracksProtocolDecoderTest (github.com/traccar/traccar, src/test/java/
org/traccar/protocol/), the JSON of Traccar Client 9 (traccar.org/osmand) and the OwnTracks booklet
(owntracks.org/booklet/tech/json). Each decoded fix also passes the one validation every fix takes."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson
import pytest

from tracker.errors import InvalidInput
from tracker.model import Message
from tracker.protocols import osmand, owntracks
from tracker.protocols.request import KMH_MS, KNOT_MS, AppRequest
from tracker.validation import parse_batch

NOW_MS = 1_795_687_200_000  # 2026-11-26T10:00:00Z


def query(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))


def valid(app: AppRequest) -> list[dict[str, Any]]:
    """The decoded fix objects, after checking that validation takes every one of them."""
    raws, _ = app.fix_objects()
    fixes, rejected = parse_batch(raws, "d", "f", NOW_MS + 10 * 365 * 86_400_000)
    assert not rejected, rejected
    assert len(fixes) == len(raws)
    return raws


def problems(app: AppRequest) -> list[str]:
    """Why entries of `app` are no fix: the decoder's reasons, then validation's."""
    raws, _ = app.fix_objects()
    found = [item for item in app.items if isinstance(item, str)]
    return found + [r["error"] for r in parse_batch(raws, "d", "f", NOW_MS)[1]]


# Traccar's OsmAndProtocolDecoderTest.testDecodeQuery, the requests it expects a position from.
TRACCAR_QUERIES = [
    "/?id=902064&lat=42.06288&lon=-88.23412&timestamp=2016-01-27T18%3A55%3A47Z&hdop=6.0&altitude=224.0&speed=0.0",
    "/?id=902064&lat=42.06288&lon=-88.23412&timestamp=1442068686579&hdop=6.0&altitude=224.0&speed=0.0",
    "/?id=123456&timestamp=1377177267&lat=60.0&lon=30.0&speed=0.0&bearing=0.0&altitude=0&hdop=0.0",
    "/?id=123456&timestamp=1377177267&lat=60.0&lon=30.0",
    "/?lat=60.0&lon=30.0&speed=0.0&heading=0.0&vacc=0&hacc=0&altitude=0&deviceid=123456",
    "/?id=861001000719969&lat=41.666667&lon=-0.883333&altitude=350.059479&speed=0.000000&batt=87",
    "/?id=123456&timestamp=1377177267&location=60.0,30.0",
    "/?id=123456789012345&timestamp=1504763810&lat=40.7232948571&lon=-74.0061408571&bearing=7.19889788244"
    "&speed=40&ignition=true&rpm=933&fuel=24",
]


@pytest.mark.parametrize("url", TRACCAR_QUERIES)
def test_traccar_osmand_queries_decode_to_valid_fixes(url: str) -> None:
    app = osmand.decode(b"", "", query(url), NOW_MS)
    (fix,) = valid(app)
    fields = query(url)
    assert app.token == fields.get("id", fields.get("deviceid"))
    assert app.token_field == "id" and not app.batch


def test_osmand_query_units_and_attrs_as_traccar_reads_them() -> None:
    fix = osmand.decode(b"", "", query(TRACCAR_QUERIES[-1]), NOW_MS).items[0]
    assert isinstance(fix, dict)
    assert fix["ts"] == 1_504_763_810_000  # unix seconds
    assert fix["speed"] == pytest.approx(40 * KNOT_MS)  # knots -> m/s
    assert fix["heading"] == pytest.approx(7.19889788244)  # bearing
    assert fix["attrs"] == {"ignition": True, "rpm": 933, "fuel": 24}  # typed as Traccar types them
    ms = osmand.decode(b"", "", query(TRACCAR_QUERIES[1]), NOW_MS).items[0]
    assert isinstance(ms, dict) and ms["ts"] == 1_442_068_686_579  # milliseconds stay milliseconds
    assert ms["attrs"] == {"hdop": 6.0}
    iso = osmand.decode(b"", "", query(TRACCAR_QUERIES[0]), NOW_MS).items[0]
    assert isinstance(iso, dict) and iso["ts"] == 1_453_920_947_000
    located = osmand.decode(b"", "", query(TRACCAR_QUERIES[6]), NOW_MS).items[0]
    assert isinstance(located, dict) and (located["lat"], located["lon"]) == (60.0, 30.0)
    untimed = osmand.decode(b"", "", query(TRACCAR_QUERIES[4]), NOW_MS).items[0]
    assert isinstance(untimed, dict) and untimed["ts"] == NOW_MS  # no timestamp: the server's time
    battery = osmand.decode(b"", "", query(TRACCAR_QUERIES[5]), NOW_MS).items[0]
    assert isinstance(battery, dict) and battery["battery"] == 87


def test_osmand_requests_traccar_takes_and_we_refuse_say_which_field() -> None:
    # No offset: Traccar reads the time in the server's zone; we ask for one rather than guess.
    url = (
        "/?lat=49.60688&lon=6.15788&timestamp=2014-06-04+09%3A10%3A11&altitude=384.7&speed=0.0"
        "&id=353861053849681"
    )
    app = osmand.decode(b"", "", query(url), NOW_MS)
    assert app.items == ["timestamp needs a UTC offset (for example a trailing Z); got '2014-06-04 09:10:11'"]
    # Cell and Wi-Fi only, no coordinates: Traccar keeps a position without them; a fix needs lat and lon.
    url = "/?id=123456&timestamp=1377177267&cell=257,02,16,2224&wifi=00-14-22-01-23-45,-80"
    raws, _ = osmand.decode(b"", "", query(url), NOW_MS).fix_objects()
    _, rejected = parse_batch(raws, "d", "f", NOW_MS)
    assert rejected == [{"index": 0, "error": "lat is required"}]
    # The same fields in a form body; the body's win over the query's.
    form = b"lat=1.5&lon=2.5&timestamp=1377177267&speed=-1&bearing=-1"
    app = osmand.decode(form, osmand.FORM, {"id": "tok", "lat": "9"}, NOW_MS)
    (fix,) = valid(app)
    assert (fix["lat"], fix["speed"], fix["heading"]) == (1.5, None, None)  # -1: not known, left out
    with pytest.raises(InvalidInput, match="got a application/xml body"):
        osmand.decode(b"<x/>", "application/xml", {}, NOW_MS)


# Traccar Client's own formatter tests: traccar/traccar-client-android app/src/test/java/org/traccar/client/
# ProtocolFormatterTest.kt (Robolectric's Location at time 0, moved by the client's GPS week rollover
# correction to 1989) and traccar/traccar-client-ios TraccarClientTests/ProtocolFormatterTests.swift (time 0).
TRACCAR_CLIENT_FORMATTER_TESTS = [
    "http://localhost:5055?id=123456789012345&timestamp=619315200&lat=0.0&lon=0.0&speed=0.0&bearing=0.0"
    "&altitude=0.0&accuracy=0.0&batt=0.0",
    "http://localhost:5055/path?id=123456789012345&timestamp=619315200&lat=0.0&lon=0.0&speed=0.0&bearing=0.0"
    "&altitude=0.0&accuracy=0.0&batt=0.0&alarm=alert%20message",
    "http://localhost:5055?id=123456789012345&timestamp=0&lat=0.000000&lon=0.000000&speed=0&bearing=0&altitude=0"
    "&accuracy=0&batt=0",
]


@pytest.mark.parametrize("url", TRACCAR_CLIENT_FORMATTER_TESTS)
def test_traccar_client_formatter_tests_are_refused_for_their_time_only(url: str) -> None:
    app = osmand.decode(b"", "", query(url), NOW_MS)
    assert app.token == "123456789012345"
    (problem,) = app.items
    assert isinstance(problem, str) and problem.startswith("timestamp must be later than 2000-01-01")


# Requests with real values, field for field as the formatters write them: Android's ProtocolFormatter.kt
# (speed in knots from Position.kt's m/s * 1.943844, `charge`/`mock` only when true; accuracy 0.0 for a GPS
# fix) and iOS's ProtocolFormatter.swift (lat/lon with six decimals, no speed or bearing when CoreLocation
# has none, accuracy = horizontalAccuracy, -1 when invalid).
def test_traccar_client_formatter_requests_in_si_units() -> None:
    android = (
        "/?id=123456789012345&timestamp=1795686000&lat=52.520008&lon=13.404954&speed=19.43844&bearing=271.5"
        "&altitude=34.0&accuracy=0.0&batt=85.0&charge=true&mock=true"
    )
    (fix,) = valid(osmand.decode(b"", "", query(android), NOW_MS))
    assert (fix["lat"], fix["lon"], fix["ts"]) == (52.520008, 13.404954, 1_795_686_000_000)
    assert fix["speed"] == pytest.approx(10.0, abs=1e-5)  # 19.43844 kn = 10 m/s
    assert (fix["heading"], fix["altitude"], fix["accuracy"], fix["battery"]) == (271.5, 34.0, 0.0, 85.0)
    assert fix["attrs"] == {"charge": True, "mock": True}
    ios = "/?id=4f2a&timestamp=1795686000&lat=52.520008&lon=13.404954&altitude=34.2&accuracy=-1.0&batt=-100.0"
    (fix,) = valid(osmand.decode(b"", "", query(ios), NOW_MS))
    assert [fix[k] for k in ("speed", "heading", "accuracy", "battery")] == [None] * 4  # unknown: absent
    assert fix["altitude"] == 34.2 and fix["attrs"] is None


def test_osmand_unknown_and_unfit_optional_values_never_refuse_the_fix() -> None:
    ts = "1795686000"
    for unknown in ["", " ", "-1", "-1.0", "null", "NaN", "nan", "undefined"]:
        fields = {"id": "t", "lat": "1.5", "lon": "2.5", "timestamp": ts}
        fields |= {name: unknown for name in ("speed", "bearing", "accuracy", "batt")}
        (fix,) = valid(osmand.decode(b"", "", fields, NOW_MS))
        assert [fix[k] for k in ("speed", "heading", "accuracy", "battery")] == [None] * 4, unknown
        assert fix["attrs"] is None, unknown
    # Values the contract cannot take: left out of the fix, kept as sent in its attrs.
    fields = {"id": "t", "lat": "1.5", "lon": "2.5", "timestamp": ts, "speed": "fast", "bearing": "400"}
    fields |= {"batt": "101", "accuracy": "1e39", "altitude": "x"}
    (fix,) = valid(osmand.decode(b"", "", fields, NOW_MS))
    assert [fix[k] for k in ("speed", "heading", "accuracy", "altitude", "battery")] == [None] * 5
    assert fix["attrs"] == {
        "speed": "fast",
        "bearing": "400",
        "batt": "101",
        "accuracy": "1e39",
        "altitude": "x",
    }
    # A negative altitude is a place below sea level, not an unknown one.
    (fix,) = valid(osmand.decode(b"", "", {"lat": "31.5", "lon": "35.5", "altitude": "-430"}, NOW_MS))
    assert fix["altitude"] == -430
    # The position and its time still refuse the fix, naming the field.
    for bad, error in [
        ({"lat": "NaN"}, "lat must be a finite number"),
        ({"lat": ""}, "lat is required"),
        ({"timestamp": "null"}, "timestamp must be unix seconds or an ISO 8601 time"),
    ]:
        app = osmand.decode(b"", "", {"lat": "1", "lon": "2", "timestamp": ts} | bad, NOW_MS)
        assert problems(app)[0].startswith(error), (bad, problems(app))


# Traccar Client (traccar/traccar-client lib/push_service.dart, _uploadToken) registers its Firebase token:
# a form POST of `id` and `notificationToken` alone. Traccar keeps the token as the device's
# notificationTokens attribute (traccar/traccar OsmAndProtocolDecoder.java, CommandsManager.java).
PUSH_REGISTRATION = b"id=48241179&notificationToken=dGVzdA%3AAPA91bHun4MxP5egoKMwt2KZFBaFUH-1RYqx"


def test_traccar_client_push_registration_is_no_fix() -> None:
    app = osmand.decode(PUSH_REGISTRATION, osmand.FORM, {}, NOW_MS)
    assert app.token == "48241179" and app.items == []
    assert app.push_token == "dGVzdA:APA91bHun4MxP5egoKMwt2KZFBaFUH-1RYqx"
    # Beside a position (Traccar reads it in any request) it is kept too, and stays out of attrs.
    app = osmand.decode(PUSH_REGISTRATION + b"&lat=1&lon=2", osmand.FORM, {}, NOW_MS)
    (fix,) = valid(app)
    assert app.push_token and fix["attrs"] is None
    # An unfit token alone is named; beside a position it is dropped and the fix kept.
    with pytest.raises(InvalidInput, match="notificationToken must be the app's push token"):
        osmand.decode(b"id=1&notificationToken=", osmand.FORM, {}, NOW_MS)
    app = osmand.decode(b"id=1&lat=1&lon=2&notificationToken=%00", osmand.FORM, {}, NOW_MS)
    assert app.push_token is None and len(valid(app)) == 1


# Traccar's OsmAndProtocolDecoderTest.testDecodeJson: Traccar Client 9 (transistorsoft's location).
TRACCAR_CLIENT_JSON = [
    b'{"location":{"timestamp":"2025-06-15T13:45:12.862Z","coords":{"latitude":37.4219983,"longitude":-122.084,'
    b'"accuracy":5,"speed":0,"heading":-1,"altitude":5},"is_moving":false,"odometer":0,"event":"motionchange",'
    b'"battery":{"level":1,"is_charging":false},"activity":{"type":"still"},"extras":{},'
    b'"_":"&id=48241179&lat=37.4219983&lon=-122.084&timestamp=2025-06-15T13:45:12.862Z&"},"device_id":"48241179"}',
    b'{"location":{"extras":{},"mock":true,"coords":{"speed_accuracy":-1,"speed":-1,"longitude":-122.406417,'
    b'"ellipsoidal_altitude":0,"floor":null,"heading_accuracy":-1,"latitude":37.785834000000001,"accuracy":5,'
    b'"altitude_accuracy":-1,"altitude":0,"heading":-1},"is_moving":false,"age":188,"odometer":0,'
    b'"uuid":"2FB04C65-99CF-42AB-8DD3-EBCB4B108BF8","event":"motionchange","battery":{"level":-1,'
    b'"is_charging":false},"activity":{"type":"unknown","confidence":100},"timestamp":"2025-05-09T04:11:30.579Z"},'
    b'"device_id":"658765"}',
    b'{"location":{"event":"motionchange","is_moving":false,"uuid":"0e9a2473-a9a7-4c00-997b-fb97d2154e75",'
    b'"timestamp":"2021-07-21T08:06:34.444Z","odometer":0,"coords":{"latitude":-6.1148096,"longitude":106.6837015,'
    b'"accuracy":3.8,"speed":18.67,"speed_accuracy":0.26,"heading":63,"heading_accuracy":0.28,"altitude":35.7,'
    b'"altitude_accuracy":3.8},"activity":{"type":"still","confidence":100},"battery":{"is_charging":false,'
    b'"level":0.79},"extras":{}},"device_id":"8737767034"}',
]


def test_traccar_client_json_decodes_with_its_units() -> None:
    first, unknown, moving = (
        valid(osmand.decode(body, "application/json", {}, NOW_MS))[0] for body in TRACCAR_CLIENT_JSON
    )
    assert first["ts"] == 1_749_995_112_862 and first["heading"] is None and first["battery"] == 100
    assert first["attrs"] == {
        "charge": False,
        "motion": False,
        "odometer": 0,
        "event": "motionchange",
        "activity": "still",
    }
    assert unknown["speed"] is None and unknown["heading"] is None and unknown["battery"] is None
    assert unknown["attrs"]["mock"] is True and unknown["attrs"]["uuid"].startswith("2FB04C65")
    assert moving["speed"] == 18.67  # m/s already, not knots
    assert moving["battery"] == pytest.approx(79)
    app = osmand.decode(TRACCAR_CLIENT_JSON[2], "application/json", {}, NOW_MS)
    assert app.token == "8737767034" and app.token_field == "device_id"


# Traccar's OsmAndProtocolDecoderTest.testDecodeJson at traccar/traccar@9e5c458 (2026-08): extras of every
# JSON type, kept in attrs as Traccar keeps them.
TRACCAR_CLIENT_EXTRAS = (
    b'{"location":{"timestamp":"2025-06-15T13:45:12.862Z","coords":{"latitude":37.4219983,"longitude":-122.084,'
    b'"accuracy":5,"speed":0,"heading":-1,"altitude":5},"is_moving":false,"odometer":0,"event":"motionchange",'
    b'"battery":{"level":1,"is_charging":false},"activity":{"type":"still"},"extras":{"device_string_test":'
    b'"long_device_id","device_bool_test":true,"device_bool_false_test":false,"device_integer_test":1,'
    b'"device_integer_twelve_test":12,"device_double_test":1.345,"device_very_long_double_test":1763636.3442},'
    b'"_":"&id=48241179&lat=37.4219983&lon=-122.084&timestamp=2025-06-15T13:45:12.862Z&"},"device_id":"48241179"}'
)


def test_traccar_client_json_extras_and_units_in_si() -> None:
    (fix,) = valid(osmand.decode(TRACCAR_CLIENT_EXTRAS, "application/json", {}, NOW_MS))
    assert (fix["lat"], fix["lon"], fix["ts"]) == (37.4219983, -122.084, 1_749_995_112_862)
    assert (fix["speed"], fix["heading"], fix["accuracy"], fix["altitude"]) == (0, None, 5, 5)
    assert fix["battery"] == 100  # level 1 -> percent
    assert fix["attrs"]["device_integer_twelve_test"] == 12
    assert fix["attrs"]["device_very_long_double_test"] == 1763636.3442
    assert fix["attrs"]["device_bool_false_test"] is False


def test_traccar_client_json_values_it_does_not_know_or_cannot_have_never_refuse_the_fix() -> None:
    body = orjson.loads(TRACCAR_CLIENT_JSON[0])
    body["location"]["coords"].update(speed=None, heading="", accuracy=-1, altitude=None)
    body["location"]["battery"]["level"] = 85  # a percent where a level 0..1 belongs
    (fix,) = valid(osmand.decode(orjson.dumps(body), "application/json", {}, NOW_MS))
    assert [fix[k] for k in ("speed", "heading", "accuracy", "altitude", "battery")] == [None] * 5
    assert fix["attrs"]["battery.level"] == 85  # kept as sent, beside the fix
    # The position itself is still required, and named.
    body["location"]["coords"]["latitude"] = "north"
    app = osmand.decode(orjson.dumps(body), "application/json", {}, NOW_MS)
    assert app.items == ["location.coords.latitude must be a number; got 'north'"]


def test_traccar_client_json_batches_name_the_entry_at_fault() -> None:
    body = (
        b'[{"device_id":"t","location":[{"timestamp":"2025-06-15T13:45:12Z","coords":{"latitude":1,"longitude":2}},'
        b'{"timestamp":"2025-06-15T13:45:13Z"}]}]'
    )
    app = osmand.decode(body, "application/json", {}, NOW_MS)
    assert app.batch and app.token == "t"
    assert isinstance(app.items[0], dict)
    assert app.describe(1, str(app.items[1])) == (
        "location[1]: location.coords is required: an object with latitude and longitude"
    )
    assert app.describe(0, "lat must be between -90 and 90; got 91") == (
        "location[0]: location.coords.latitude must be between -90 and 90; got 91"
    )
    with pytest.raises(InvalidInput, match="device_id must be the same"):
        osmand.decode(b'[{"device_id":"a","location":{}},{"device_id":"b","location":{}}]', "", {}, NOW_MS)


# Traccar's OwnTracksProtocolDecoderTest, and the booklet's location example.
OWNTRACKS = [
    b'{"_type":"location","acc":15,"alt":440,"batt":46,"conn":"w","lat":46.0681247,"lon":11.1512805,"t":"u",'
    b'"tid":"5t","tst":1551874878,"vac":2,"vel":0}',
    b'{"lon":2.29513,"lat":48.85833,"tst":1497349316,"_type":"location","tid":"JJ"}',
    b'{"cog":271,"lon":2.29513,"acc":5,"vel":61,"vac":21,"lat":48.85833,"tst":1497349316,"alt":167,'
    b'"_type":"location","tid":"JJ","t":"u","batt":67}',
    b'{"lat":48.85,"lon":2.295,"_type":"location","tid":"JJ","tst":1497476456}',
    b'{"lon":-122,"acc":5,"created_at":1736161415,"lat":37,"topic":"owntracks/ckrey/22A67880-15C3-41A6-9157-'
    b'25545C7993AC","t":"u","m":1,"tst":1736161169,"conn":"w","alt":0,"_type":"location","tid":"AC"}',
    b'{"topic":"owntracks/qtripp/865284041968706","lat":47.420051,"lon":13.654704,"vel":0,"cog":113,'
    b'"tst":1736519167,"mcc":232,"mnc":1,"lac":"4F4D","cid":"673A","_type":"location","acc":10,"alt":1113,'
    b'"t":"I","don":105,"tid":"CS"}',
]


@pytest.mark.parametrize("body", OWNTRACKS)
def test_owntracks_locations_decode_to_valid_fixes(body: bytes) -> None:
    (fix,) = valid(owntracks.decode(body, "tok"))
    assert fix["ts"] % 1000 == 0 and fix["attrs"]["tid"]


def test_owntracks_units_attrs_and_other_types() -> None:
    fix = valid(owntracks.decode(OWNTRACKS[2], "tok"))[0]
    assert fix["speed"] == pytest.approx(61 * KMH_MS) and fix["heading"] == 271
    assert (fix["accuracy"], fix["altitude"], fix["battery"]) == (5, 167, 67)
    assert fix["attrs"] == {"vac": 21, "tid": "JJ", "t": "u"}
    transition = (
        b'{"_type":"transition","wtst":1425042603,"lat":12.34,"lon":44.5,"tst":1427634603,"event":"enter"}'
    )
    both = b"[" + transition + b"," + OWNTRACKS[1] + b"]"
    app = owntracks.decode(both, "tok")
    assert len(app.items) == 1 and app.indexes == [1] and app.batch  # the transition is skipped
    assert owntracks.decode(b"", "tok").items == []  # sent when a friend is deleted
    with pytest.raises(InvalidInput, match="_type is required"):
        owntracks.decode(b'{"lat":1}', "tok")
    assert owntracks.basic_password("Basic dXNlcjpzZWNyZXQ=") == "secret"  # user:secret
    assert owntracks.basic_password("Basic dXNlcg==") is None and owntracks.basic_password("Bearer x") is None


# OwnTracks Android's parser fixtures (owntracks/android project/app/src/test/resources/fixtures/), as the
# app sends them; expected values in SI units (vel km/h -> m/s).
OWNTRACKS_ANDROID = {
    "location_beacon_trigger.json": (
        b'{"_type":"location","acc":5,"alt":84,"batt":34,"bs":1,"cog":277,"conn":"m",'
        b'"lat":-25.762245,"lon":126.074502,"m":2,"p":100.477,"tid":"AA","t":"b","tst":1721896446,"vac":3,"vel":79}'
    ),
    "location_deserialize_extended.json": (
        b'{"_type":"location","tid":"s5","acc":1600,"alt":0.0,"batt":99,"bs":3,"cog":56,"conn":"w",'
        b'"_id":"inputTestId","lat":52.3153748,"lon":5.0408462,"t":"p","tst":1514455575,"vac":0,'
        b'"inregions":["Testregion1","Testregion2"]}'
    ),
    "location_with_created_at.json": (
        b'{"_type":"location","BSSID":"00:13:10:85:fe:01","SSID":"AndroidWifi","acc":5,"alt":50,'
        b'"batt":100,"bs":0,"conn":"w","created_at":1709037052,"lat":51.0,"lon":0.0,"m":1,"randomId":9302,'
        b'"tid":"aa","tst":1709037003,"vac":0,"vel":0}'
    ),
    "valid_location_message.json": (
        b'{"_type":"location","tst":1778266175,"tid":"xx","lat":0.000,"lon":0.000,"acc":15,"alt":300,'
        b'"vac":0,"cog":0,"vel":0,"batt":98}'
    ),
}


def test_owntracks_android_fixtures_in_si_units() -> None:
    beacon, extended, created, zero = (
        valid(owntracks.decode(body, "tok"))[0] for body in OWNTRACKS_ANDROID.values()
    )
    assert (beacon["lat"], beacon["lon"], beacon["ts"]) == (-25.762245, 126.074502, 1_721_896_446_000)
    assert beacon["speed"] == pytest.approx(79 / 3.6)  # 21.94 m/s
    assert (beacon["heading"], beacon["accuracy"], beacon["altitude"], beacon["battery"]) == (277, 5, 84, 34)
    assert beacon["attrs"] == {"bs": 1, "conn": "m", "m": 2, "p": 100.477, "tid": "AA", "t": "b", "vac": 3}
    assert extended["altitude"] == 0 and extended["accuracy"] == 1600 and extended["speed"] is None
    assert extended["attrs"]["inregions"] == ["Testregion1", "Testregion2"] and extended["attrs"]["_id"]
    assert "bs" not in created["attrs"]  # bs 0: battery state unknown
    assert created["attrs"]["SSID"] == "AndroidWifi" and created["speed"] == 0
    assert (zero["lat"], zero["lon"], zero["heading"]) == (0, 0, 0)  # Null Island is a place
    # A batch as the app queues it (location_multiple_messages.json).
    both = (
        b'[{"_type":"location","tid":"s5","acc":1600,"alt":0.0,"batt":99,"cog":45,"conn":"w","lat":52.3153748,'
        b'"lon":5.0408462,"t":"p","tst":1514455575,"vac":0},{"_type":"location","tid":"s5","acc":95,"alt":0.0,'
        b'"batt":99,"cog":56,"conn":"w","lat":12.3153748,"lon":15.0408462,"t":"p","tst":1514455579,"vac":0}]'
    )
    assert [f["ts"] for f in valid(owntracks.decode(both, "tok"))] == [1_514_455_575_000, 1_514_455_579_000]
    # What the app's parser refuses is refused here too, naming the field (invalid_location_message_zero_
    # timestamp.json, location_empty.json).
    zero_tst = b'{"_type":"location","tst":0,"tid":"xx","lat":0.000,"lon":0.000,"acc":15,"alt":300}'
    assert problems(owntracks.decode(zero_tst, "tok"))[0].startswith("tst must be later than 2000-01-01")
    assert problems(owntracks.decode(b'{"_type":"location"}', "tok")) == ["tst is required"]


# OwnTracks iOS's cases for incoming locations (owntracks/ios OwnTracks/OwnTracksTests/OwnTracksTests.m,
# testIncomingJSON*): a battery or speed that cannot be read never loses the position.
OWNTRACKS_IOS_BATT: dict[str, tuple[int | None, Any]] = {
    "null": (None, None),
    "true": (None, True),
    '"75"': (75, None),
    '{"description":"the battery is empty"}': (None, {"description": "the battery is empty"}),
    "[]": (None, []),
    "-1": (None, None),  # iOS reads -1 as unknown too
}


@pytest.mark.parametrize("batt", OWNTRACKS_IOS_BATT)
def test_owntracks_ios_incoming_json_cases_keep_the_position(batt: str) -> None:
    body = '{"_type":"location","tst":1707470410,"lat":51.4,"lon":8.3,"vel":100,"batt":' + batt + "}"
    (fix,) = valid(owntracks.decode(body.encode(), "tok"))
    battery, kept = OWNTRACKS_IOS_BATT[batt]
    assert (fix["lat"], fix["lon"], fix["ts"]) == (51.4, 8.3, 1_707_470_410_000)
    assert fix["speed"] == pytest.approx(100 / 3.6) and fix["battery"] == battery
    assert fix["attrs"] == (None if kept is None else {"batt": kept})


def test_owntracks_ios_incoming_json_cases_missing_what_a_fix_needs() -> None:
    base = {"_type": "location", "tst": 1707470410, "lat": 51.4, "lon": 8.3, "vel": 100, "batt": 75}
    (fix,) = valid(owntracks.decode(orjson.dumps(base | {"vel": None}), "tok"))
    assert fix["speed"] is None and fix["battery"] == 75
    for name in ("lat", "lon", "tst"):
        assert problems(owntracks.decode(orjson.dumps(base | {name: None}), "tok")) == [f"{name} is required"]
    with pytest.raises(InvalidInput, match="_type is required"):
        owntracks.decode(orjson.dumps(base | {"_type": None}), "tok")
    assert owntracks.decode(b"[]", "tok").items == []
    with pytest.raises(InvalidInput, match="an OwnTracks message must be a JSON object; got NoneType"):
        owntracks.decode(b"null", "tok")


def test_owntracks_answer_carries_text_as_a_transition_both_apps_show() -> None:
    messages = [
        Message("1", "d", "Pick-up at door 4", "desk", 1_795_687_200_500),
        Message("2", "d", {"_type": "cmd", "action": "reportLocation"}, "desk", 1_795_687_201_000),
        Message("3", "d", {"text": "Call the office"}, "desk", 1_795_687_202_000),
        Message("4", "d", {"_type": "msg", "desc": "no app shows this"}, "desk", 1_795_687_203_000),
    ]
    answer = owntracks.answer(messages, (52.52, 13.405))
    assert answer[0] == {
        "_type": "transition",
        "event": "enter",
        "desc": "Pick-up at door 4",
        "tid": "desk",
        "tst": 1_795_687_200,
        "wtst": 1_795_687_200,
        "lat": 52.52,
        "lon": 13.405,
        "acc": 0,
    }
    assert answer[1] == {"_type": "cmd", "action": "reportLocation"}  # an app object goes as it is
    assert answer[2]["desc"] == "Call the office"  # the dispatcher map's {"text": ...}
    # A `_type` neither app handles would show nothing: it goes as text instead.
    assert (
        answer[3]["_type"] == "transition"
        and answer[3]["desc"] == '{"_type":"msg","desc":"no app shows this"}'
    )
    # What iOS requires of a transition (owntracks/ios OwnTracks/OwnTracks/message.json: _type in its
    # enum, event "enter" or "leave", acc, lat, lon, tst, wtst; acc, tst and wtst integers) and what
    # its notification needs (OwnTracking.m processTransitionMessage: tid and desc strings, t not "b").
    for item in answer:
        assert item["_type"] in owntracks.APP_TYPES
        if item["_type"] == "transition":
            assert item["event"] in ("enter", "leave") and "t" not in item
            assert all(type(item[k]) is int for k in ("acc", "tst", "wtst"))
            assert all(isinstance(item[k], float) for k in ("lat", "lon"))
            assert isinstance(item["desc"], str) and isinstance(item["tid"], str)
    # No position known yet: the apps still need one.
    (nowhere,) = owntracks.answer(messages[:1], None)
    assert (nowhere["lat"], nowhere["lon"]) == (0.0, 0.0)
