"""Device-to-device proximity (`on: near`): the pure detector on the live index, and end to end two
devices of two fleets approaching and parting, on one process and on a cluster (each event once)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from harness import (
    ADMIN_TOKEN,
    Client,
    Server,
    add_device,
    add_viewer,
    device_client,
    now_ms,
    own_cluster,
    own_server,
    uid,
    until,
    viewer_client,
    web_client,
    write_rules,
)

from tracker.geofence.detect import detect
from tracker.geofence.proximity import NearPairs, fix_position, pair_key
from tracker.geofence.ruleset import RuleSet
from tracker.index import LiveIndex
from tracker.model import Fix, Rule

LAT, LON = 52.52, 13.40
M_LON = 1 / 67_800  # a metre east, in degrees, at 52.5° N


def _fix(device: str, fleet: str, ts: int, east_m: float) -> Fix:
    return Fix(device, fleet, ts, LAT, LON + east_m * M_LON)


class World:
    """A fleet on the live index, moved through the real detector batch by batch."""

    def __init__(self, rules: list[Rule]) -> None:
        self.rules = RuleSet((), rules)
        self.index = LiveIndex(9)
        self.pairs = NearPairs()
        self.ts = 1_000_000

    def move(self, *moves: tuple[str, str, float]) -> list[tuple[str, str, str, str]]:
        self.ts += 1000
        fixes = [_fix(d, fleet, self.ts, east) for d, fleet, east in moves]
        detection = detect(self.rules, {}, {}, fixes, near=(self.index, self.pairs))
        if detection.near is not None:
            detection.near.apply_to(self.pairs)
        self.index.load((fix_position(f), 0) for f in fixes)
        return [(e.type, e.rule, e.device, e.other or "") for e in detection.events]


def test_near_once_per_approach_with_a_margin_before_far() -> None:
    w = World(
        [
            Rule(
                "meet",
                "near",
                (),
                fleets=frozenset({"vans"}),
                near_fleets=frozenset({"bikes"}),
                distance_m=50,
            )
        ]
    )
    assert w.move(("van", "vans", 0), ("bike", "bikes", 500)) == []
    assert w.move(("bike", "bikes", 60)) == []
    assert w.move(("bike", "bikes", 45)) == [("near", "meet", "bike", "van")]
    assert w.move(("bike", "bikes", 40)) == []  # still near: nothing again
    assert w.move(("bike", "bikes", 58)) == []  # past 50 m but within 60 m: not far yet
    assert w.move(("van", "vans", -5)) == [("far", "meet", "van", "bike")]  # 63 m: the van moved off
    assert w.move(("van", "vans", 20)) == [("near", "meet", "van", "bike")]
    assert w.pairs.since == {pair_key("meet", "van", "bike"): w.ts}


def test_a_pair_within_one_fleet_fires_once_even_when_both_move() -> None:
    w = World([Rule("close", "near", (), fleets=frozenset({"couriers"}), distance_m=30)])
    assert w.move(("a", "couriers", 0), ("b", "couriers", 200), ("c", "vans", 10)) == []
    # Both move in the same batch, each into the other's old absence: the batch's own positions count.
    assert w.move(("a", "couriers", 100), ("b", "couriers", 110)) == [("near", "close", "a", "b")]
    assert w.move(("a", "couriers", 200), ("b", "couriers", 0)) == [("far", "close", "a", "b")]


def test_fleets_outside_the_rule_are_never_paired() -> None:
    w = World(
        [
            Rule(
                "meet",
                "near",
                (),
                fleets=frozenset({"vans"}),
                near_fleets=frozenset({"bikes"}),
                distance_m=50,
            )
        ]
    )
    assert w.move(("v1", "vans", 0), ("v2", "vans", 10), ("x", "cars", 5)) == []
    assert w.move(("b", "bikes", 20)) == [("near", "meet", "b", "v1"), ("near", "meet", "b", "v2")]


RULES = """
fences:
  - id: depot
    polygon: [[13.40, 52.52], [13.41, 52.52], [13.41, 52.53], [13.40, 52.53]]
rules:
  - id: meet
    on: near
    fleets: [vans-{tag}]
    near_fleets: [bikes-{tag}]
    distance_m: 50
