"""Trying rules on history (`POST /api/geofences/dry-run`, `tracker geofences dry-run`) against a real
server: the dry-run of the rules in force gives exactly the events live ingest fired on the same fixes;
it sees only the token's fleets, reports a bad file by line, reads no file outside the geofences folder,
skips flagged fixes, and streams a window of many fixes."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from harness import (
    ADMIN_TOKEN,
    ROOT,
    Client,
    Server,
    add_device,
    add_viewer,
    connected_device,
    device_client,
    now_ms,
    own_server,
    uid,
    web_client,
    write_rules,
)

RULES = """
fences:
  - id: depot
    tags: [depot]
    polygon: [[13.40, 52.52], [13.41, 52.52], [13.41, 52.53], [13.40, 52.53]]
  - id: hub
    circle: {center: [13.45, 52.50], radius_m: 150}
  - id: wall
    polygon: [[13.42, 52.49], [13.4205, 52.49], [13.4205, 52.54], [13.42, 52.54]]
rules:
  - {id: arrive, on: enter, fence_tags: [depot]}
  - {id: leave, on: exit, fences: [depot], confirm_fixes: 2}
  - {id: stay, on: dwell, fences: [depot], dwell_s: 5}
  - {id: fast, on: speeding, fences: [depot, hub], max_speed_kmh: 30}
  - {id: hub-in, on: enter, fences: [hub]}
  - {id: jump, on: cross, fences: [wall]}
"""
OUT = {"lat": 52.50, "lon": 13.30}
IN = {"lat": 52.525, "lon": 13.405}
HUB = {"lat": 52.50, "lon": 13.45}
WEST_OF_WALL = {"lat": 52.515, "lon": 13.415}
EAST_OF_WALL = {"lat": 52.515, "lon": 13.425}
DEPOT_ONLY = """
fences:
  - id: depot
    polygon: [[13.40, 52.52], [13.41, 52.52], [13.41, 52.53], [13.40, 52.53]]
rules:
  - {id: arrive, on: enter, fences: [depot]}
  - {id: leave, on: exit, fences: [depot]}
"""


def auth(token: str = ADMIN_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def key(e: dict[str, Any]) -> tuple[Any, ...]:
    return (e["ts"], e["device"], e["type"], e["rule"], e["fence"])


async def dry_run(
    server: Server, body: dict[str, Any], token: str = ADMIN_TOKEN, **headers: str
) -> httpx.Response:
    async with web_client(base_url=server.url, timeout=120) as http:
        return await http.post("/api/geofences/dry-run", json=body, headers={**auth(token), **headers})


def journey(t: int) -> list[list[dict[str, Any]]]:
    """Fixes (two batches) that fire every rule of RULES once: enter, speeding, dwell, exit after two
    fixes outside, a crossing of the wall between two fixes, and the hub."""
    return [
        [
            {**OUT, "ts": t},
            {**IN, "ts": t + 1000},
            {**IN, "ts": t + 2000, "speed": 20.0},
            {**IN, "ts": t + 8000},
        ],
        [
            {**OUT, "ts": t + 9000},
            {**OUT, "ts": t + 10_000},
            {**WEST_OF_WALL, "ts": t + 11_000},
            {**EAST_OF_WALL, "ts": t + 12_000},
            {**HUB, "ts": t + 13_000, "speed": 10.0},
        ],
    ]


@pytest.fixture
def ruled(database_url: str, tmp_path: Path) -> Iterator[Server]:
    """A server of the test's own with RULES in force."""
    write_rules(tmp_path, RULES)
    with own_server(database_url, tmp_path) as s:
        yield s


async def test_dry_run_of_the_rules_in_force_gives_the_live_events(
    ruled: Server, clients: list[Client], tmp_path: Path, database_url: str
) -> None:
    fleet = uid("fleet")
    t = now_ms() - 60_000
    devices = []
    for offset in (0, 500):  # two devices, interleaved in time
        device, token = await add_device(ruled, fleet)
        d = await device_client(ruled, token, clients)
        for batch in journey(t + offset):
            assert (await d.call("fix", batch))["accepted"] == len(batch)
        devices.append(device)
    window = {"from": t - 1, "to": t + 60_000}
    live: list[dict[str, Any]] = []
    async with web_client(base_url=ruled.url) as http:
        for device in devices:
            r = await http.get("/api/events", params={"device": device, **window}, headers=auth())
            live += r.json()["events"]
    assert {e["rule"] for e in live} == {"arrive", "leave", "stay", "fast", "hub-in", "jump"}

    r = await dry_run(ruled, {"yaml": RULES, **window, "devices": devices})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["errors"] == []
    # In fix order; a fix's own events in the order live ingest stored them.
    in_order = sorted(live, key=lambda e: (e["ts"], e["device"]))
    assert [key(e) for e in body["events"]] == [key(e) for e in in_order]
    assert all("id" not in e for e in body["events"])

    # The rules in force by name: a posted rule on the server's fence, with no fence of its own.
    only_rule = "rules:\n  - {id: hub-again, on: enter, fences: [hub]}\n"
    r = await dry_run(ruled, {"yaml": only_rule, **window, "devices": devices})
    assert [(e["rule"], e["device"]) for e in r.json()["events"]] == [("hub-again", d) for d in devices]

    # The CLI prints the same events, one per line.
    rules_file = tmp_path / "try.yaml"
    rules_file.write_text(RULES)
    argv = [sys.executable, "-m", "tracker", "geofences", "dry-run", str(rules_file)]
    argv += ["--from", str(window["from"]), "--to", str(window["to"])]
    argv += [a for d in devices for a in ("--device", d)]
    argv += ["--database-url", database_url, "--geofences", str(tmp_path / "geofences")]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert lines == body["events"]


