"""Two deployments on one Redis never hear each other (TRACKER_REDIS_NAMESPACE).

Redis pub/sub ignores database numbers, so before the namespace two trackers on one Redis (staging and
production, say) shared every Socket.IO room and live position: a viewer of fleet `f` on one saw the other's
fleet `f`. Here deployment A is two processes on one database and deployment B one process on another,
with the same fleet and device ids; A's viewer gets A's positions through Redis and never B's."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from harness import (
    ADMIN_TOKEN,
    Client,
    add_device,
    add_viewer,
    create_database,
    device_client,
    drop_database,
    now_ms,
    own_cluster,
    uid,
    viewer_client,
    web_client,
    write_rules,
)

A_LAT, B_LAT, LON = 52.50, 48.10, 13.40


@pytest.fixture
async def second_database(pg_base: str) -> AsyncIterator[str]:
    url = await create_database(pg_base, "deployment_b")
    yield url
    await drop_database(pg_base, url)


@pytest.mark.timeout(120)
async def test_deployments_sharing_a_redis_never_see_each_other(
    database_url: str, second_database: str, tmp_path: Path, clients: list[Client]
) -> None:
    fleet, device = uid("fleet"), uid("van")  # the same ids in both deployments
    write_rules(tmp_path / "a", "")
    write_rules(tmp_path / "b", "")
    with (
        own_cluster(database_url, tmp_path / "a", 2) as a,
        own_cluster(second_database, tmp_path / "b", 1) as b,
    ):
        a1, a2 = a.processes
        (b1,) = b.processes
        tokens = {}
        for name, p in (("a", a1), ("b", b1)):
            tokens[name] = (await add_device(p, fleet, device))[1]
        watcher_a = await viewer_client(a1, await add_viewer(a1, [fleet]), clients)
        watcher_b = await viewer_client(b1, await add_viewer(b1, [fleet]), clients)
        for watcher in (watcher_a, watcher_b):
            assert (await watcher.call("subscribe", {"fleet": fleet}))["ok"]
            await watcher.next("positions")  # the snapshot
        van_a = await device_client(a2, tokens["a"], clients)
        van_b = await device_client(b1, tokens["b"], clients)
        t = now_ms()
        # B's van moves (newer than A's), and B's own viewer sees it: B has published it to Redis.
        assert (await van_b.call("fix", {"lat": B_LAT, "lon": LON, "ts": t}))["accepted"] == 1
        assert [p["lat"] for p in await watcher_b.next("positions")] == [B_LAT]
        # Then A's van moves on A's other process: its position reaches A's viewer through Redis, and
        # nothing of B's came first.
        assert (await van_a.call("fix", {"lat": A_LAT, "lon": LON, "ts": t - 1000}))["accepted"] == 1
        assert [p["lat"] for p in await watcher_a.next("positions")] == [A_LAT]
        assert watcher_a.pending("positions") == []
        # Neither live index took the other deployment's move of a device of the same id.
        for p, here, there in ((a1, A_LAT, B_LAT), (a2, A_LAT, B_LAT), (b1, B_LAT, A_LAT)):
            async with web_client(p.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as http:
                for lat, found in ((here, [device]), (there, [])):
                    r = await http.get("/api/nearby", params={"lat": lat, "lon": LON, "radius_m": 1000})
                    assert r.status_code == 200, r.text
                    assert [d["id"] for d in r.json()["devices"] if d["id"] == device] == found, (p.url, lat)
