"""The app decoders against the apps' own published requests, in process: Traccar's
OsmAndProtocolDecoderTest and OwnTracksProtocolDecoderTest (github.com/traccar/traccar, src/test/java/
org/traccar/protocol/), the JSON of Traccar Client 9 (traccar.org/osmand) and the OwnTracks booklet
(owntracks.org/booklet/tech/json). Each decoded fix also passes the one validation every fix takes."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

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
    assert unknown["speed"] is None and unknown["heading"] is None and "battery" not in unknown
    assert unknown["attrs"]["mock"] is True and unknown["attrs"]["uuid"].startswith("2FB04C65")
    assert moving["speed"] == 18.67  # m/s already, not knots
    assert moving["battery"] == pytest.approx(79)
    app = osmand.decode(TRACCAR_CLIENT_JSON[2], "application/json", {}, NOW_MS)
    assert app.token == "8737767034" and app.token_field == "device_id"


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


def test_owntracks_answer_carries_messages_as_the_app_shows_them() -> None:
    messages = [
        Message("1", "d", {"text": "Pick-up at door 4"}, "desk", 1_795_687_200_500),
        Message("2", "d", {"_type": "cmd", "action": "reportLocation"}, "desk", 1_795_687_201_000),
    ]
    assert owntracks.answer(messages) == [
        {
            "_type": "msg",
            "title": "Message from desk",
            "desc": '{"text":"Pick-up at door 4"}',
            "tst": 1_795_687_200,
        },
        {"_type": "cmd", "action": "reportLocation"},
    ]
