"""Upgrading from the previous release: a database made by that release's schema (its migrations, up to the
last one CHANGELOG.md names for it) and holding data as it wrote them, then the current server started on
it. The server applies every newer migration in order; afterwards the schema is exactly a fresh database's,
and the old data serve as before. No migration number is written here: the newest is whatever the package
carries, the previous release's last is the changelog's."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import h3.api.basic_int as h3i
import orjson
import pytest
from harness import ROOT, Client, create_database, drop_database, now_ms, own_server, web_client

from tracker import __version__
from tracker.store.database import migrate, migration_names

CHANGELOG = ROOT / "CHANGELOG.md"
DEVICE, FLEET = "van-from-before", "fleet-from-before"
DEVICE_TOKEN, VIEWER_TOKEN = "device-token-of-the-previous-release", "viewer-token-of-the-previous-release"


def previous_release() -> tuple[str, str]:
    """(version, last migration) of the newest released section of CHANGELOG.md."""
    for section in re.split(r"^## ", CHANGELOG.read_text(), flags=re.M)[1:]:
        version = re.match(r"(\d+\.\d+\.\d+)\b", section)
        if version is None:
            continue  # Unreleased
        last = re.search(r"^Last migration: `([^`]+)`", section, re.M)
        assert last, f"CHANGELOG.md's section {version[1]} names no last migration"
        return version[1], last[1]
    raise AssertionError("CHANGELOG.md has no released version")


def release(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", version)[:3])


def test_the_changelog_names_the_previous_release_and_this_version_comes_after_it() -> None:
    version, last = previous_release()
    assert last in migration_names(), f"{last} (CHANGELOG.md, {version}) is not a migration of this tree"
    assert release(__version__) >= release(version)
    if release(__version__) == release(version):
        assert __version__ == version and last == migration_names()[-1], "a release carries its migrations"


async def write_previous_release_data(conn: asyncpg.Connection, t0: int) -> list[tuple[int, float, float]]:
    """Rows as the previous release wrote them: a device and a viewer with their tokens' hashes, three
    fixes in daily partitions, a geofence event and a message still waiting for the device; returns the
    fixes (ts, lat, lon)."""

    def sha(token: str) -> bytes:
        return hashlib.sha256(token.encode()).digest()

    await conn.execute(
        "INSERT INTO devices (id, fleet, name, token_hash) VALUES ($1, $2, 'Van 7', $3)",
        DEVICE,
        FLEET,
        sha(DEVICE_TOKEN),
    )
    await conn.execute(
        "INSERT INTO viewers (name, fleets, token_hash) VALUES ('dispatch', $1, $2)",
        [FLEET],
        sha(VIEWER_TOKEN),
    )
    fixes = [(t0 + i * 5000, 52.52 + i * 0.001, 13.40) for i in range(3)]
    for ts, _, _ in fixes:
        day = datetime.fromtimestamp(ts / 1000, UTC).date()
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS fixes_p{day:%Y%m%d} PARTITION OF fixes "
            f"FOR VALUES FROM ('{start.isoformat()}') TO ('{(start + timedelta(days=1)).isoformat()}')"
        )
    await conn.executemany(
        "INSERT INTO fixes (device_id, ts, geom, speed, cell) "
        "VALUES ($1, timestamptz 'epoch' + $2 * interval '1 millisecond', "
        "ST_SetSRID(ST_MakePoint($4, $3), 4326), 8.5, $5)",
        [(DEVICE, ts, lat, lon, h3i.latlng_to_cell(lat, lon, 9)) for ts, lat, lon in fixes],
    )
    await conn.execute(
        "INSERT INTO events (type, rule_id, fence_id, device_id, fleet, ts, lat, lon) "
        "VALUES ('enter', 'yard-in', 'yard', $1, $2, $3, $4, $5)",
        DEVICE,
        FLEET,
        *fixes[1],
    )
    await conn.execute(
        "INSERT INTO messages (device_id, body, sender, created_ts) VALUES ($1, $2, 'dispatch', $3)",
        DEVICE,
        orjson.dumps({"text": "sent before the upgrade"}).decode(),
        t0,
    )
    return fixes


# The schema as the catalog has it, without the fixes' daily partitions (which days exist differs).
_SCHEMA = {
    "columns": """
        SELECT c.relname, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
               a.attidentity, pg_get_expr(d.adbin, d.adrelid)
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm')
          AND NOT c.relispartition AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY 1, 2""",
    "indexes": """
        SELECT t.relname, pg_get_indexdef(x.indexrelid)
        FROM pg_index x JOIN pg_class t ON t.oid = x.indrelid
        WHERE t.relnamespace = 'public'::regnamespace AND NOT t.relispartition ORDER BY 1, 2""",
    "constraints": """
        SELECT t.relname, k.conname, pg_get_constraintdef(k.oid)
        FROM pg_constraint k JOIN pg_class t ON t.oid = k.conrelid
        WHERE t.relnamespace = 'public'::regnamespace AND NOT t.relispartition ORDER BY 1, 2""",
    "triggers": """
        SELECT t.relname, g.tgname, pg_get_triggerdef(g.oid)
        FROM pg_trigger g JOIN pg_class t ON t.oid = g.tgrelid
        WHERE t.relnamespace = 'public'::regnamespace AND NOT g.tgisinternal AND NOT t.relispartition
        ORDER BY 1, 2""",
    "extensions": "SELECT extname, extversion FROM pg_extension ORDER BY 1",
}


async def schema(url: str) -> dict[str, list[tuple[Any, ...]]]:
    conn = await asyncpg.connect(url)
    try:
        return {kind: [tuple(r) for r in await conn.fetch(sql)] for kind, sql in _SCHEMA.items()}
    finally:
        await conn.close()


async def test_a_database_of_the_previous_release_upgrades_in_order_and_keeps_its_data(
    pg_base: str, tmp_path: Path, clients: list[Client]
) -> None:
    version, last = previous_release()
    old = await create_database(pg_base, "upgrade")
    fresh = await create_database(pg_base, "fresh")
    try:
        t0 = now_ms() - 3_600_000
        conn = await asyncpg.connect(old)
        try:
            assert (await migrate(conn, until=last))[-1] == last
            fixes = await write_previous_release_data(conn, t0)
        finally:
            await conn.close()

        with own_server(old, tmp_path / "upgraded") as server:
            conn = await asyncpg.connect(old)
            try:
                rows = await conn.fetch("SELECT name FROM schema_migrations ORDER BY applied, name")
            finally:
                await conn.close()
            # Every migration, each once, the newer ones after the release's own.
            assert [r["name"] for r in rows] == migration_names()
            newer = migration_names()[migration_names().index(last) + 1 :]
            assert all(f"applied migration {name}" in server.log_text() for name in newer)

            viewer = {"Authorization": f"Bearer {VIEWER_TOKEN}"}
            async with web_client(base_url=server.url, headers=viewer, timeout=30) as http:
                r = await http.get("/api/devices")
                assert r.status_code == 200, r.text
                (listed,) = r.json()["devices"]
                ts, lat, lon = fixes[-1]
                assert listed["id"] == DEVICE and listed["fleet"] == FLEET and listed["name"] == "Van 7"
                assert listed["last"] | {"speed": None} == {
                    "ts": ts,
                    "lat": lat,
                    "lon": lon,
                    "speed": None,
                    "heading": None,
                }
                trail = (await http.get(f"/api/devices/{DEVICE}/trail", params={"from": t0})).json()
                assert trail["properties"]["times"] == [f[0] for f in fixes]
                assert trail["geometry"]["coordinates"] == [[f[2], f[1]] for f in fixes]
                events = (await http.get("/api/events", params={"device": DEVICE, "from": t0})).json()
                assert [(e["type"], e["fence"], e["ts"]) for e in events["events"]] == [
                    ("enter", "yard", fixes[1][0])
                ]

            # The device's token of the previous release still connects; its waiting message comes, and it
            # sends on.
            device = await Client("/device").connect(server, DEVICE_TOKEN)
            clients.append(device)
            message = await device.next("message")
            assert message["body"] == {"text": "sent before the upgrade"}
            ack = await device.call("fix", {"ts": now_ms(), "lat": 52.53, "lon": 13.41})
            assert ack["accepted"] == 1, ack
            assert server.log_error_lines() == 0, server.log_error_samples()

        # What the upgrade left is what a new database gets.
        conn = await asyncpg.connect(fresh)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        upgraded, new = await schema(old), await schema(fresh)
        for kind in _SCHEMA:
            assert upgraded[kind] == new[kind], f"{kind} differ after upgrading from {version}"
    finally:
        await drop_database(pg_base, old)
        await drop_database(pg_base, fresh)


@pytest.mark.parametrize("name", ["9999_nothing.sql", "0001_core"])
async def test_migrating_until_an_unknown_migration_is_refused(pg_base: str, name: str) -> None:
    url = await create_database(pg_base, "until")
    try:
        conn = await asyncpg.connect(url)
        try:
            with pytest.raises(ValueError, match="no migration named"):
                await migrate(conn, until=name)
        finally:
            await conn.close()
    finally:
        await drop_database(pg_base, url)
