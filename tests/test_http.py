"""Over HTTP: devices, positions with cursor paging, admin, health, metrics, OpenAPI.

Most tests call the in-process app (tests/in_process.py) and feed it fixes over HTTP; the two that need a
device connected over Socket.IO (`online`, the connected-devices gauge) call the server process."""

from __future__ import annotations

import re
from typing import Any

import asyncpg
import httpx
import pytest
from harness import ADMIN_TOKEN, SHARED, Client, Server, add_device, add_viewer, device_client, now_ms, uid


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def http(app_http: httpx.AsyncClient) -> httpx.AsyncClient:
    """The in-process app: what these tests ask of the server is HTTP only."""
    return app_http


async def send_fixes(http: httpx.AsyncClient, token: str, fixes: list[dict[str, Any]]) -> None:
    """Send `fixes` ({lat, lon, ts, accuracy?}) in one request, as Traccar Client sends a backlog (a JSON
    batch to the OsmAnd endpoint), and check it is answered 200: committed."""
    locations = [
        {
            "timestamp": f["ts"],
            "coords": {"latitude": f["lat"], "longitude": f["lon"], "accuracy": f.get("accuracy")},
        }
        for f in fixes
    ]
    r = await http.post("/api/ingest/osmand", json={"location": locations, "device_id": token})
    assert r.status_code == 200, r.text


async def test_devices_lists_only_granted_fleets(
    server: Server, server_http: httpx.AsyncClient, clients: list[Client]
) -> None:
    mine, theirs = uid("fleet"), uid("fleet")
    my_device, token = await add_device(server, mine)
    their_device, _ = await add_device(server, theirs)
    await (await device_client(server, token, clients)).call("fix", {"lat": 1.0, "lon": 2.0, "ts": now_ms()})
    viewer = await add_viewer(server, [mine])
    r = await server_http.get("/api/devices", headers=bearer(viewer))
    assert r.status_code == 200
    devices = r.json()["devices"]
    assert [d["id"] for d in devices] == [my_device]
    assert devices[0]["online"] is True and devices[0]["last"]["lat"] == 1.0
    everyone = (await server_http.get("/api/devices", headers=bearer(ADMIN_TOKEN))).json()["devices"]
    assert {my_device, their_device} <= {d["id"] for d in everyone}
    idle = [d for d in everyone if d["id"] == their_device][0]
    assert idle["online"] is False and idle["last"] is None


