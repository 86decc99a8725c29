"""Stored geofence events read back: the pages of `/api/events`, oldest first, scoped to a viewer's fleets.

The events are written by `store.geofences.write_batch`, in the batch's transaction; here they are only
read. A `near`/`far` event is stored once but listed to both sides (see `events_page`).
"""

from __future__ import annotations

from collections.abc import Sequence

from tracker.model import GeofenceEvent, Window
from tracker.store.database import Database

# The filters of an events page, on `events AS e`, but for the fleets and the device.
_PAGE_FILTERS = """e.ts >= $1 AND e.ts < $2 AND e.id > $3
    AND ($6::text IS NULL OR e.fence_id = $6) AND ($7::text IS NULL OR e.rule_id = $7)
    AND ($8::text IS NULL OR e.type = $8)"""
_OWN_SIDE = "($4::text[] IS NULL OR e.fleet = ANY($4::text[])) AND ($5::text IS NULL OR e.device_id = $5)"
_E_COLUMNS = "e.id, e.type, e.rule_id, e.fence_id, e.device_id, e.fleet, e.ts, e.lat, e.lon, e.other_device"

# Two halves, each an index walk in id order that stops at the page's end: the events of the fleets (and
# device), and the near/far events that name one of their devices as the other (`other_fleet`: its fleet
# when the event fired; `events_other_fleet`, or `events_other` by device), but for those of the first half.
# One OR of both could only be answered by reading the whole window.
_EVENTS_PAGE_SQL = f"""
(SELECT {_E_COLUMNS} FROM events AS e
 WHERE {_OWN_SIDE} AND {_PAGE_FILTERS}
 ORDER BY e.id LIMIT $9)
UNION ALL
(SELECT {_E_COLUMNS} FROM events AS e
 WHERE e.other_fleet IS NOT NULL AND ($4::text[] IS NULL OR e.other_fleet = ANY($4::text[]))
   AND ($5::text IS NULL OR e.other_device = $5) AND NOT ({_OWN_SIDE})
   AND {_PAGE_FILTERS}
 ORDER BY e.id LIMIT $9)
ORDER BY id LIMIT $9
"""


async def events_page(
    db: Database,
    *,
    fleets: Sequence[str] | None,
    device: str | None,
    fence: str | None,
    rule: str | None,
    type: str | None,
    window: Window,
) -> list[GeofenceEvent]:
    """Up to `window.limit` + 1 stored events matching every given filter in the window (`after`: an id),
    oldest first (coroutine).

    "Oldest first" is storage order (the id), which is fix-time order for each device. A `near`/`far`
    event is stored once, under the fleet of the device whose fix fired it; it belongs as much to the
    other device, so it is listed for the other's fleet (when it fired) and for `device` = the other too.
    """
    async with db.pool.acquire() as conn:
        rows = await conn.fetch(
            _EVENTS_PAGE_SQL,
            window.from_ms,
            window.to_ms,
            window.after or 0,
            list(fleets) if fleets is not None else None,
            device,
            fence,
            rule,
            type,
            window.limit + 1,
        )
    return [
        GeofenceEvent(
            r["type"],
            r["rule_id"],
            r["fence_id"],
            r["device_id"],
            r["fleet"],
            r["ts"],
            r["lat"],
            r["lon"],
            str(r["id"]),
            r["other_device"],
        )
        for r in rows
    ]