async def test_dry_run_sees_only_the_tokens_fleets(server: Server, clients: list[Client]) -> None:
    mine, theirs = uid("fleet"), uid("fleet")
    t = now_ms() - 30_000
    ids = []
    for fleet in (mine, theirs):
        device, d = await connected_device(server, clients, fleet)
        assert (await d.call("fix", [{**OUT, "ts": t}, {**IN, "ts": t + 1000}]))["accepted"] == 2
        ids.append(device)
    token = await add_viewer(server, [mine])
    window = {"from": t - 1, "to": t + 10_000}
    r = await dry_run(server, {"yaml": DEPOT_ONLY, **window}, token)
    assert [(e["device"], e["type"]) for e in r.json()["events"]] == [(ids[0], "enter")]
    r = await dry_run(server, {"yaml": DEPOT_ONLY, **window, "devices": [ids[1]]}, token)
    assert r.status_code == 403, r.text
    r = await dry_run(server, {"yaml": DEPOT_ONLY, **window, "devices": [uid("nobody")]}, token)
    assert r.status_code == 404, r.text
    async with web_client(base_url=server.url) as http:
        r = await http.post("/api/geofences/dry-run", json={"yaml": DEPOT_ONLY})
    assert r.status_code == 401


async def test_bad_requests_and_files_are_refused(server: Server, tmp_path: Path) -> None:
    t = now_ms()
    r = await dry_run(server, {"yaml": "fences: [\n", "from": t - 1000, "to": t})
    assert r.status_code == 200
    assert r.json()["events"] == [] and r.json()["errors"][0].startswith("posted.yaml:")
    bad_rule = (
        "fences:\n  - id: a\n    circle: {center: [13.4, 52.5], radius_m: 10}\n"
        "rules:\n  - id: r\n    on: teleport\n    fences: [a]\n"
    )
    errors = (await dry_run(server, {"yaml": bad_rule, "from": t - 1000, "to": t})).json()["errors"]
    assert len(errors) == 1 and errors[0].startswith("posted.yaml:6: rules[0].on: ")
    unknown = "rules:\n  - {id: r, on: enter, fences: [nowhere]}\n"
    errors = (await dry_run(server, {"yaml": unknown})).json()["errors"]
    assert errors == ["posted.yaml:2: rules[0].fences[0]: unknown fence 'nowhere'"]
    for path in ("/etc/passwd", "../../etc/passwd", "sub/x.geojson", str(tmp_path / "x.geojson")):
        text = f"fences:\n  - id: a\n    geojson: {path}\n"
        errors = (await dry_run(server, {"yaml": text})).json()["errors"]
        assert len(errors) == 1 and "must be a plain file name" in errors[0], errors
        assert "root:" not in errors[0]
    errors = (await dry_run(server, {"yaml": "fences:\n  - id: a\n    geojson: passwd\n"})).json()["errors"]
    assert errors[0].startswith("posted.yaml:3: ") and "cannot read passwd" in errors[0]
    alias = "a: &x [1, 2]\nb: [*x, *x]\n"
    assert "aliases" in (await dry_run(server, {"yaml": alias})).json()["errors"][0]
    for body, field in (
        ({"yaml": DEPOT_ONLY, "from": 0, "to": 40 * 86_400_000}, "31 days"),
        ({"yaml": DEPOT_ONLY, "from": t, "to": t - 1}, "from"),
        ({"yaml": "x" * (1 << 20 | 1)}, "yaml"),
        ({"yaml": 5}, "yaml"),
        ({"yaml": DEPOT_ONLY, "devices": ["a"] * 5001}, "devices"),
        ({"yaml": DEPOT_ONLY, "devices": ["bad id!"]}, "devices[0]"),
        ({"yaml": DEPOT_ONLY, "from": "yesterday"}, "from"),
    ):
        r = await dry_run(server, body)
        assert r.status_code == 400 and field in r.json()["error"], (body.keys(), r.text)