async def test_positions_page_through_a_window_with_a_cursor(http: httpx.AsyncClient) -> None:
    fleet = uid("fleet")
    device, token = await add_device(http, fleet)
    t = now_ms() - 3_600_000
    await send_fixes(
        http,
        token,
        [{"lat": 40 + i / 100, "lon": -3.7, "ts": t + i * 1000, "accuracy": 5} for i in range(25)],
    )
    viewer = await add_viewer(http, [fleet])
    got: list[int] = []
    cursor = None
    pages = 0
    while True:
        query = {"from": t + 2000, "to": t + 22_000, "limit": 7} | ({"cursor": cursor} if cursor else {})
        r = await http.get(f"/api/devices/{device}/positions", params=query, headers=bearer(viewer))
        assert r.status_code == 200, r.text
        page = r.json()
        assert page["type"] == "FeatureCollection"
        got += [f["properties"]["ts"] for f in page["features"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    # from is inclusive, to exclusive: fixes 2..21.
    assert got == [t + i * 1000 for i in range(2, 22)]
    assert pages == 3
    first = (
        await http.get(
            f"/api/devices/{device}/positions", params={"from": t, "limit": 1}, headers=bearer(viewer)
        )
    ).json()["features"][0]
    assert first["geometry"] == {"type": "Point", "coordinates": [-3.7, 40.0]}
    assert first["properties"]["accuracy"] == 5 and len(first["properties"]["cell"]) == 15
    r = await http.get(f"/api/devices/{device}/positions", params={"from": t}, headers=bearer(viewer))
    assert len(r.json()["features"]) == 25  # every fix sent was stored


async def test_positions_default_window_is_the_last_24_hours(http: httpx.AsyncClient) -> None:
    device, token = await add_device(http, uid("fleet"))
    t = now_ms()
    await send_fixes(
        http,
        token,
        [{"lat": 1.0, "lon": 1.0, "ts": t - 25 * 3_600_000}, {"lat": 1.0, "lon": 1.0, "ts": t - 1000}],
    )
    r = await http.get(f"/api/devices/{device}/positions", headers=bearer(ADMIN_TOKEN))
    assert [f["properties"]["ts"] for f in r.json()["features"]] == [t - 1000]


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ({"limit": "ten"}, "limit must be an integer"),
        ({"limit": "0"}, "limit must be between 1 and 10000"),
        ({"from": "yesterday"}, "from must be milliseconds"),
        ({"to": "2026-11-26T10:00:00"}, "to needs a UTC offset"),
        ({"from": "2026-11-26T10:00:00Z", "to": "2026-11-25T10:00:00Z"}, "from must not be later than to"),
        ({"cursor": "!!!"}, "cursor is not valid"),
        ({"cursor": "eHl6"}, "cursor is not valid"),
    ],
)
async def test_bad_parameters_are_400_naming_the_parameter(
    http: httpx.AsyncClient, query: dict[str, str], words: str
) -> None:
    device, _ = await add_device(http, uid("fleet"))
    r = await http.get(f"/api/devices/{device}/positions", params=query, headers=bearer(ADMIN_TOKEN))
    assert r.status_code == 400
    assert words in r.json()["error"]


async def test_scoping_and_auth_statuses(http: httpx.AsyncClient) -> None:
    mine, theirs = uid("fleet"), uid("fleet")
    their_device, _ = await add_device(http, theirs)
    viewer = await add_viewer(http, [mine])
    assert (await http.get("/api/devices")).status_code == 401
    assert (await http.get("/api/devices", headers={"Authorization": "Basic abc"})).status_code == 401
    assert (await http.get("/api/devices", headers=bearer("wrong-token"))).status_code == 401
    r = await http.get(f"/api/devices/{their_device}/positions", headers=bearer(viewer))
    assert r.status_code == 403 and their_device in r.json()["error"]
    r = await http.get("/api/devices/no-such-device/positions", headers=bearer(viewer))
    assert r.status_code == 404
    r = await http.get("/api/devices/bad id!/positions", headers=bearer(viewer))
    assert r.status_code == 400 and "device id" in r.json()["error"]
    r = await http.get("/api/nothing-here")
    assert r.status_code == 404 and "error" in r.json()


async def test_admin_endpoints_need_the_admin_token_and_check_bodies(http: httpx.AsyncClient) -> None:
    viewer = await add_viewer(http, [uid("fleet")])
    body = {"id": uid("dev"), "fleet": "f"}
    assert (await http.post("/api/admin/devices", json=body)).status_code == 401
    assert (await http.post("/api/admin/devices", json=body, headers=bearer(viewer))).status_code == 403
    admin = bearer(ADMIN_TOKEN)
    r = await http.post("/api/admin/devices", json=body, headers=admin)
    assert r.status_code == 201 and len(r.json()["token"]) >= 40
    r = await http.post("/api/admin/devices", json=body, headers=admin)
    assert r.status_code == 409 and body["id"] in r.json()["error"]
    for bad, words in [
        ({"id": "bad id", "fleet": "f"}, "id must be"),
        ({"id": uid("dev")}, "fleet must be"),
        ({"id": uid("dev"), "fleet": "f", "name": 7}, "name must be a string"),
    ]:
        r = await http.post("/api/admin/devices", json=bad, headers=admin)
        assert r.status_code == 400 and words in r.json()["error"], r.text
    r = await http.post("/api/admin/devices", content=b"{not json", headers=admin)
    assert r.status_code == 400 and "JSON" in r.json()["error"]
    for bad in [{"name": "x", "fleets": []}, {"name": "x", "fleets": [{}]}, {"name": "x", "fleets": "some"}]:
        r = await http.post("/api/admin/viewers", json=bad, headers=admin)
        assert r.status_code == 400 and "fleets" in r.json()["error"], r.text
    r = await http.post("/api/admin/viewers", json={"name": "", "fleets": "all"}, headers=admin)
    assert r.status_code == 400 and "name" in r.json()["error"]


