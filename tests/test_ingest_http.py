"""HTTP ingest for ready-made tracking apps: requests shaped as Traccar Client (classic query and POST,
the JSON of version 9+), OsmAnd and OwnTracks (HTTP mode) send them, against real PostGIS; units
converted, bad tokens and bodies refused, viewers and fences served as for Socket.IO.

The requests alone go to the in-process app (`http`); a server process serves the tests that also read
its log, connect a Socket.IO viewer, or need settings of their own (a one-fix queue, a fence).

Shapes are copied from the apps' sources and docs: Traccar Client Android `ProtocolFormatter.kt`
(query fields, POST with an empty body), Traccar Client 9 `preferences.dart` locationTemplate and
traccar.org/osmand (JSON), owntracks.org/booklet/tech/json and /tech/http (OwnTracks)."""

from __future__ import annotations

import asyncio
import base64
import json
import math
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import gpxpy
import httpx
import pytest
from harness import (
    ADMIN_TOKEN,
    REALDATA,
    Client,
    Server,
    add_device,
    add_viewer,
    http_client,
    now_ms,
    start_server,
    uid,
    viewer_client,
    web_client,
)

OSMAND = "/api/ingest/osmand"
OWNTRACKS = "/api/ingest/owntracks"
KNOT = 1852 / 3600  # m/s


