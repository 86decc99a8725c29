"""What the storm checks in PostGIS afterwards: every acked fix stored, no geofence event twice.

The generator kept, per device, the time of every fix an ack covered and how many it had at each mark
(`Generators.ledger`), so each acked fix is known with the window its ack arrived in. They are copied
into a temporary table and looked up in `fixes` by primary key: an acked fix that is not there was
lost, which the contract forbids (an ack means committed). Duplicates are fence events stored twice for
the same (device, rule, fix time), which a restart must never cause: fence state is written in the
transaction of the fixes, and a fix sent again is a duplicate that fires nothing.

The run's fence (`write_fence`) is a band 1 degree north of the fleet, which every device jumps into
and out of every `cross_every` fixes (`Phones.cross_every`), with an enter and an exit rule.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg

FENCE_ID = "storm-band"
RULES = ("storm-enter", "storm-exit")


def write_fence(folder: Path) -> None:
    """The run's fence file in the rules folder `folder`: a band over the fleet's area moved 1 degree
    north (the devices start at 52.4-52.6 N, 13.25-13.55 E), entered and left by every device."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "storm.yaml").write_text(
        "fences:\n"
        f"  - {{id: {FENCE_ID}, polygon: [[13.0, 53.3], [14.0, 53.3], [14.0, 53.8], [13.0, 53.8]]}}\n"
        "rules:\n"
        f"  - {{id: {RULES[0]}, on: enter, fences: [{FENCE_ID}]}}\n"
        f"  - {{id: {RULES[1]}, on: exit, fences: [{FENCE_ID}]}}\n"
    )


def acked_rows(
    ledger: list[tuple[int, list[int], list[int]]], ids: list[str], marks: list[str], ts_base: int
) -> list[tuple[str, int, str]]:
    """(device id, fix ms, window its ack arrived in) per acked fix. `marks` names the windows opened by
    each mark in order; what was acked before the first belongs to `setup`."""
    rows = []
    names = ["setup", *marks]
    for index, acked, at_marks in ledger:
        bounds = [0, *at_marks, len(acked)]
        for w in range(len(bounds) - 1):
            for ms in acked[bounds[w] : bounds[w + 1]]:
                rows.append((ids[index], ts_base + ms, names[w]))
    return rows


async def check_acked(
    database_url: str, rows: list[tuple[str, int, str]], device_like: str
) -> dict[str, Any]:
    """Acked fixes looked up in `fixes`: acked, missing and doubly acked per window and in all, and
    count(*) of the stored fixes of the devices matching `device_like`."""
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        await conn.execute("CREATE TEMP TABLE acked (device_id text, ts_ms bigint, win text)")
        await conn.copy_records_to_table("acked", records=rows, timeout=300)
        found = await conn.fetch(
            """
            SELECT a.win, count(*) AS acked, count(*) FILTER (WHERE f.device_id IS NULL) AS missing
            FROM acked a LEFT JOIN fixes f
              ON f.device_id = a.device_id AND f.ts = timestamptz 'epoch' + a.ts_ms * interval '1 millisecond'
            GROUP BY a.win
            """,
            timeout=600,
        )
        stored = await conn.fetchval("SELECT count(*) FROM fixes WHERE device_id LIKE $1", device_like)
    finally:
        await conn.close()
    by_window = {r["win"]: {"acked": int(r["acked"]), "missing": int(r["missing"])} for r in found}
    distinct = len({(device, ms) for device, ms, _ in rows})
    return {
        "acked_fixes": len(rows),
        "acked_more_than_once": len(rows) - distinct,
        "stored_fixes": int(stored),
        "missing_acked_fixes": sum(w["missing"] for w in by_window.values()),
        "by_window": by_window,
    }


async def check_events(database_url: str, starts: list[tuple[str, int]]) -> dict[str, Any]:
    """Fence events stored, and the (device, rule, fix time) keys stored more than once, in all and by
    the window they were stored in (the last copy's; `starts`: (name, first unix ms) of each window,
    in order)."""
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        counts = await conn.fetch(
            """
            SELECT (extract(epoch FROM created) * 1000)::bigint AS ms, count(*) AS n FROM events
            WHERE rule_id = ANY($1::text[]) GROUP BY 1
            """,
            list(RULES),
            timeout=300,
        )
        twice = await conn.fetch(
            """
            SELECT device_id, rule_id, ts, count(*) AS n,
                   (extract(epoch FROM max(created)) * 1000)::bigint AS ms
            FROM events GROUP BY device_id, rule_id, ts HAVING count(*) > 1
            """,
            timeout=300,
        )
    finally:
        await conn.close()

    def window_of(ms: int) -> str:
        name = "setup"
        for label, first in starts:
            if ms >= first:
                name = label
        return name

    events: Counter[str] = Counter()
    for r in counts:
        events[window_of(int(r["ms"]))] += int(r["n"])
    duplicated: Counter[str] = Counter(window_of(int(r["ms"])) for r in twice)
    return {
        "events": sum(events.values()),
        "duplicated_keys": len(twice),
        "events_by_window": dict(events),
        "duplicated_keys_by_window": dict(duplicated),
        "duplicate_samples": [
            {"device": r["device_id"], "rule": r["rule_id"], "ts": int(r["ts"]), "count": int(r["n"])}
            for r in twice[:5]
        ],
    }
