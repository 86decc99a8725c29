"""Trips, their status changes and their webhook rows in PostGIS.

Every status change is one `trip_events` row plus one outbox row per URL of the trip's `notify`,
written in the statement that changes the status, compare-and-set on the status the writer saw: a
change evaluated from a stale status (another process, a cancel meanwhile) writes nothing, so each
change is stored once. Changes caused by fixes are written with the fixes: in the batch's one statement
(`WRITE_CTES`, nested by `tracker.store.geofences`) or, for big batches, its transaction (`write`); a trip
created or ended (`create`, `end`, `expire_due`) is announced with `NOTIFY tracker_trips, '<device>'`
so the process evaluating the device merges it at once.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import asyncpg

from tracker.model import Window
from tracker.store.database import Database
from tracker.trips.changes import TripDetection
from tracker.trips.model import ACTIVE, OPEN, Destination, Trip, TripEvent

CHANNEL = "tracker_trips"

_ACTIVE_SQL = "(" + ", ".join(f"'{s}'" for s in ACTIVE) + ")"
_OPEN_SQL = "(" + ", ".join(f"'{s}'" for s in OPEN) + ")"

# The outbox rows of the events in `{ev}`, one per URL of their trip's notify list (`{trip}` has the trips).
_OUTBOX = """
INSERT INTO webhook_outbox (trip_event_id, url)
SELECT {ev}.id, n.url FROM {ev} JOIN {trip} ON {trip}.id = {ev}.trip_id
CROSS JOIN unnest({trip}.notify) AS n(url)
"""

_CREATE = f"""
WITH t AS (
    INSERT INTO trips (device_id, fleet, status, dest_lat, dest_lon, radius_m, fence_id, approach_m, ref,
                       notify, created_by, created_ts, expires_ts, eta_ts, remaining_m, progress_ts,
                       speed_mps, share, share_ttl_s)
    VALUES ($1, $2, 'started', $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)
    RETURNING *
), ev AS (
    INSERT INTO trip_events (trip_id, device_id, fleet, status, ts, eta_ts, remaining_m, ref)
    SELECT id, device_id, fleet, status, created_ts, eta_ts, remaining_m, ref FROM t
    RETURNING id, trip_id
), ob AS ({_OUTBOX.format(ev="ev", trip="t")})
SELECT t.*, ev.id AS event_id, pg_notify('{CHANNEL}', t.device_id) FROM t JOIN ev ON ev.trip_id = t.id
"""

_END = f"""
WITH t AS (
    UPDATE trips SET status = $2, ended_ts = $3
    WHERE id = $1 AND status IN {_OPEN_SQL}
    RETURNING *
), ev AS (
    INSERT INTO trip_events (trip_id, device_id, fleet, status, ts, eta_ts, remaining_m, ref)
    SELECT id, device_id, fleet, status, ended_ts, eta_ts, remaining_m, ref FROM t
    RETURNING id, trip_id
), ob AS ({_OUTBOX.format(ev="ev", trip="t")})
SELECT t.*, ev.id AS event_id, pg_notify('{CHANNEL}', t.device_id) FROM t JOIN ev ON ev.trip_id = t.id
"""

_EXPIRE = f"""
WITH t AS (
    UPDATE trips SET status = 'expired', ended_ts = expires_ts
    WHERE status IN {_ACTIVE_SQL} AND id IN (
        SELECT id FROM trips WHERE status IN {_ACTIVE_SQL} AND expires_ts <= $1
        ORDER BY expires_ts, id LIMIT $2 FOR UPDATE SKIP LOCKED)
    RETURNING *
), ev AS (
    INSERT INTO trip_events (trip_id, device_id, fleet, status, ts, eta_ts, remaining_m, ref)
    SELECT id, device_id, fleet, status, ended_ts, eta_ts, remaining_m, ref FROM t ORDER BY ended_ts, id
    RETURNING id, trip_id
), ob AS ({_OUTBOX.format(ev="ev", trip="t")})
SELECT t.*, ev.id AS event_id, pg_notify('{CHANNEL}', t.device_id) FROM t JOIN ev ON ev.trip_id = t.id
ORDER BY ev.id
"""

# A batch's trip changes, as CTEs to nest in the batch's one statement (`tracker.store.geofences`):
# progress for every written trip, events for its status changes, both only where the status is still
# the one the batch started from ($1-$9: the trips, $10-$18: the events). `tupd` has the trips written,
# `tev` the events stored.
WRITE_CTES = f"""
tu AS (
    SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::float8[], $6::bigint[],
                         $7::float8[], $8::bigint[], $9::bigint[])
        AS u(id, old, status, eta_ts, remaining_m, progress_ts, speed_mps, approaching_ts, arrived_ts)
), tupd AS (
    UPDATE trips t SET status = u.status, eta_ts = u.eta_ts, remaining_m = u.remaining_m,
        progress_ts = u.progress_ts, speed_mps = u.speed_mps, approaching_ts = u.approaching_ts,
        arrived_ts = u.arrived_ts
    FROM tu AS u WHERE t.id = u.id AND t.status = u.old
    RETURNING t.id, t.notify
), tev AS (
    INSERT INTO trip_events (trip_id, device_id, fleet, status, ts, eta_ts, remaining_m, ref)
    SELECT e.trip_id, e.device_id, e.fleet, e.status, e.ts, e.eta_ts, e.remaining_m, e.ref
    FROM unnest($10::bigint[], $11::text[], $12::text[], $13::text[], $14::bigint[], $15::bigint[],
                $16::float8[], $17::text[], $18::int[])
        AS e(trip_id, device_id, fleet, status, ts, eta_ts, remaining_m, ref, ord)
    JOIN tupd ON tupd.id = e.trip_id
    ORDER BY e.ord
    RETURNING id, trip_id, status
), tob AS ({_OUTBOX.format(ev="tev", trip="tupd")})
"""

_WRITE = f"""
WITH {WRITE_CTES}
SELECT 'u' AS kind, id, NULL::bigint AS event_id, NULL::text AS status FROM tupd
UNION ALL
SELECT 't', trip_id, id, status FROM tev
"""


def trip_of(row: asyncpg.Record) -> Trip:
    """A `trips` row as a Trip."""
    fence = row["fence_id"]
    return Trip(
        id=str(row["id"]),
        device=row["device_id"],
        fleet=row["fleet"],
        status=row["status"],
        destination=Destination(row["dest_lat"], row["dest_lon"], row["radius_m"], fence),
        approach_m=row["approach_m"],
        ref=row["ref"],
        notify=tuple(row["notify"]),
        created_ts=row["created_ts"],
        expires_ts=row["expires_ts"],
        eta_ts=row["eta_ts"],
        remaining_m=row["remaining_m"],
        progress_ts=row["progress_ts"],
        saved_ts=row["progress_ts"],
        speed_mps=row["speed_mps"],
        approaching_ts=row["approaching_ts"],
        arrived_ts=row["arrived_ts"],
        ended_ts=row["ended_ts"],
        share=row["share"],
        share_ttl_s=row["share_ttl_s"],
    )


def _event_of(row: asyncpg.Record) -> TripEvent:
    """The event a `_CREATE`, `_END` or `_EXPIRE` row announces."""
    trip = trip_of(row)
    ts = trip.ended_ts if trip.ended_ts is not None else trip.created_ts
    return TripEvent(
        trip.id,
        trip.device,
        trip.fleet,
        trip.status,
        ts,
        trip.eta_ts,
        trip.remaining_m,
        trip.ref,
        trip.notify,
        str(row["event_id"]),
    )


async def create(db: Database, trip: Trip, created_by: str) -> tuple[Trip, TripEvent]:
    """Store a new trip (its `id` and `status` are ignored) with its `started` event (coroutine)."""
    d = trip.destination
    row = await db.pool.fetchrow(
        _CREATE,
        trip.device,
        trip.fleet,
        d.lat,
        d.lon,
        d.radius_m,
        d.fence,
        trip.approach_m,
        trip.ref,
        list(trip.notify),
        created_by,
        trip.created_ts,
        trip.expires_ts,
        trip.eta_ts,
        trip.remaining_m,
        trip.progress_ts,
        trip.speed_mps,
        trip.share,
        trip.share_ttl_s,
    )
    return trip_of(row), _event_of(row)


async def end(db: Database, trip_id: str, status: str, now_ms: int) -> tuple[Trip, TripEvent] | None:
    """Complete or cancel an open trip (coroutine); None when it is not open (any more)."""
    row = await db.pool.fetchrow(_END, int(trip_id), status, now_ms)
    return None if row is None else (trip_of(row), _event_of(row))


async def expire_due(db: Database, now_ms: int, limit: int = 1000) -> list[TripEvent]:
    """Expire up to `limit` trips not arrived by their `expires_ts`; their events in order (coroutine)."""
    return [_event_of(r) for r in await db.pool.fetch(_EXPIRE, now_ms, limit)]


async def next_expiry(db: Database) -> int | None:
    """The earliest `expires_ts` of an active trip, None when there is none (coroutine)."""
    value: int | None = await db.pool.fetchval(
        f"SELECT min(expires_ts) FROM trips WHERE status IN {_ACTIVE_SQL}"
    )
    return value


async def active_of(
    conn: asyncpg.Connection | asyncpg.Pool, devices: Collection[str]
) -> dict[str, list[Trip]]:
    """The active trips of `devices`, by device (coroutine)."""
    rows = await conn.fetch(
        f"SELECT * FROM trips WHERE device_id = ANY($1::text[]) AND status IN {_ACTIVE_SQL} ORDER BY id",
        list(devices),
    )
    out: dict[str, list[Trip]] = {}
    for r in rows:
        out.setdefault(r["device_id"], []).append(trip_of(r))
    return out


async def all_active(db: Database) -> list[Trip]:
    """Every active trip (coroutine; at start-up)."""
    rows = await db.pool.fetch(f"SELECT * FROM trips WHERE status IN {_ACTIVE_SQL} ORDER BY id")
    return [trip_of(r) for r in rows]


async def get(db: Database, trip_id: str) -> Trip | None:
    """The trip, None when there is no such trip (coroutine)."""
    row = await db.pool.fetchrow("SELECT * FROM trips WHERE id = $1", int(trip_id))
    return None if row is None else trip_of(row)


async def page(
    db: Database,
    *,
    fleets: Sequence[str] | None,
    device: str | None,
    status: str | None,
    window: Window,
) -> list[Trip]:
    """Up to `window.limit` + 1 trips of `fleets` (None: all) that were open at some time in the window
    (created before its end, not ended before its start), oldest first, after the id `window.after`
    (coroutine)."""
    rows = await db.pool.fetch(
        """
        SELECT * FROM trips
        WHERE created_ts < $2 AND (ended_ts IS NULL OR ended_ts >= $1) AND id > $3
          AND ($4::text[] IS NULL OR fleet = ANY($4::text[]))
          AND ($5::text IS NULL OR device_id = $5) AND ($6::text IS NULL OR status = $6)
        ORDER BY id LIMIT $7
        """,
        window.from_ms,
        window.to_ms,
        window.after or 0,
        list(fleets) if fleets is not None else None,
        device,
        status,
        window.limit + 1,
    )
    return [trip_of(r) for r in rows]


async def recent_fixes(db: Database, device: str, since_ms: int) -> list[tuple[int, float, float, float]]:
    """The device's stored good fixes since `since_ms` as (ts, lat, lon, accuracy), oldest first
    (coroutine)."""
    rows = await db.pool.fetch(
        """
        SELECT (extract(epoch FROM ts) * 1000)::bigint, ST_Y(geom), ST_X(geom), coalesce(accuracy, 0)
        FROM fixes WHERE device_id = $1 AND ts >= to_timestamp($2 / 1000.0) AND flag IS NULL ORDER BY ts
        """,
        device,
        since_ms,
    )
    return [(r[0], r[1], r[2], float(r[3])) for r in rows]


def write_args(detection: TripDetection) -> list[list[Any]]:
    """The 18 arrays of `WRITE_CTES` for the batch's trip writes."""
    trips = [detection.trips[t] for t in detection.writes]
    events = [e for e in detection.events if e.trip in detection.trips]
    return [
        [int(t.id) for t in trips],
        [detection.before[t.id] for t in trips],
        [t.status for t in trips],
        [t.eta_ts for t in trips],
        [t.remaining_m for t in trips],
        [t.progress_ts for t in trips],
        [t.speed_mps for t in trips],
        [t.approaching_ts for t in trips],
        [t.arrived_ts for t in trips],
        *_event_columns(events),
    ]


