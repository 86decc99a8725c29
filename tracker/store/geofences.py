"""Geofence state, events and the webhook outbox in PostGIS (events are read back by `store.events`).

`write_batch` is the ingest loop's one write: the fixes, plus, when the batch changed fence state or fired
events, the changed fence states, the events and one outbox row per (event, webhook URL), all in one
transaction. So an ack means the events are stored, and a restart resumes from exactly the state that
produced the stored events: none is lost or fired twice. The trips the batch moved (`tracker.store.trips`)
are written in that transaction too. Batches that change no fence state keep the single-statement write
of `write_fixes`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import asyncpg

from tracker.geofence.detect import Detection
from tracker.geofence.proximity import pair_key
from tracker.model import FenceState, Fix, GeofenceEvent, StateKey
from tracker.store import fence_owner, near_pairs
from tracker.store import trips as trips_store
from tracker.store.database import Database
from tracker.store.fixes import (
    COPY_MIN_FIXES,
    INSERT_FROM_ARRAYS,
    RETURNING_KEYS,
    fix_columns,
    fix_records,
    write_fixes,
)

_UPSERT_STATES = """
INSERT INTO fence_state (device_id, rule_id, fence_id, inside, since_ts, pending, fired)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bool[], $5::bigint[], $6::smallint[], $7::bool[])
ON CONFLICT (device_id, rule_id, fence_id) DO UPDATE
SET inside = excluded.inside, since_ts = excluded.since_ts, pending = excluded.pending, fired = excluded.fired
"""

_DELETE_STATES = """
DELETE FROM fence_state s
USING unnest($1::text[], $2::text[], $3::text[]) AS k(device_id, rule_id, fence_id)
WHERE s.device_id = k.device_id AND s.rule_id = k.rule_id AND s.fence_id = k.fence_id
"""

_INSERT_EVENTS = """
INSERT INTO events (type, rule_id, fence_id, device_id, fleet, ts, lat, lon, other_device, other_fleet)
SELECT k.*, (SELECT d.fleet FROM devices AS d WHERE d.id = k.other_device)
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[],
            $7::float8[], $8::float8[], $9::text[])
    AS k(type, rule_id, fence_id, device_id, fleet, ts, lat, lon, other_device)