def basic(password: str, user: str = "jjolie") -> dict[str, str]:
    """The Authorization header OwnTracks sends (user and password from its Identification settings)."""
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def positions(server: Server | httpx.AsyncClient, device: str, **query: Any) -> list[dict[str, Any]]:
    """The stored fixes of `device`, oldest first, as flat dicts."""
    async with http_client(server) as http:
        r = await http.get(
            f"/api/devices/{device}/positions",
            params=query,
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
    assert r.status_code == 200, r.text
    return [
        {"lon": f["geometry"]["coordinates"][0], "lat": f["geometry"]["coordinates"][1], **f["properties"]}
        for f in r.json()["features"]
    ]


async def attrs(db: asyncpg.Connection, device: str) -> list[Any]:
    """The stored attrs of `device`'s fixes, oldest first (not in the HTTP API)."""
    rows = await db.fetch("SELECT attrs FROM fixes WHERE device_id = $1 ORDER BY ts", device)
    return [json.loads(r[0]) if r[0] is not None else None for r in rows]


def traccar_json(token: str, ts_ms: int, lat: float, lon: float, **coords: Any) -> dict[str, Any]:
    """A body as Traccar Client 9 POSTs it (its locationTemplate inside transistorsoft's envelope)."""
    timestamp = datetime.fromtimestamp(ts_ms / 1000, UTC).isoformat(timespec="milliseconds")
    location = {
        "timestamp": timestamp.replace("+00:00", "Z"),
        "coords": {
            "latitude": lat,
            "longitude": lon,
            "accuracy": 4.9,
            "speed": 3.5,
            "heading": 271.3,
            "altitude": 412.0,
            **coords,
        },
        "is_moving": True,
        "odometer": 1520.3,
        "event": "motionchange",
        "battery": {"level": 0.85, "is_charging": False},
        "activity": {"type": "in_vehicle"},
        "extras": {},
        "_": f"&id={token}&lat={lat}&lon={lon}&timestamp={timestamp}&",
    }
    return {"location": location, "device_id": token}


def owntracks_location(ts_s: int, lat: float, lon: float, **extra: Any) -> dict[str, Any]:
    """A location message as the OwnTracks booklet documents it."""
    return {
        "_type": "location",
        "acc": 12,
        "alt": 212,
        "batt": 77,
        "bs": 1,
        "cog": 178,
        "conn": "w",
        "created_at": ts_s + 2,
        "lat": lat,
        "lon": lon,
        "m": 1,
        "t": "u",
        "tid": "JJ",
        "tst": ts_s,
        "vac": 3,
        "vel": 36,
        **extra,
    }


@pytest.fixture
def http(app_http: httpx.AsyncClient) -> httpx.AsyncClient:
    """The in-process app (tests/in_process.py): these tests need HTTP only, not the server process."""
    return app_http


# --- OsmAnd / Traccar Client ----------------------------------------------------------------------


async def test_traccar_client_classic_post_stores_the_fix_with_knots_as_m_s(
    http: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    device, token = await add_device(http, uid("fleet"))
    ts_s = now_ms() // 1000 - 60
    # Traccar Client (Android, up to 8.x) POSTs its fields in the query string with an empty body.
    query = (
        f"id={token}&timestamp={ts_s}&lat=46.2044&lon=6.1432&speed=10.0&bearing=92.5"
        "&altitude=380.0&accuracy=6.5&batt=87.0&mock=true&hdop=1.2&alarm=sos"
    )
    r = await http.post(f"{OSMAND}?{query}")
    assert r.status_code == 200, r.text
    assert r.content == b""
    (p,) = await positions(http, device)
    assert (p["lat"], p["lon"], p["ts"]) == (46.2044, 6.1432, ts_s * 1000)
    assert p["speed"] == pytest.approx(10 * KNOT, rel=1e-6)  # 5.14444 m/s
    assert p["heading"] == pytest.approx(92.5)
    assert (p["altitude"], p["accuracy"], p["battery"]) == (380.0, 6.5, 87.0)
    assert await attrs(db, device) == [{"mock": True, "hdop": 1.2, "alarm": "sos"}]


async def test_osmand_get_form_post_and_every_timestamp_form(http: httpx.AsyncClient) -> None:
    device, token = await add_device(http, uid("fleet"))
    base = now_ms() // 1000 * 1000 - 600_000
    iso = datetime.fromtimestamp((base + 3000) / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    # GET with unix seconds; GET with milliseconds and `location=lat,lon` (OsmAnd's own app style);
    # a form POST with an ISO 8601 time and `heading` instead of `bearing`.
    r = await http.get(
        OSMAND, params={"id": token, "lat": "1.5", "lon": "2.5", "timestamp": str(base // 1000)}
    )
    assert r.status_code == 200, r.text
    r = await http.get(
        OSMAND, params={"id": token, "location": "1.6,2.6", "timestamp": str(base + 1500), "speed": "0"}
    )
    assert r.status_code == 200, r.text
    r = await http.post(
        OSMAND,
        content=f"id={token}&lat=1.7&lon=2.7&timestamp={iso}&heading=10&speed=1.5",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200, r.text
    got = await positions(http, device)
    assert [(p["ts"], p["lat"], p["lon"]) for p in got] == [
        (base, 1.5, 2.5),
        (base + 1500, 1.6, 2.6),
        (base + 3000, 1.7, 2.7),
    ]
    assert got[1]["speed"] == 0 and got[2]["speed"] == pytest.approx(1.5 * KNOT, rel=1e-6)
    assert got[2]["heading"] == 10


async def test_osmand_without_timestamp_takes_the_server_time(http: httpx.AsyncClient) -> None:
    device, token = await add_device(http, uid("fleet"))
    before = now_ms()
    r = await http.get(OSMAND, params={"id": token, "lat": "10", "lon": "20"})
    after = now_ms()
    assert r.status_code == 200, r.text
    (p,) = await positions(http, device)
    assert before <= p["ts"] <= after


async def test_traccar_client_json_body_and_batches(http: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    device, token = await add_device(http, uid("fleet"))
    t = now_ms() - 60_000
    r = await http.post(OSMAND, json=traccar_json(token, t, 48.8566, 2.3522))
    assert r.status_code == 200, r.text
    assert r.content == b""
    (p,) = await positions(http, device)
    assert (p["lat"], p["lon"], p["ts"]) == (48.8566, 2.3522, t)
    assert p["speed"] == pytest.approx(3.5)  # m/s in this shape, not knots
    assert p["heading"] == pytest.approx(271.3) and p["accuracy"] == pytest.approx(4.9)
    assert p["battery"] == pytest.approx(85) and p["altitude"] == 412
    assert await attrs(db, device) == [
        {
            "charge": False,
            "motion": True,
            "odometer": 1520.3,
            "event": "motionchange",
            "activity": "in_vehicle",
        }
    ]
    # -1 marks unknown values: left out, not refused.
    r = await http.post(OSMAND, json=traccar_json(token, t + 1000, 48.857, 2.353, speed=-1, heading=-1))
    assert r.status_code == 200, r.text
    # A batch (batchSync): `location` is an array; and an array of whole bodies.
    batch = [traccar_json(token, t + 2000 + i * 1000, 48.86, 2.35 + i / 1000)["location"] for i in range(3)]
    r = await http.post(OSMAND, json={"location": batch, "device_id": token})
    assert r.status_code == 200, r.text
    bodies = [traccar_json(token, t + 9000 + i * 1000, 48.87, 2.36) for i in range(2)]
    r = await http.post(OSMAND, json=bodies)
    assert r.status_code == 200, r.text
    got = await positions(http, device)
    assert [p["ts"] for p in got] == [t, t + 1000, t + 2000, t + 3000, t + 4000, t + 9000, t + 10000]
    assert got[1]["speed"] is None and got[1]["heading"] is None


async def test_wrong_or_missing_tokens_are_401(http: httpx.AsyncClient) -> None:
    device, token = await add_device(http, uid("fleet"))
    ts_s = now_ms() // 1000
    for query in [
        {"id": "not-a-token", "lat": "1", "lon": "2", "timestamp": str(ts_s)},
        {"lat": "1", "lon": "2", "timestamp": str(ts_s)},
        {"id": "", "lat": "1", "lon": "2"},
    ]:
        r = await http.get(OSMAND, params=query)
        assert r.status_code == 401, r.text
        assert "id" in r.json()["error"]
    r = await http.post(OSMAND, json=traccar_json("not-a-token", now_ms(), 1, 2))
    assert r.status_code == 401 and "device_id" in r.json()["error"]
    body = traccar_json(token, now_ms(), 1, 2)
    del body["device_id"]
    r = await http.post(OSMAND, json=body)
    assert r.status_code == 401 and "device_id" in r.json()["error"]
    assert await positions(http, device) == []


async def test_device_tokens_in_query_strings_stay_out_of_the_server_log(
    server: Server, server_http: httpx.AsyncClient
) -> None:
    """The OsmAnd protocol puts the token in the URL: neither an accepted nor a refused one is logged."""
    device, token = await add_device(server, uid("fleet"))
    ts_s = now_ms() // 1000
    r = await server_http.get(OSMAND, params={"id": token, "lat": "1", "lon": "2", "timestamp": str(ts_s)})
    assert r.status_code == 200
    r = await server_http.get(
        OSMAND, params={"id": token, "lat": "100", "lon": "2", "timestamp": str(ts_s + 1)}
    )
    assert r.status_code == 400
    wrong = token[::-1]
    assert (await server_http.get(OSMAND, params={"id": wrong, "lat": "1", "lon": "2"})).status_code == 401
    assert len(await positions(server, device)) == 1  # the log has caught up with these requests
    log = server.log_text()
    assert "device connected" in log or "started" in log  # the server does log
    assert token not in log and wrong not in log


async def test_malformed_osmand_requests_are_400_naming_the_field(http: httpx.AsyncClient) -> None:
    device, token = await add_device(http, uid("fleet"))
    ts_s = str(now_ms() // 1000 - 5)
    cases: list[tuple[dict[str, str], str]] = [
        ({"lat": "abc", "lon": "2", "timestamp": ts_s}, "lat must be a number"),
        ({"lat": "95", "lon": "2", "timestamp": ts_s}, "lat must be between -90 and 90"),
        ({"lon": "2", "timestamp": ts_s}, "lat is required"),
        ({"lat": "1", "lon": "2", "timestamp": "yesterday"}, "timestamp must be unix seconds"),
        ({"lat": "1", "lon": "2", "timestamp": "2026-11-26T10:00:00"}, "timestamp needs a UTC offset"),
        ({"lat": "1", "lon": "2", "timestamp": "5"}, "timestamp must be later than 2000-01-01"),
        ({"lat": "1", "lon": "2", "timestamp": str(int(ts_s) + 7200)}, "timestamp is 7"),
        ({"location": "1;2", "timestamp": ts_s}, "location must be 'lat,lon'"),
    ]
    for fields, error in cases:
        r = await http.get(OSMAND, params={"id": token, **fields})
        assert r.status_code == 400, (fields, r.text)
        assert error in r.json()["error"], (fields, r.text)
    t = now_ms() - 1000
    for body, content_type, error in [
        (b'{"location": {"timestamp": ', "application/json", "not valid JSON"),
        (b'"a string"', "application/json", "must be an object with location"),
        (b"--x\r\n", "multipart/form-data; boundary=x", "send the fields in the query string"),
    ]:
        r = await http.post(f"{OSMAND}?id={token}", content=body, headers={"Content-Type": content_type})
        assert r.status_code == 400 and error in r.json()["error"], r.text
    no_coords = traccar_json(token, t, 1, 2)
    del no_coords["location"]["coords"]
    bad_lat = traccar_json(token, t, 1, 2, latitude="north")
    for document, error in [
        (no_coords, "location.coords is required"),
        (bad_lat, "location.coords.latitude must be a number"),
        (traccar_json(token, t, 1, 200), "location.coords.longitude must be between -180 and 180"),
        ({"device_id": token}, "location is required"),
    ]:
        r = await http.post(OSMAND, json=document)
        assert r.status_code == 400 and error in r.json()["error"], r.text
    assert await positions(http, device) == []
    # In a batch the bad location is named by its index and the good ones are still stored.
    good, bad = traccar_json(token, t, 1, 2)["location"], traccar_json(token, t + 1, 95, 2)["location"]
    r = await http.post(OSMAND, json={"location": [good, bad], "device_id": token})
    assert r.status_code == 200, r.text
    assert [p["ts"] for p in await positions(http, device)] == [t]
    r = await http.post(OSMAND, json={"location": [bad, bad], "device_id": token})
    assert r.status_code == 400 and "location[0]: location.coords.latitude must be" in r.json()["error"]


async def test_values_an_app_does_not_know_or_cannot_have_never_refuse_its_fix(
    http: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    """The apps send -1, empty, null or NaN for what they do not know (Traccar Client, OwnTracks,
    CoreLocation, Android); they resend a refused request as it is, so a bad optional field would block
    their queue for good. Only the position and its time are required."""
    device, token = await add_device(http, uid("fleet"))
    t = now_ms() // 1000 * 1000 - 60_000
    unknown = {"speed": "-1", "bearing": "", "accuracy": "NaN", "batt": "-1", "altitude": "null"}
    r = await http.get(
        OSMAND, params={"id": token, "lat": "1", "lon": "2", "timestamp": str(t // 1000), **unknown}
    )
    assert r.status_code == 200, r.text
    unfit = {"speed": "fast", "bearing": "400", "batt": "101"}
    r = await http.get(
        OSMAND, params={"id": token, "lat": "1", "lon": "2", "timestamp": str(t // 1000 + 1), **unfit}
    )
    assert r.status_code == 200, r.text
    level = traccar_json(token, t + 2000, 1, 2, speed=-1, heading=-1, accuracy=-1)
    level["location"]["battery"]["level"] = 85  # a percent where 0..1 belongs
    assert (await http.post(OSMAND, json=level)).status_code == 200
    extras: list[dict[str, Any]] = [{"batt": -1, "vel": -1, "cog": -1, "acc": -1, "vac": -1}]
    extras.append({"batt": "75", "cog": 400})
    for i, extra in enumerate(extras):
        body = owntracks_location(t // 1000 + 3 + i, 1.0, 2.0, **extra)
        r = await http.post(OWNTRACKS, json=body, headers=basic(token))
        assert r.status_code == 200 and r.json() == [], r.text
    got = await positions(http, device)
    assert [p["ts"] for p in got] == [t, t + 1000, t + 2000, t + 3000, t + 4000]
    fields = ("speed", "heading", "accuracy", "battery")
    assert [[p[k] for k in fields] for p in got[:4]] == [[None] * 4] * 4
    assert got[4]["heading"] is None and got[4]["battery"] == 75 and got[4]["speed"] == pytest.approx(10.0)
    kept = await attrs(db, device)
    assert kept[0] is None  # unknown: nothing to keep
    assert kept[1] == {"speed": "fast", "bearing": "400", "batt": "101"}  # unfit: kept as sent
    assert kept[2]["battery.level"] == 85
    assert "vac" not in kept[3] and kept[4]["cog"] == 400


async def test_traccar_client_push_registration_is_200_and_the_token_kept(
    server: Server, server_http: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    """Traccar Client POSTs `id` and `notificationToken` alone when its Firebase token changes
    (traccar/traccar-client lib/push_service.dart); Traccar keeps it on the device. No fix, no refusal."""
    device, token = await add_device(server, uid("fleet"))
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    for push in ("fcm%3Afirst", "fcm%3Asecond"):  # a newer token replaces the older
        r = await server_http.post(OSMAND, content=f"id={token}&notificationToken={push}", headers=form)
        assert r.status_code == 200 and r.content == b"", r.text
    stored = "SELECT token, app FROM push_tokens WHERE device_id = $1"
    assert [tuple(row) for row in await db.fetch(stored, device)] == [("fcm:second", "traccar-client")]
    assert await positions(server, device) == []
    # Beside a position it is kept too, and stays out of the fix's attrs.
    ts_s = now_ms() // 1000 - 5
    query = {"id": token, "lat": "1", "lon": "2", "timestamp": str(ts_s), "notificationToken": "fcm:third"}
    assert (await server_http.get(OSMAND, params=query)).status_code == 200
    assert [p["ts"] for p in await positions(server, device)] == [ts_s * 1000]
    assert await attrs(db, device) == [None]
    assert [tuple(row) for row in await db.fetch(stored, device)] == [("fcm:third", "traccar-client")]
    # Not the device's token: 401 as for a fix; an empty token and nothing else: 400 naming the field.
    r = await server_http.post(OSMAND, content="id=nobody&notificationToken=x", headers=form)
    assert r.status_code == 401, r.text
    r = await server_http.post(OSMAND, content=f"id={token}&notificationToken=", headers=form)
    assert r.status_code == 400 and r.json()["error"].startswith("notificationToken must be"), r.text
    log = [line for line in server.log_text().splitlines() if f"device={device}" in line]
    assert sum("push token registered" in line for line in log) == 3, log
    assert not [line for line in log if "not read" in line or "reject" in line], log


async def test_a_duplicate_is_200_and_stored_once(http: httpx.AsyncClient) -> None:
    device, token = await add_device(http, uid("fleet"))
    ts_s = now_ms() // 1000 - 30
    query = {"id": token, "lat": "3.1", "lon": "4.2", "timestamp": str(ts_s), "speed": "2"}
    for _ in range(2):  # the app resends when it did not see the answer
        r = await http.get(OSMAND, params=query)
        assert r.status_code == 200, r.text
    body = owntracks_location(ts_s, 3.1, 4.2)
    r = await http.post(OWNTRACKS, json=body, headers=basic(token))
    assert r.status_code == 200 and r.json() == []
    got = await positions(http, device)
    assert [(p["ts"], p["lat"]) for p in got] == [(ts_s * 1000, 3.1)]


# --- OwnTracks -------------------------------------------------------------------------------------


async def test_owntracks_location_is_stored_with_km_h_as_m_s(
    http: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    device, token = await add_device(http, uid("fleet"))
    ts_s = now_ms() // 1000 - 120
    r = await http.post(
        OWNTRACKS,
        json=owntracks_location(ts_s, 51.5072, -0.1276, SSID="office", BSSID="aa:bb:cc:dd:ee:ff"),
        headers={**basic(token), "X-Limit-U": "jjolie", "X-Limit-D": "phone"},
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json") and r.json() == []
    (p,) = await positions(http, device)
    assert (p["lat"], p["lon"], p["ts"]) == (51.5072, -0.1276, ts_s * 1000)
    assert p["speed"] == pytest.approx(10.0)  # 36 km/h
    assert (p["heading"], p["accuracy"], p["altitude"], p["battery"]) == (178, 12, 212, 77)
    assert await attrs(db, device) == [
        {
            "bs": 1,
            "conn": "w",
            "created_at": ts_s + 2,
            "m": 1,
            "t": "u",
            "tid": "JJ",
            "vac": 3,
            "SSID": "office",
            "BSSID": "aa:bb:cc:dd:ee:ff",
        }
    ]


async def test_owntracks_other_messages_are_200_and_ignored(http: httpx.AsyncClient) -> None:
    device, token = await add_device(http, uid("fleet"))
    ts_s = now_ms() // 1000 - 100
    others: list[dict[str, Any]] = [
        {"_type": "lwt", "tst": ts_s},
        {
            "_type": "transition",
            "wtst": ts_s - 9000,
            "lat": 12.34,
            "lon": 44.5,
            "tst": ts_s,
            "acc": 130,
            "tid": "JJ",
            "event": "enter",
            "desc": "my Indian restaurant",
            "t": "c",
        },
        {"_type": "waypoint", "desc": "Home", "lat": 1.0, "lon": 2.0, "rad": 50, "tst": ts_s},
        {"_type": "waypoints", "waypoints": [{"_type": "waypoint", "desc": "Home", "tst": ts_s}]},
        {"_type": "card", "name": "Jane", "face": "iVBORw0KGgo="},
        {"_type": "status", "iOS": {"version": "17.0"}},
        {"_type": "steps", "steps": 1200, "from": ts_s - 3600, "to": ts_s},
        {"_type": "encrypted", "data": "c2VjcmV0"},
    ]
    for message in others:
        r = await http.post(OWNTRACKS, json=message, headers=basic(token))
        assert r.status_code == 200 and r.json() == [], (message["_type"], r.text)
    # A zero-length body (the app deleting a friend) is ignored too.
    r = await http.post(OWNTRACKS, content=b"", headers=basic(token))
    assert r.status_code == 200 and r.json() == []
    assert await positions(http, device) == []
    # In an array, only the locations are stored.
    r = await http.post(
        OWNTRACKS,
        json=[owntracks_location(ts_s, 5.0, 6.0), others[1], owntracks_location(ts_s + 5, 5.1, 6.1)],
        headers=basic(token),
    )
    assert r.status_code == 200 and r.json() == []
    assert [p["ts"] for p in await positions(http, device)] == [ts_s * 1000, ts_s * 1000 + 5000]


async def test_owntracks_wrong_credentials_are_401_with_a_basic_challenge(http: httpx.AsyncClient) -> None:
    device, token = await add_device(http, uid("fleet"))
    body = owntracks_location(now_ms() // 1000, 1.0, 2.0)
    for headers in [
        {},
        basic("not-a-token"),
        {"Authorization": "Basic " + base64.b64encode(token.encode()).decode()},  # no user:password
        {"Authorization": "Basic %%%"},
        {"Authorization": f"Bearer {token}"},
        basic(""),
    ]:
        r = await http.post(OWNTRACKS, json=body, headers=headers)
        assert r.status_code == 401, (headers, r.text)
        assert r.headers["www-authenticate"] == 'Basic realm="tracker"'
        assert "password" in r.json()["error"]
    assert await positions(http, device) == []
    # Any user name will do: the token alone names the device.
    r = await http.post(OWNTRACKS, json=body, headers=basic(token, user="someone-else"))
    assert r.status_code == 200


async def test_malformed_owntracks_bodies_are_400_naming_the_field(http: httpx.AsyncClient) -> None:
    device, token = await add_device(http, uid("fleet"))
    ts_s = now_ms() // 1000 - 10
    no_tst = owntracks_location(ts_s, 1.0, 2.0)
    del no_tst["tst"]
    no_lat = owntracks_location(ts_s, 1.0, 2.0)
    del no_lat["lat"]
    cases: list[tuple[Any, str]] = [
        (no_tst, "tst is required"),
        (no_lat, "lat is required"),
        (owntracks_location(ts_s + 7200, 1.0, 2.0), "tst is 7"),
        (owntracks_location(ts_s, 1.0, 2.0, tst="noon"), "tst must be unix seconds"),
        ({"lat": 1.0, "lon": 2.0, "tst": ts_s}, "_type is required"),
        ([1, 2], "must be a JSON object"),
    ]
    for body, error in cases:
        r = await http.post(OWNTRACKS, json=body, headers=basic(token))
        assert r.status_code == 400, (body, r.text)
        assert error in r.json()["error"], (body, r.text)
    r = await http.post(OWNTRACKS, content=b'{"_type": "location", "lat": ', headers=basic(token))
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
    r = await http.post(
        OWNTRACKS, json=[{**owntracks_location(ts_s, 1.0, 2.0), "lat": 95}, no_tst], headers=basic(token)
    )
    assert r.status_code == 400 and r.json()["error"].startswith("message[0]: lat must be between")
    assert await positions(http, device) == []


# --- the same core path as Socket.IO -------------------------------------------------------------


async def test_a_subscribed_viewer_receives_http_ingested_fixes(
    server: Server, server_http: httpx.AsyncClient, clients: list[Client]
) -> None:
    fleet = uid("fleet")
    osmand_device, osmand_token = await add_device(server, fleet)
    owntracks_device, owntracks_token = await add_device(server, fleet)
    viewer = await viewer_client(server, await add_viewer(server, [fleet]), clients)
    assert await viewer.call("subscribe", {"fleet": fleet}) == {"ok": True}
    assert await viewer.next("positions") == []
    ts_s = now_ms() // 1000
    r = await server_http.get(
        OSMAND,
        params={"id": osmand_token, "lat": "40.0", "lon": "-3.7", "timestamp": str(ts_s), "speed": "20"},
    )
    assert r.status_code == 200, r.text
    r = await server_http.post(
        OWNTRACKS, json=owntracks_location(ts_s, 40.1, -3.8, vel=72), headers=basic(owntracks_token)
    )
    assert r.status_code == 200, r.text
    seen: dict[str, dict[str, Any]] = {}
    while len(seen) < 2:
        for p in await viewer.next("positions"):
            seen[p["device"]] = p
    assert (seen[osmand_device]["lat"], seen[osmand_device]["ts"]) == (40.0, ts_s * 1000)
    assert seen[osmand_device]["speed"] == pytest.approx(20 * KNOT, rel=1e-6)
    assert (seen[owntracks_device]["lat"], seen[owntracks_device]["ts"]) == (40.1, ts_s * 1000)
    assert seen[owntracks_device]["speed"] == pytest.approx(20.0)  # 72 km/h


FENCE = """
fences:
  - id: yard
    polygon: [[13.40, 52.52], [13.41, 52.52], [13.41, 52.53], [13.40, 52.53]]
rules:
  - id: into-yard
    on: enter
    fences: [yard]
"""


@pytest.fixture(scope="module")
def fenced_server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with one fence and a queue of one fix: any request of two fixes finds it full."""
    tmp = tmp_path_factory.mktemp("ingest-http")
    (tmp / "geofences").mkdir()
    (tmp / "geofences" / "yard.yaml").write_text(FENCE)
    s = start_server(database_url, tmp, {"TRACKER_INGEST_QUEUE_MAX": "1"})
    yield s
    s.stop()


async def test_fence_events_fire_for_http_ingested_fixes(
    fenced_server: Server, clients: list[Client]
) -> None:
    server = fenced_server
    fleet = uid("fleet")
    osmand_device, osmand_token = await add_device(server, fleet)
    owntracks_device, owntracks_token = await add_device(server, fleet)
    viewer = await viewer_client(server, await add_viewer(server, [fleet]), clients)
    assert await viewer.call("subscribe", {"fleet": fleet}) == {"ok": True}
    ts_s = now_ms() // 1000 - 60
    async with web_client(base_url=server.url) as http:
        for lat, lon, dt in [(52.50, 13.30, 0), (52.525, 13.405, 10)]:  # outside, then inside
            r = await http.get(
                OSMAND, params={"id": osmand_token, "lat": lat, "lon": lon, "timestamp": ts_s + dt}
            )
            assert r.status_code == 200, r.text
            body = owntracks_location(ts_s + dt, lat, lon)
            r = await http.post(OWNTRACKS, json=body, headers=basic(owntracks_token))
            assert r.status_code == 200, r.text
        # The 200 means committed, fence events included.
        r = await http.get(
            "/api/events",
            params={"fence": "yard", "from": (ts_s - 1) * 1000},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
    events = r.json()["events"]
    assert sorted((e["device"], e["type"], e["ts"]) for e in events if e["fleet"] == fleet) == sorted(
        [
            (osmand_device, "enter", (ts_s + 10) * 1000),
            (owntracks_device, "enter", (ts_s + 10) * 1000),
        ]
    )
    live = [await viewer.next("geofence"), await viewer.next("geofence")]
    assert {(e["device"], e["rule"], e["lat"], e["lon"]) for e in live} == {
        (osmand_device, "into-yard", 52.525, 13.405),
        (owntracks_device, "into-yard", 52.525, 13.405),
    }


async def test_a_full_queue_is_503_with_retry_after_and_stores_nothing(fenced_server: Server) -> None:
    server = fenced_server
    device, token = await add_device(server, uid("fleet"))
    t = now_ms() - 10_000
    two = [traccar_json(token, t + i, 1.0, 2.0)["location"] for i in range(2)]
    async with web_client(base_url=server.url) as http:
        r = await http.post(OSMAND, json={"location": two, "device_id": token})
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"] == "1" and "busy" in r.json()["error"]
        body = [owntracks_location(t // 1000, 1.0, 2.0), owntracks_location(t // 1000 + 1, 1.0, 2.0)]
        r = await http.post(OWNTRACKS, json=body, headers=basic(token))
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert await positions(server, device, **{"from": t - 1}) == []


# --- real data ------------------------------------------------------------------------------------


def real_track() -> list[tuple[int, float, float, float | None]]:
    """A real hike (gpxpy's cerknicko-jezero.gpx, 296 fixes in 8 segments) as (ts ms, lat, lon,
    speed m/s from the previous fix of its segment), shifted to end a minute ago."""
    gpx = gpxpy.parse((REALDATA / "tracks" / "gpxpy" / "cerknicko-jezero.gpx").read_text())
    out: list[tuple[int, float, float, float | None]] = []
    for track in gpx.tracks:
        for segment in track.segments:
            previous: gpxpy.gpx.GPXTrackPoint | None = None
            for point in segment.points:
                assert point.time is not None
                speed = None
                if previous is not None and previous.time is not None and point.time > previous.time:
                    seconds = (point.time - previous.time).total_seconds()
                    distance = point.distance_2d(previous)
                    assert distance is not None
                    speed = distance / seconds
                out.append((int(point.time.timestamp() * 1000), point.latitude, point.longitude, speed))
                previous = point
    shift = now_ms() - 60_000 - out[-1][0]
    shift -= shift % 1000  # keep whole seconds, as the apps send them
    return [(ts + shift, lat, lon, speed) for ts, lat, lon, speed in out]


async def test_a_real_track_through_each_app_format_is_stored_as_sent(http: httpx.AsyncClient) -> None:
    track = real_track()
    assert len(track) == 296
    fleet = uid("fleet")
    (osmand, osmand_token), (json_device, json_token), (ot, ot_token) = [
        await add_device(http, fleet) for _ in range(3)
    ]
    # Classic OsmAnd: one GET per fix (concurrently, as a buffered app flushes), speed in knots.
    limit = asyncio.Semaphore(16)

    async def one(ts: int, lat: float, lon: float, speed: float | None) -> int:
        query = {"id": osmand_token, "lat": repr(lat), "lon": repr(lon), "timestamp": str(ts // 1000)}
        if speed is not None:
            query["speed"] = repr(speed / KNOT)
        async with limit:
            return (await http.get(OSMAND, params=query)).status_code

    assert set(await asyncio.gather(*(one(*fix) for fix in track))) == {200}
    # Traccar Client 9: the whole backlog in one batch; OwnTracks: an array of locations, vel in km/h.
    locations = [
        traccar_json(json_token, ts, lat, lon, speed=speed if speed is not None else -1)["location"]
        for ts, lat, lon, speed in track
    ]
    r = await http.post(OSMAND, json={"location": locations, "device_id": json_token})
    assert r.status_code == 200, r.text
    messages = [
        owntracks_location(ts // 1000, lat, lon, vel=round(speed * 3.6) if speed is not None else None)
        for ts, lat, lon, speed in track
    ]
    r = await http.post(OWNTRACKS, json=messages, headers=basic(ot_token))
    assert r.status_code == 200, r.text
    window = {"from": track[0][0], "to": track[-1][0] + 1}  # `to` is exclusive
    for device in (osmand, json_device, ot):
        got = await positions(http, device, **window)
        assert [(p["ts"], p["lat"], p["lon"]) for p in got] == [(ts, lat, lon) for ts, lat, lon, _ in track]
        for p, (_, _, _, speed) in zip(got, track, strict=True):
            if speed is None:
                assert p["speed"] is None
            elif device == ot:  # OwnTracks sends whole km/h
                assert p["speed"] == pytest.approx(round(speed * 3.6) / 3.6, rel=1e-5, abs=1e-6)
            else:
                assert math.isclose(p["speed"], speed, rel_tol=1e-5, abs_tol=1e-6)
