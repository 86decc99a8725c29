"""Messages in PostGIS, both ways: to devices (stored before delivery, marked sent on each hand-over,
acked once) and from devices (stored before the device's ack, once per `client_id`).

Every new message to a device is announced with `NOTIFY tracker_messages, '<device id>'` in the same
statement, so the process that holds the device's connection (this one or another) delivers it at once.
Only `to_device` rows are ever pending, sent or acked.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson

from tracker.model import Message
from tracker.store.database import Database

CHANNEL = "tracker_messages"

_COLUMNS = (
    "id, device_id, body::text AS body, sender, created_ts, sent_ts, attempts, acked_ts, direction, client_id"
)

_INSERT = f"""
WITH m AS (
    INSERT INTO messages (device_id, body, sender, created_ts) VALUES ($1, $2::json, $3, $4)
    RETURNING {_COLUMNS}
)
SELECT m.*, pg_notify('{CHANNEL}', m.device_id) FROM m
"""

# A device's own message: nothing new when its `client_id` is stored already (then `_SAME` finds that one).
_INSERT_FROM_DEVICE = f"""
INSERT INTO messages (device_id, body, sender, created_ts, direction, client_id)
VALUES ($1, $2::json, $1, $3, 'from_device', $4)
ON CONFLICT (device_id, client_id) WHERE client_id IS NOT NULL DO NOTHING
RETURNING {_COLUMNS}
"""
_SAME = f"SELECT {_COLUMNS} FROM messages WHERE device_id = $1 AND client_id = $2"

TO_DEVICE = "to_device"
FROM_DEVICE = "from_device"
DIRECTIONS = (TO_DEVICE, FROM_DEVICE)

# pending = queued or sent: not acked yet; received = a device's own message (it has no delivery state)
STATES = ("queued", "sent", "acked", "pending", "received")

_STATE_SQL = {
    "queued": "sent_ts IS NULL AND acked_ts IS NULL AND direction = 'to_device'",
    "sent": "sent_ts IS NOT NULL AND acked_ts IS NULL AND direction = 'to_device'",
    "acked": "acked_ts IS NOT NULL AND direction = 'to_device'",
    "pending": "acked_ts IS NULL AND direction = 'to_device'",
    "received": "direction = 'from_device'",
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
        row["direction"],
        row["client_id"],
    )


async def insert(db: Database, device_id: str, body_json: str, sender: str, now_ms: int) -> Message:
    """Store a message for `device_id` and announce it (coroutine)."""
    row = await db.pool.fetchrow(_INSERT, device_id, body_json, sender, now_ms)
    return _message(row)


async def insert_from_device(
    db: Database, device_id: str, body_json: str, client_id: str | None, now_ms: int
) -> tuple[Message, bool]:
    """Store a message from `device_id`; with a `client_id` already stored for the device, store nothing
    and return that message. Returns the message and whether it is new (coroutine)."""
    while True:
        row = await db.pool.fetchrow(_INSERT_FROM_DEVICE, device_id, body_json, now_ms, client_id)
        if row is not None:
            return _message(row), True
        # The conflicting row is committed (ON CONFLICT waited for its transaction) and this is a new
        # statement, so it is seen, unless retention deleted it in between: then store this one.
        same = await db.pool.fetchrow(_SAME, device_id, client_id)
        if same is not None:
            return _message(same), False


async def pending(
    db: Database, device_id: str, after_id: int, limit: int = 500, acked_since: int | None = None
) -> list[Message]:
    """The device's messages with an id above `after_id` that are unacked, or were acked at
    `acked_since` (ms) or later, oldest first (coroutine)."""
    rows = await db.pool.fetch(
        f"SELECT {_COLUMNS} FROM messages WHERE device_id = $1 AND id > $2 AND direction = 'to_device' "
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
        WHERE m.id = a.id AND m.device_id = a.device_id AND m.acked_ts IS NULL AND m.direction = 'to_device'
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
            SELECT id FROM messages WHERE device_id = $1 AND acked_ts IS NULL AND direction = 'to_device'
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
    db: Database,
    device_id: str,
    state: str | None,
    before_id: int | None,
    limit: int,
    direction: str | None = None,
) -> list[Message]:
    """A device's messages (of one `direction`, or both), newest first, below `before_id` (coroutine)."""
    where = ["device_id = $1"]
    args: list[Any] = [device_id]
    if state is not None:
        where.append(_STATE_SQL[state])
    if direction is not None:
        args.append(direction)
        where.append(f"direction = ${len(args)}")
    if before_id is not None:
        args.append(before_id)
        where.append(f"id < ${len(args)}")
    args.append(limit)
    rows = await db.pool.fetch(
        f"SELECT {_COLUMNS} FROM messages WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ${len(args)}",
        *args,
    )
    return [_message(r) for r in rows]