def written(detection: TripDetection, trips: set[str], event_ids: dict[tuple[str, str], str]) -> None:
    """Record what the statement wrote: `trips` (ids in `tupd`) and the ids of the events stored, by
    (trip, status). Sets `detection.stored` (events with ids) and `detection.lost` (trips another
    writer had moved on)."""
    detection.lost = set(detection.writes) - trips
    detection.stored = []
    for e in detection.events:
        if e.trip in trips and (e.trip, e.status) in event_ids:
            e.id = event_ids[(e.trip, e.status)]
            detection.stored.append(e)


async def write(conn: asyncpg.Connection, detection: TripDetection) -> None:
    """Inside the batch's transaction: write the trips of `detection.writes` and their events, on their
    own statement (the COPY path of big batches); see `WRITE_CTES` and `written` (coroutine)."""
    if not detection.writes:
        return
    rows = await conn.fetch(_WRITE, *write_args(detection))
    written(
        detection,
        {str(r["id"]) for r in rows if r["kind"] == "u"},
        {(str(r["id"]), r["status"]): str(r["event_id"]) for r in rows if r["kind"] == "t"},
    )


def _event_columns(events: Sequence[TripEvent]) -> list[list[Any]]:
    return [
        [int(e.trip) for e in events],
        [e.device for e in events],
        [e.fleet for e in events],
        [e.status for e in events],
        [e.ts for e in events],
        [e.eta_ts for e in events],
        [e.remaining_m for e in events],
        [e.ref for e in events],
        list(range(len(events))),
    ]
