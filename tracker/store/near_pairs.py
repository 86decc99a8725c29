"""The pairs of devices that are near now (`on: near` rules) in PostGIS: read for a scope, and the
batch's transitions written conditionally.

Policy: a `near` event is stored only by the batch whose INSERT of the pair took effect, and a `far` event
only by the batch whose DELETE found the pair, in the batch's own transaction; so when processes see the
same approach at once (each device of the pair sending through another), the pair fires once. Pairs are
written in key order, so two batches never wait on each other's rows in opposite orders.
"""

from __future__ import annotations

from collections.abc import Collection

import asyncpg

from tracker.geofence.proximity import NearDetection, PairKey
from tracker.store.database import Database

_BEGIN = """
INSERT INTO near_pairs (rule_id, device_a, device_b, since_ts)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[])
ON CONFLICT DO NOTHING
RETURNING rule_id, device_a, device_b
"""

_END = """
DELETE FROM near_pairs p
USING unnest($1::text[], $2::text[], $3::text[]) AS k(rule_id, device_a, device_b)
WHERE p.rule_id = k.rule_id AND p.device_a = k.device_a AND p.device_b = k.device_b
RETURNING p.rule_id, p.device_a, p.device_b
"""


async def load(db: Database, devices: Collection[str] | None, rules: Collection[str]) -> dict[PairKey, int]:
    """The stored near pairs of `rules` that involve one of `devices` (None: every pair), with their
    since (coroutine)."""
    rows = await db.pool.fetch(
        """
        SELECT rule_id, device_a, device_b, since_ts FROM near_pairs
        WHERE rule_id = ANY($2::text[])
          AND ($1::text[] IS NULL OR device_a = ANY($1::text[]) OR device_b = ANY($1::text[]))
        """,
        list(devices) if devices is not None else None,
        list(rules),
    )
    return {(r[0], r[1], r[2]): r[3] for r in rows}


async def write(conn: asyncpg.Connection, near: NearDetection) -> set[PairKey]:
    """Insert the pairs that began and delete those that ended, in the caller's transaction; return the
    keys whose change took effect: only their events may be stored (coroutine)."""
    applied: set[PairKey] = set()
    began = sorted(near.began)
    if began:
        rows = await conn.fetch(
            _BEGIN,
            [k[0] for k in began],
            [k[1] for k in began],
            [k[2] for k in began],
            [near.began[k] for k in began],
        )
        applied.update((r[0], r[1], r[2]) for r in rows)
    ended = sorted(near.ended)
    if ended:
        rows = await conn.fetch(_END, [k[0] for k in ended], [k[1] for k in ended], [k[2] for k in ended])
        applied.update((r[0], r[1], r[2]) for r in rows)
    return applied


async def keep_rules(db: Database, rules: Collection[str]) -> None:
    """Delete the stored pairs of rules no longer loaded (coroutine)."""
    await db.pool.execute("DELETE FROM near_pairs WHERE NOT rule_id = ANY($1::text[])", list(rules))