async def test_tokens_are_stored_hashed(http: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    device, token = await add_device(http, uid("fleet"))
    stored = await db.fetchval("SELECT token_hash FROM devices WHERE id = $1", device)
    assert token.encode() not in bytes(stored) and len(stored) == 32


async def test_health_readiness_and_metrics(
    server: Server, server_http: httpx.AsyncClient, clients: list[Client]
) -> None:
    assert (await server_http.get("/healthz")).json() == {"ok": True}
    assert (await server_http.get("/readyz")).status_code == 200
    _, token = await add_device(server, uid("fleet"))
    d = await device_client(server, token, clients)
    await d.call("fix", [{"lat": 1, "lon": 1, "ts": now_ms()}, {"lat": 100, "lon": 1, "ts": now_ms()}])
    text = (await server_http.get("/metrics")).text
    values = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    assert values["tracker_fixes_accepted_total"] >= 1
    assert values["tracker_fixes_rejected_total"] >= 1
    assert values["tracker_connected_devices"] >= 1
    assert values["tracker_ingest_commit_seconds_count"] >= 1
    assert values["tracker_ingest_ack_seconds_count"] >= 1
    assert "tracker_ingest_queue_fixes" in values and "tracker_positions_events_total" in values


async def test_openapi_documents_every_route(http: httpx.AsyncClient) -> None:
    from starlette.routing import Route

    from tracker.api import routes

    doc = (await http.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    documented = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}
    served = {(r.path, m) for r in routes() if isinstance(r, Route) for m in (r.methods or ()) if m != "HEAD"}
    assert served == documented
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert op.get("summary") and op.get("responses"), f"{method} {path} lacks summary or responses"
    # Every HTTP endpoint the contract names is served and documented, with its query parameters.
    # Part 1 of the contract is what is built; part 2 (from "# Part 2") is what comes next.
    contract = (SHARED / "CONTRACT.md").read_text().split("\n# Part 2", 1)[0]
    named = re.findall(r"`(GET|POST)(?:\|POST)? (/[a-z/{}._-]*)(\?[^`\[]*)?", contract)
    for method, path, query in named:
        assert (path, method) in documented, f"{method} {path} of the contract is not served"
        op = doc["paths"][path][method.lower()]
        names = set()
        for p in op.get("parameters", []):
            if "$ref" in p:
                p = doc["components"]["parameters"][p["$ref"].rsplit("/", 1)[1]]
            names.add(p["name"])
        for name in re.findall(r"[?&]([a-z_]+)", query or ""):
            assert name in names, f"{method} {path}: parameter {name} of the contract is not documented"
    assert ("/api/devices/{id}/trips", "GET") in documented  # named after /stops without its own GET


async def test_the_app_leaves_the_socket_io_clients_of_its_process_their_json(
    http: httpx.AsyncClient,
) -> None:
    """The app's Socket.IO server encodes with orjson through a packet class of its own, so a Python
    client in the same process still sends NaN and integers beyond 64 bits (test_ingest's clients do)."""
    from socketio.packet import EVENT, Packet

    encoded = Packet(EVENT, ["fix", {"lat": float("nan"), "big": 10**30}], namespace="/device").encode()
    assert "NaN" in encoded and str(10**30) in encoded