async def test_flagged_fixes_are_skipped(
    server: Server, clients: list[Client], db: asyncpg.Connection
) -> None:
    device, d = await connected_device(server, clients)
    t = now_ms() - 30_000
    fixes = [{**OUT, "ts": t}, {**IN, "ts": t + 1000}, {**IN, "ts": t + 2000}, {**OUT, "ts": t + 3000}]
    assert (await d.call("fix", fixes))["accepted"] == 4
    body = {"yaml": DEPOT_ONLY, "from": t, "to": t + 10_000, "devices": [device]}
    before = (await dry_run(server, body)).json()["events"]
    assert [(e["type"], e["ts"]) for e in before] == [("enter", t + 1000), ("exit", t + 3000)]
    await db.execute(
        "UPDATE fixes SET flag = 'jump' "
        "WHERE device_id = $1 AND ts = timestamptz 'epoch' + $2 * interval '1 ms'",
        device,
        t + 1000,
    )
    after = (await dry_run(server, body)).json()["events"]
    assert [(e["type"], e["ts"]) for e in after] == [("enter", t + 2000), ("exit", t + 3000)]


async def test_a_window_of_many_fixes_streams(server: Server, database_url: str) -> None:
    """120,000 fixes over two hours (20 devices at 1 fix/s), read in several chunks: every device enters
    and leaves the depot once a minute; JSON and NDJSON give the same events."""
    fleet = uid("fleet")
    devices = [(await add_device(server, fleet))[0] for _ in range(20)]
    start = (now_ms() // 1000 - 3 * 3600) * 1000
    from tracker.store import Database

    db = await Database.connect(database_url, min_size=1, max_size=1)
    try:
        await db.ensure_partitions({start // 86_400_000, (start + 7_200_000) // 86_400_000})
        await db.pool.execute(
            """
            INSERT INTO fixes (device_id, ts, geom, cell)
            SELECT d, timestamptz 'epoch' + ($2::bigint + s * 1000 + i) * interval '1 ms',
                   ST_SetSRID(ST_MakePoint(CASE WHEN s % 60 < 30 THEN 13.405 ELSE 13.30 END, 52.525), 4326), 0
            FROM unnest($1::text[]) WITH ORDINALITY AS u(d, i), generate_series(0, 7199) AS s
            """,
            devices,
            start,
        )
    finally:
        await db.close()
    body = {"yaml": DEPOT_ONLY, "from": start, "to": start + 7_200_000}
    async with web_client(base_url=server.url, timeout=120) as http:
        async with http.stream(
            "POST", "/api/geofences/dry-run", json={**body, "devices": devices}, headers=auth()
        ) as r:
            assert r.status_code == 200
            parts = [part async for part in r.aiter_raw()]
        streamed = orjson.loads(b"".join(parts))
        assert len(parts) > 1  # written as the chunks came, not at once
        r = await http.post(
            "/api/geofences/dry-run",
            json={**body, "devices": devices},
            headers={**auth(), "Accept": "application/x-ndjson"},
        )
        assert r.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in r.text.splitlines()]
    events = streamed["events"]
    assert streamed["errors"] == []
    assert len(events) == 20 * 240  # an enter and an exit a minute, two hours, 20 devices
    assert lines == events
    assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)
    assert {e["type"] for e in events[:20]} == {"enter"} and events[0]["ts"] == start + 1


async def test_near_rules_run_on_history_and_are_bounded(server: Server, clients: list[Client]) -> None:
    """A near rule tried on history pairs the devices as they moved, names the other device, and a posted
    near rule's distance is bounded (each fix measures every device that close)."""
    tag = uid("n")
    van, van_token = await add_device(server, f"vans-{tag}")
    bike, bike_token = await add_device(server, f"bikes-{tag}")
    v = await device_client(server, van_token, clients)
    b = await device_client(server, bike_token, clients)
    t = now_ms() - 60_000
    m = 1 / 67_800  # a metre of longitude at 52.5° N
    for i, east in enumerate((300, 200, 30, 20, 200)):  # the bike rides up to the parked van and away
        assert (await v.call("fix", {**IN, "ts": t + 2000 * i}))["accepted"] == 1
        assert (
            await b.call("fix", {"lat": IN["lat"], "lon": IN["lon"] + east * m, "ts": t + 2000 * i + 500})
        )["accepted"] == 1
    rule = (
        f"rules:\n  - {{id: meet, on: near, fleets: [vans-{tag}], near_fleets: [bikes-{tag}], "
        "distance_m: 50}\n"
    )
    body = {"yaml": rule, "from": t, "to": t + 20_000, "devices": [van, bike]}
    events = (await dry_run(server, body)).json()
    assert events["errors"] == []
    # Whichever of the two fixes of that second came last in its slice of history fires it.
    got = [(e["type"], {e["device"], e["other"]}, e["ts"]) for e in events["events"]]
    assert [(kind, pair) for kind, pair, _ in got] == [("near", {van, bike}), ("far", {van, bike})]
    assert got[0][2] in (t + 4000, t + 4500) and got[1][2] in (t + 8000, t + 8500)
    far = rule.replace("distance_m: 50", "distance_m: 50000")
    errors = (await dry_run(server, {**body, "yaml": far})).json()["errors"]
    assert len(errors) == 1 and "distance_m must be at most 5000 in a dry-run" in errors[0], errors