"""


@pytest.fixture(params=["single", "cluster"])
def world(database_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Server, str]]:
    tag = uid("t")
    write_rules(tmp_path, RULES.format(tag=tag))
    if request.param == "cluster":
        with own_cluster(database_url, tmp_path, 2) as c:
            yield c, tag
        return
    with own_server(database_url, tmp_path) as s:
        yield s, tag


async def test_near_and_far_end_to_end_once_each(
    world: tuple[Server, str], clients: list[Client], database_url: str
) -> None:
    """The van and the bike send through different processes of a cluster: whichever sees the approach
    first stores it, the other finds the pair near already; each event is stored and delivered once."""
    server, tag = world
    van, van_token = await add_device(server, f"vans-{tag}")
    bike, bike_token = await add_device(server, f"bikes-{tag}")
    # One viewer per fleet: whichever device's fix fires the event, both are told.
    tokens = {
        van: await add_viewer(server, [f"vans-{tag}"]),
        bike: await add_viewer(server, [f"bikes-{tag}"]),
    }
    vans_viewer = await viewer_client(server, tokens[van], clients)
    assert (await vans_viewer.call("subscribe", {"fleet": f"vans-{tag}"}))["ok"]
    bikes_viewer = await viewer_client(server, tokens[bike], clients)
    assert (await bikes_viewer.call("subscribe", {"fleet": f"bikes-{tag}"}))["ok"]
    v = await device_client(server, van_token, clients)
    b = await device_client(server, bike_token, clients)
    t = now_ms() - 120_000

    async def events(kind: str) -> list[dict[str, object]]:
        async with web_client(
            base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        ) as http:
            r = await http.get("/api/events", params={"rule": "meet", "from": t - 1, "to": t + 200_000})
        # The rule id is the same in the module's other tests, which share the database: keep to this pair.
        return [e for e in r.json()["events"] if e["type"] == kind and e["device"] in (van, bike)]

    assert (await v.call("fix", {"lat": LAT, "lon": LON, "ts": t}))["accepted"] == 1
    # Both keep reporting, side by side; with processes, each learns the other's moves a broadcast
    # interval late, so the approach is seen within a fix or two.
    step = 0

    async def both(east_m: float) -> None:
        nonlocal step
        step += 1
        await v.call("fix", {"lat": LAT, "lon": LON, "ts": t + 1000 * step})
        await b.call("fix", {"lat": LAT, "lon": LON + east_m * M_LON, "ts": t + 1000 * step})

    await both(20)

    async def near_seen() -> bool:
        await both(20)
        return bool(await events("near"))

    await until(near_seen)
    for _ in range(3):
        await both(20)
    near = await events("near")
    assert len(near) == 1 and {near[0]["device"], near[0]["other"]} == {van, bike}
    assert near[0]["fence"] is None
    for viewer in (vans_viewer, bikes_viewer):
        delivered = await viewer.next("geofence")
        assert delivered["id"] == near[0]["id"] and delivered["type"] == "near"
    # It is stored once, under the fleet of the device whose fix fired it, and listed to both sides: by
    # fleet and by either device (the other side's half of /api/events).
    for own, token in tokens.items():
        async with web_client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}) as http:
            for params in ({}, {"device": own}):
                r = await http.get("/api/events", params={"rule": "meet", "from": t - 1, **params})
                assert r.status_code == 200, r.text
                assert [e["id"] for e in r.json()["events"]] == [near[0]["id"]], (own, params)

    async def far_seen() -> bool:
        await both(500)
        return bool(await events("far"))

    await until(far_seen)
    for _ in range(3):
        await both(500)
    assert len(await events("far")) == 1 and len(await events("near")) == 1
    # The bike moves to another fleet: its encounters stay with the fleet it had then (they showed that
    # fleet the van), and the new fleet's viewers see none of them.
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("UPDATE devices SET fleet = $1 WHERE id = $2", f"moved-{tag}", bike)
    finally:
        await conn.close()
    moved = await add_viewer(server, [f"moved-{tag}"])
    for token, seen in ((tokens[bike], 2), (moved, 0)):
        async with web_client(server.url, headers={"Authorization": f"Bearer {token}"}) as http:
            r = await http.get("/api/events", params={"rule": "meet", "from": t - 1})
        assert r.status_code == 200, r.text
        assert len(r.json()["events"]) == seen, r.json()
