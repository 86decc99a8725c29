"""A device's data, erased or exported (data-protection requests).

Erasure starts in one transaction: the device's token is revoked (its sockets are cut everywhere, as
`accounts.revoke_device` does), an `erasures` row is written and the request is audited. The deletes
then run in chunks of the primary key, so that a history of millions of fixes never holds one long
transaction, and the device row goes last. `ERASED_CHANNEL` tells every process to forget the device's
live position and fence state. Export reads every table through server-side cursors, so any history
streams in bounded memory.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from tracker.model import Erasure
from tracker.store import audit
from tracker.store.accounts import announced
from tracker.store.database import Database

ERASED_CHANNEL = "tracker_erasures"
CHUNK = 10_000  # fixes per delete


def _counted(delete: str) -> str:
    return f"WITH gone AS ({delete} RETURNING 1) SELECT count(*) FROM gone"


# Each returns how many rows it deleted; fixes a chunk at a time (repeated until 0).
_DELETES = {
    "fixes": _counted(
        "DELETE FROM fixes WHERE device_id = $1 AND ts IN "
        f"(SELECT ts FROM fixes WHERE device_id = $1 ORDER BY ts LIMIT {CHUNK})"
    ),
    # webhook_outbox rows cascade; near/far events of other devices name this one too
    "events": _counted("DELETE FROM events WHERE device_id = $1 OR other_device = $1"),
    "fence_states": _counted("DELETE FROM fence_state WHERE device_id = $1"),
    "near_pairs": _counted("DELETE FROM near_pairs WHERE device_a = $1 OR device_b = $1"),
    "messages": _counted("DELETE FROM messages WHERE device_id = $1"),
    "trips": _counted("DELETE FROM trips WHERE device_id = $1"),  # trip_events and their outbox cascade
}


def _now_ms() -> int:
    return int(time.time() * 1000)


async def begin(db: Database, device_id: str, actor: str) -> bool:
    """Revoke the device's token and record the erasure as started (audited); False when there is no
    such device (coroutine)."""
    async with db.pool.acquire() as conn, conn.transaction():
        found = await conn.fetchval(
            announced("UPDATE devices SET token_hash = NULL WHERE id = $1", "device", "id"), device_id
        )
        if not found:
            return False
        await conn.execute(
            "INSERT INTO erasures (device_id, actor, started_ts) VALUES ($1, $2, $3) ON CONFLICT (device_id) "
            "DO UPDATE SET actor = EXCLUDED.actor, started_ts = EXCLUDED.started_ts, finished_ts = NULL, "
            "deleted = '{}'",
            device_id,
            actor,
            _now_ms(),
        )
        await audit.record(conn, actor, "device.erase", device_id)
    return True


async def delete_data(db: Database, device_id: str, counts: dict[str, int]) -> None:
    """Delete the device's rows, adding to `counts` what each table lost (coroutine; idempotent)."""
    for table, statement in _DELETES.items():
        while deleted := await db.pool.fetchval(statement, device_id):
            counts[table] = counts.get(table, 0) + deleted
            if table != "fixes":
                break


async def finish(db: Database, device_id: str, counts: dict[str, int]) -> None:
    """Delete the device itself, record what was deleted (by the run that finishes: a run resumed after
    a restart counts only what was left) and tell every process (coroutine)."""
    async with db.pool.acquire() as conn, conn.transaction():
        await conn.execute("DELETE FROM devices WHERE id = $1", device_id)
        await conn.execute(
            "UPDATE erasures SET finished_ts = $2, deleted = $3::jsonb "
            "WHERE device_id = $1 AND finished_ts IS NULL",
            device_id,
            _now_ms(),
            orjson.dumps(counts).decode(),
        )
        await conn.execute("SELECT pg_notify($1, $2)", ERASED_CHANNEL, device_id)


async def get(db: Database, device_id: str) -> Erasure | None:
    """The device's latest erasure, if any (coroutine)."""
    row = await db.pool.fetchrow(
        "SELECT device_id, actor, started_ts, finished_ts, deleted::text FROM erasures WHERE device_id = $1",
        device_id,
    )
    return Erasure(row[0], row[1], row[2], row[3], orjson.loads(row[4])) if row else None


async def unfinished(db: Database) -> list[str]:
    """Devices whose erasure started and did not finish (a process stopped meanwhile) (coroutine)."""
    return [r[0] for r in await db.pool.fetch("SELECT device_id FROM erasures WHERE finished_ts IS NULL")]


# One query per kind of record, each row one JSON object built by PostgreSQL, oldest first.
_EXPORTS = {
    "fix": """
        SELECT json_build_object('type', 'fix', 'ts', (extract(epoch FROM ts) * 1000)::bigint,
            'lat', ST_Y(geom), 'lon', ST_X(geom), 'speed', speed, 'heading', heading, 'accuracy', accuracy,
            'altitude', altitude, 'battery', battery, 'attrs', attrs,
            'received', (extract(epoch FROM received) * 1000)::bigint)::text
        FROM fixes WHERE device_id = $1 ORDER BY ts""",
    "event": """
        SELECT json_build_object('type', 'event', 'id', id::text, 'event', type, 'rule', rule_id,
            'fence', fence_id, 'fleet', fleet, 'ts', ts, 'lat', lat, 'lon', lon)::text
        FROM events WHERE device_id = $1 ORDER BY id""",
    "fence_state": """
        SELECT json_build_object('type', 'fence_state', 'rule', rule_id, 'fence', fence_id,
            'inside', inside, 'since_ts', since_ts, 'pending', pending, 'fired', fired)::text
        FROM fence_state WHERE device_id = $1 ORDER BY rule_id, fence_id""",
    "message": """
        SELECT json_build_object('type', 'message', 'id', id::text, 'direction', direction, 'body', body,
            'from', sender, 'ts', created_ts, 'sent_ts', sent_ts, 'attempts', attempts, 'acked_ts', acked_ts,
            'client_id', client_id)::text
        FROM messages WHERE device_id = $1 ORDER BY id""",
    "trip": """
        SELECT json_build_object('type', 'trip', 'id', id::text, 'status', status, 'dest_lat', dest_lat,
            'dest_lon', dest_lon, 'radius_m', radius_m, 'fence', fence_id, 'approach_m', approach_m,
            'ref', ref, 'notify', notify, 'created_by', created_by, 'created_ts', created_ts,
            'expires_ts', expires_ts, 'approaching_ts', approaching_ts, 'arrived_ts', arrived_ts,
            'ended_ts', ended_ts, 'eta_ts', eta_ts, 'remaining_m', remaining_m)::text
        FROM trips WHERE device_id = $1 ORDER BY id""",
    "trip_event": """
        SELECT json_build_object('type', 'trip_event', 'id', id::text, 'trip', trip_id::text,
            'status', status, 'ts', ts, 'eta_ts', eta_ts, 'remaining_m', remaining_m, 'ref', ref)::text
        FROM trip_events WHERE device_id = $1 ORDER BY id""",
}


async def export_lines(db: Database, device: dict[str, Any], chunk: int = 5000) -> AsyncIterator[bytes]:
    """JSON lines of everything stored about `device` (its record first, then fixes, events, fence
    states, messages, trips and their status changes), in one read-only snapshot (async generator)."""
    yield orjson.dumps({"type": "device", **device}) + b"\n"
    async with db.pool.acquire() as conn, conn.transaction(readonly=True, isolation="repeatable_read"):
        for query in _EXPORTS.values():
            cursor = await conn.cursor(query, device["id"])
            while rows := await cursor.fetch(chunk):
                yield "".join(f"{r[0]}\n" for r in rows).encode()