RETURNING id, type, rule_id, fence_id, device_id, ts, other_device
"""


def _from(first: int, sql: str) -> str:
    """`sql` with its parameters $1, $2, ... renumbered from `first`, to nest it in a larger statement."""
    return re.sub(r"\$(\d+)", lambda m: f"${int(m[1]) + first - 1}", sql)


# Small batches that change fence state: fixes, fence states, events and outbox rows in ONE statement (its
# own transaction), with data-modifying CTEs; the same single round trip as a batch without state changes.
# Rows come back as ('f', device, ts) for each new fix and ('e', device, ts, id, type, rule, fence, other)
# per event.
_WRITE_CTES = f"""
new_fixes AS ({INSERT_FROM_ARRAYS} {RETURNING_KEYS}),
gone AS ({_from(13, _DELETE_STATES)}),
kept AS ({_from(16, _UPSERT_STATES)}),
new_events AS ({_from(23, _INSERT_EVENTS)}),
outbox AS (
    INSERT INTO webhook_outbox (event_id, url)
    SELECT e.id, h.url FROM new_events e JOIN unnest($32::text[], $33::text[]) AS h(rule_id, url)
        ON h.rule_id = e.rule_id
)"""
_WRITE_ROWS = """
SELECT 'f', device_id, ts_ms, NULL::bigint, NULL::text, NULL::text, NULL::text, NULL::text FROM new_fixes
UNION ALL
SELECT 'e', device_id, ts, id, type, rule_id, fence_id, other_device FROM new_events"""
_WRITE_ALL = f"WITH {_WRITE_CTES}{_WRITE_ROWS}"
# The same with the batch's trip changes ($34-$51, `tracker.store.trips.WRITE_CTES`): also ('u', trip id)
# per trip written and ('t', event id, status, trip id) per trip event.
_WRITE_ALL_TRIPS = f"""WITH {_WRITE_CTES},
{_from(34, trips_store.WRITE_CTES)}{_WRITE_ROWS}
UNION ALL
SELECT 'u', NULL, NULL, id, NULL, NULL, NULL, NULL FROM tupd
UNION ALL
SELECT 't', NULL, NULL, id, status, trip_id::text, NULL, NULL FROM tev
"""


async def write_batch(
    conn: asyncpg.Connection,
    fixes: Sequence[Fix],
    detection: Detection | None,
    webhooks: Callable[[str], Sequence[str]],
    epochs: Mapping[str, int] | None = None,
) -> tuple[set[tuple[str, int]], list[GeofenceEvent]]:
    """Store fixes and what they changed atomically; return (new fix keys, events with ids) (coroutine).
    Near/far events whose pair change did not take effect (another process stored it first) are dropped
    from `detection.events` (`tracker.store.near_pairs`).

    `webhooks(rule_id)` gives the URLs an event of that rule goes to (one outbox row each). With several
    processes, `epochs` are the fence epochs this process holds (`tracker.store.fence_owner`): state and
    events are written only for devices still held, else `FenceOwnerChanged` and nothing is written.
    """
    if detection is None or not detection.changes_state:
        return await write_fixes(conn, fixes), []
    held = _held(detection, epochs)
    near = detection.near
    if len(fixes) < COPY_MIN_FIXES and held is None and not near:
        return await _write_all(conn, fixes, detection, webhooks)
    async with conn.transaction():
        if held is not None:
            await fence_owner.check(conn, held)
        if near:
            applied = await near_pairs.write(conn, near)
            detection.events = [
                e
                for e in detection.events
                if e.other is None or pair_key(e.rule, e.device, e.other) in applied
            ]
        if len(fixes) < COPY_MIN_FIXES:
            return await _write_all(conn, fixes, detection, webhooks)
        if detection.trips is not None:
            await trips_store.write(conn, detection.trips)
        new = await write_fixes(conn, fixes)
        await _write_states(conn, detection.state_changes)
        events = await _insert_events(conn, detection.events)
        urls = [(int(e.id), url) for e in events for url in webhooks(e.rule)]
        if urls:
            await conn.execute(
                "INSERT INTO webhook_outbox (event_id, url) SELECT * FROM unnest($1::bigint[], $2::text[])",
                [u[0] for u in urls],
                [u[1] for u in urls],
            )
    return new, events


def _held(detection: Detection, epochs: Mapping[str, int] | None) -> dict[str, int] | None:
    """The epochs of the devices whose fence state, events or trips the batch writes (None: one process)."""
    if epochs is None:
        return None
    devices = set(detection.state_changes) | {e.device for e in detection.events}
    if detection.trips is not None:
        devices |= detection.trips.devices
    missing = sorted(d for d in devices if d not in epochs)
    if missing:
        raise fence_owner.FenceOwnerChanged(missing)
    return {d: epochs[d] for d in devices}


def _state_arrays(
    changes: dict[str, dict[StateKey, FenceState | None]],
) -> tuple[list[list[Any]], list[list[Any]]]:
    """Changed fence states as query arrays: (device, rule, fence) of those back to outside, and the full rows
    (device, rule, fence, inside, since, pending, fired) of the others."""
    gone: list[tuple[str, str, str]] = []
    kept: list[tuple[Any, ...]] = []
    for device, changed in changes.items():
        for (rule, fence), state in changed.items():
            if state is None:
                gone.append((device, rule, fence))
            else:
                kept.append((device, rule, fence, state.inside, state.since, state.pending, state.fired))
    return _columns(gone, 3), _columns(kept, 7)


def _columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows turned into `width` column arrays (empty arrays when there are no rows)."""
    return [[row[i] for row in rows] for i in range(width)]


def _event_arrays(events: Sequence[GeofenceEvent]) -> list[list[Any]]:
    """Events as the query arrays type, rule, fence, device, fleet, ts, lat, lon, other device."""
    return [
        [e.type for e in events],
        [e.rule for e in events],
        [e.fence for e in events],
        [e.device for e in events],
        [e.fleet for e in events],
        [e.ts for e in events],
        [e.lat for e in events],
        [e.lon for e in events],
        [e.other for e in events],
    ]


def _set_ids(
    events: Sequence[GeofenceEvent], ids: dict[tuple[str, str, str, str, int, str | None], str]
) -> None:
    """Give each event its stored id, found by (type, rule, fence, device, ts, other): unique within a
    batch, since one fix fires a type once per rule and fence, or per rule and other device."""
    for e in events:
        e.id = ids[(e.type, e.rule, e.fence, e.device, e.ts, e.other)]


