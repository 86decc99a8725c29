"""Messages to devices in PostGIS: stored before delivery, marked sent on each hand-over, acked once.

Every new row is announced with `NOTIFY tracker_messages, '<device id>'` in the same statement, so the
process that holds the device's connection (this one or another) delivers it at once.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson

from tracker.model import Message
from tracker.store.database import Database

CHANNEL = "tracker_messages"

_COLUMNS = "id, device_id, body::text AS body, sender, created_ts, sent_ts, attempts, acked_ts"

_INSERT = f"""
WITH m AS (
    INSERT INTO messages (device_id, body, sender, created_ts) VALUES ($1, $2::json, $3, $4)
    RETURNING {_COLUMNS}
)
SELECT m.*, pg_notify('{CHANNEL}', m.device_id) FROM m
"""

STATES = ("queued", "sent", "acked", "pending")  # pending = queued or sent: not acked yet

_STATE_SQL = {
    "queued": "sent_ts IS NULL AND acked_ts IS NULL",
    "sent": "sent_ts IS NOT NULL AND acked_ts IS NULL",
    "acked": "acked_ts IS NOT NULL",
    "pending": "acked_ts IS NULL",
}


def _message(row: asyncpg.Record) -> Message:
    return Message(
        str(row["id"]),
        row["device_id"],
        orjson.loads(row["body"]),
        row["sender"],
        row["created_ts"],
        row["sent_ts"],
        row["attempts"],
        row["acked_ts"],
    )


async def insert(db: Database, device_id: str, body_json: str, sender: str, now_ms: int) -> Message:
    """Store a message for `device_id` and announce it (coroutine)."""
    row = await db.pool.fetchrow(_INSERT, device_id, body_json, sender, now_ms)
    return _message(row)


async def pending(
    db: Database, device_id: str, after_id: int, limit: int = 500, acked_since: int | None = None
) -> list[Message]:
    """The device's messages with an id above `after_id` that are unacked, or were acked at
    `acked_since` (ms) or later, oldest first (coroutine)."""
    rows = await db.pool.fetch(
        f"SELECT {_COLUMNS} FROM messages WHERE device_id = $1 AND id > $2 "
        "AND (acked_ts IS NULL OR acked_ts >= $4) ORDER BY id LIMIT $3",
        device_id,
        after_id,
        limit,
        acked_since,
    )
    return [_message(r) for r in rows]


async def mark_sent(db: Database, ids: list[int], now_ms: int) -> None:
    """Count one delivery attempt for each of `ids` (coroutine)."""
    await db.pool.execute(
        "UPDATE messages SET sent_ts = $2, attempts = attempts + 1 WHERE id = ANY($1::bigint[])", ids, now_ms
    )


async def ack(db: Database, acks: list[tuple[str, int]], now_ms: int) -> list[tuple[str, int]]:
    """Mark messages acked, each only by its own device; the (device, id) pairs that were pending until
    now (coroutine: one statement for the lot)."""
    rows = await db.pool.fetch(
        """
        UPDATE messages m SET acked_ts = $3
        FROM unnest($1::text[], $2::bigint[]) AS a (device_id, id)
        WHERE m.id = a.id AND m.device_id = a.device_id AND m.acked_ts IS NULL
        RETURNING m.device_id, m.id
        """,
        [device for device, _ in acks],
        [number for _, number in acks],
        now_ms,
    )
    return [(r["device_id"], r["id"]) for r in rows]


async def take(db: Database, device_id: str, now_ms: int, limit: int = 100) -> list[Message]:
    """Hand over and ack the device's oldest pending messages at once, for transports whose response
    is the delivery (OwnTracks HTTP); oldest first (coroutine)."""
    rows = await db.pool.fetch(
        f"""
        UPDATE messages SET sent_ts = $2, attempts = attempts + 1, acked_ts = $2
        WHERE id IN (
            SELECT id FROM messages WHERE device_id = $1 AND acked_ts IS NULL
            ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED
        )
        RETURNING {_COLUMNS}
        """,
        device_id,
        now_ms,
        limit,
    )
    return sorted((_message(r) for r in rows), key=lambda m: int(m.id))


async def page(
    db: Database, device_id: str, state: str | None, before_id: int | None, limit: int
) -> list[Message]:
    """A device's messages, newest first, below `before_id` (coroutine)."""
    where = ["device_id = $1"]
    args: list[Any] = [device_id]
    if state is not None:
        where.append(_STATE_SQL[state])
    if before_id is not None:
        args.append(before_id)
        where.append(f"id < ${len(args)}")
    args.append(limit)
    rows = await db.pool.fetch(
        f"SELECT {_COLUMNS} FROM messages WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ${len(args)}",
        *args,
    )
    return [_message(r) for r in rows]
