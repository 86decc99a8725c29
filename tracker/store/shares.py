"""Share links of trips in PostGIS: the `share_*` columns of `trips` (migration 0010).

Only the SHA-256 hash of a link's token is stored (`share_hash`, unique), as for device and viewer
tokens. A revoked link keeps its hash, with `share_revoked_ts` set, so its page can still say that it
has ended. Revoking announces the trip id on `CHANNEL` in the same transaction, so every process cuts
the link's sockets at once (`tracker.shares`).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import asyncpg

from tracker.store import audit
from tracker.store.database import Database
from tracker.store.trips import trip_of
from tracker.trips.model import Trip

CHANNEL = "tracker_shares"


@dataclass(frozen=True, slots=True)
class Link:
    """A trip's share link as stored: the trip, when the link expires and when it was revoked."""

    trip: Trip
    expires_ts: int
    revoked_ts: int | None
    token_hash: bytes


def _link(row: asyncpg.Record) -> Link:
    return Link(trip_of(row), row["share_expires_ts"], row["share_revoked_ts"], bytes(row["share_hash"]))


async def issue(db: Database, trip_id: str, token_hash: bytes, expires_ts: int) -> bool:
    """Give the trip (created with `share`) its link; False when the trip asked for none or has one
    already (a link is answered once) (coroutine)."""
    done = await db.pool.fetchval(
        "UPDATE trips SET share_hash = $2, share_expires_ts = $3"
        " WHERE id = $1 AND share AND share_hash IS NULL RETURNING id",
        int(trip_id),
        token_hash,
        expires_ts,
    )
    return done is not None


async def by_hash(db: Database, token_hash: bytes) -> Link | None:
    """The link whose token hashes to `token_hash`, in whatever state (coroutine)."""
    row = await db.pool.fetchrow("SELECT * FROM trips WHERE share_hash = $1", token_hash)
    return None if row is None else _link(row)


async def of_trips(db: Database, trip_ids: Collection[str]) -> dict[str, Link]:
    """The links of these trips, by trip id; trips without a link are left out (coroutine)."""
    rows = await db.pool.fetch(
        "SELECT * FROM trips WHERE id = ANY($1::bigint[]) AND share_hash IS NOT NULL",
        [int(t) for t in trip_ids],
    )
    return {str(r["id"]): _link(r) for r in rows}


async def revoke(db: Database, trip_id: str, now_ms: int, *, actor: str) -> bool:
    """End the trip's link now (audited as `actor`'s; a link revoked already keeps its first time) and
    announce it; False when the trip has no link (coroutine)."""
    async with db.pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "UPDATE trips SET share_revoked_ts = coalesce(share_revoked_ts, $2)"
            f" WHERE id = $1 AND share_hash IS NOT NULL RETURNING id, pg_notify('{CHANNEL}', id::text)",
            int(trip_id),
            now_ms,
        )
        if row is None:
            return False
        await audit.record(conn, actor, "share.revoke", trip_id)
        return True