async def _write_all(
    conn: asyncpg.Connection,
    fixes: Sequence[Fix],
    detection: Detection,
    webhooks: Callable[[str], Sequence[str]],
) -> tuple[set[tuple[str, int]], list[GeofenceEvent]]:
    """`write_batch` for small batches: one statement (see `_WRITE_ALL`), trips included."""
    gone, kept = _state_arrays(detection.state_changes)
    events = detection.events
    hooks = [(rule, url) for rule in {e.rule for e in events} for url in webhooks(rule)]
    trips = detection.trips if detection.trips is not None and detection.trips.writes else None
    rows = await conn.fetch(
        _WRITE_ALL if trips is None else _WRITE_ALL_TRIPS,
        *fix_columns(fix_records(fixes)),
        *gone,
        *kept,
        *_event_arrays(events),
        [h[0] for h in hooks],
        [h[1] for h in hooks],
        *(trips_store.write_args(trips) if trips is not None else ()),
    )
    new = {(r[1], r[2]) for r in rows if r[0] == "f"}
    _set_ids(events, {(r[4], r[5], r[6], r[1], r[2], r[7]): str(r[3]) for r in rows if r[0] == "e"})
    if trips is not None:
        trips_store.written(
            trips,
            {str(r[3]) for r in rows if r[0] == "u"},
            {(r[5], r[4]): str(r[3]) for r in rows if r[0] == "t"},
        )
    return new, events


async def _write_states(
    conn: asyncpg.Connection, changes: dict[str, dict[StateKey, FenceState | None]]
) -> None:
    gone, kept = _state_arrays(changes)
    if gone[0]:
        await conn.execute(_DELETE_STATES, *gone)
    if kept[0]:
        await conn.execute(_UPSERT_STATES, *kept)


async def _insert_events(conn: asyncpg.Connection, events: list[GeofenceEvent]) -> list[GeofenceEvent]:
    if not events:
        return []
    rows = await conn.fetch(_INSERT_EVENTS, *_event_arrays(events))
    _set_ids(
        events,
        {
            (r["type"], r["rule_id"], r["fence_id"], r["device_id"], r["ts"], r["other_device"]): str(r["id"])
            for r in rows
        },
    )
    return events


async def load_states(db: Database, keys: set[StateKey]) -> dict[str, dict[StateKey, FenceState]]:
    """Every stored fence state of a (rule, fence) in `keys`, by device (coroutine)."""
    async with db.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT device_id, rule_id, fence_id, inside, since_ts, pending, fired FROM fence_state"
        )
    states: dict[str, dict[StateKey, FenceState]] = {}
    for device, rule, fence, inside, since, pending, fired in rows:
        if (rule, fence) in keys:
            states.setdefault(device, {})[(rule, fence)] = FenceState(inside, since, pending, fired)
    return states


async def keep_states(db: Database, keys: set[StateKey]) -> int:
    """Delete the stored fence states whose (rule, fence) is no longer loaded; return how many (coroutine)."""
    rules = [k[0] for k in keys]
    fences = [k[1] for k in keys]
    async with db.pool.acquire() as conn:
        status: str = await conn.execute(
            """
            DELETE FROM fence_state s WHERE NOT EXISTS (
                SELECT 1 FROM unnest($1::text[], $2::text[]) AS k(rule_id, fence_id)
                WHERE k.rule_id = s.rule_id AND k.fence_id = s.fence_id)
            """,
            rules,
            fences,
        )
    return int(status.split()[-1])


async def inside_now(db: Database, fence: str, fleets: Sequence[str] | None) -> list[dict[str, Any]]:
    """Devices inside `fence` now, of `fleets` (None: all), oldest arrival first (coroutine)."""
    async with db.pool.acquire() as conn:
        rows = await conn.fetch(
            """
            SELECT s.device_id, d.fleet, s.since_ts FROM fence_state s JOIN devices d ON d.id = s.device_id
            WHERE s.rule_id = '' AND s.fence_id = $1 AND s.inside
              AND ($2::text[] IS NULL OR d.fleet = ANY($2::text[]))
            ORDER BY s.since_ts, s.device_id
            """,
            fence,
            list(fleets) if fleets is not None else None,
        )
    return [{"id": r[0], "fleet": r[1], "since_ts": r[2]} for r in rows]
