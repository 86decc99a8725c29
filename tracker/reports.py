"""Daily reports: per device and day, how far it went, how long it moved and stood, its stops, its top
speed, its first and last fix, and how many geofence events and messages it had; per fleet, the totals.

Policy:
- The day is the local calendar day of an IANA time zone, from its first instant to the next day's
  (23 or 25 hours on a DST change), read as a [from, to) window on fix time.
- Movement is the stop/trip logic of `/stops` and `/trips` (`tracker.stops`), with the same radius and
  shortest stop, run on each device's day: `distance_m` and `moving_s` are the sums of the trips'
  `distance_m` and `duration_s`, `stopped_s` the sum of the stops' `duration_s`, `stops` their count and
  `max_speed` the highest of the trips' `max_speed` (null without a trip). So a report agrees with those
  endpoints over the same window. Flagged fixes are left out, as there.
- Every device of the scope is reported, also one that sent nothing that day (zeros, null times): who did
  not drive is part of the answer. Events count by fix time, messages by the time they were stored.
- The fixes arrive device by device from `tracker.store.reports`; each device's day is computed in a
  worker thread while the next ones stream in, so the event loop keeps serving.
"""

from __future__ import annotations

import asyncio
import csv
import io
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tracker.errors import InvalidInput
from tracker.model import EVENT_TYPES, Device
from tracker.stops import find_stops, find_trips, trip_item
from tracker.store import reports as store
from tracker.store.database import Database
from tracker.trail import Trail

DIRECTIONS = ("to_device", "from_device")
COLUMNS = (
    "device",
    "fleet",
    "date",
    "distance_m",
    "moving_s",
    "stopped_s",
    "stops",
    "max_speed",
    "first_ts",
    "last_ts",
)
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass(frozen=True)
class LocalDay:
    """One calendar day in a time zone, as the window of fix times it covers."""

    date: date
    tz: str
    from_ms: int  # the day's first instant
    to_ms: int  # the next day's first instant

    @property
    def hours(self) -> float:
        return (self.to_ms - self.from_ms) / 3_600_000


def local_day(date_text: str, tz_name: str, *, date_label: str = "date", tz_label: str = "tz") -> LocalDay:
    """The day `date_text` (YYYY-MM-DD) in the zone `tz_name`; InvalidInput naming `date_label` or
    `tz_label` (the caller's names for them: a query parameter, a flag) when either is not valid."""
    if not isinstance(date_text, str) or not _DATE.fullmatch(date_text):
        raise InvalidInput(f"{date_label} must be a day as YYYY-MM-DD; got {date_text!r:.40}")
    try:
        day = date.fromisoformat(date_text)
    except ValueError:
        raise InvalidInput(f"{date_label} is not a day of the calendar; got {date_text!r:.40}") from None
    if not 1971 <= day.year <= 9998:
        raise InvalidInput(f"{date_label} must be between 1971 and 9998; got {date_text!r:.40}")
    try:
        zone = ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise InvalidInput(
            f"{tz_label} must be an IANA time zone such as Europe/Berlin or UTC; got {tz_name!r:.60}"
        ) from None
    return LocalDay(day, tz_name, _first_instant_ms(day, zone), _first_instant_ms(day + timedelta(1), zone))


def _first_instant_ms(day: date, zone: ZoneInfo) -> int:
    """Milliseconds of the first instant of `day` in `zone`. Where midnight does not exist (a zone that
    springs forward at 00:00) fold=0 reads it with the offset before the change, which is the change's
    own instant: the day's first."""
    return round(datetime(day.year, day.month, day.day, tzinfo=zone).timestamp() * 1000)


def movement(track: Trail, radius_m: float, min_duration_ms: int) -> dict[str, Any]:
    """The movement figures of one device's day from its trail (pure; see the module policy)."""
    stops = find_stops(track, radius_m, min_duration_ms)
    trips = [trip_item(track, span) for span in find_trips(track, stops, radius_m)]
    speeds = [t["max_speed"] for t in trips if t["max_speed"] is not None]
    n = len(track)
    return {
        "distance_m": round(math.fsum(t["distance_m"] for t in trips), 3),
        "moving_s": round(math.fsum(t["duration_s"] for t in trips), 3),
        "stopped_s": round(sum(int(track.ts[b]) - int(track.ts[a]) for a, b in stops) / 1000, 3),
        "stops": len(stops),
        "max_speed": max(speeds) if speeds else None,
        "first_ts": int(track.ts[0]) if n else None,
        "last_ts": int(track.ts[-1]) if n else None,
    }


_STILL = movement(Trail.from_columns([], [], []), 1.0, 1)


@dataclass(frozen=True)
class DailyReport:
    """A report: a row per device (`days`) and per fleet (`fleets`), both in the contract's shape."""

    day: LocalDay
    days: list[dict[str, Any]]
    fleets: list[dict[str, Any]]

    def as_json(self) -> dict[str, Any]:
        return {"days": self.days, "fleets": self.fleets}


async def daily(
    db: Database, devices: Sequence[Device], day: LocalDay, radius_m: float, min_duration_s: float
) -> DailyReport:
    """The report of `devices` (a row each, in the order given) over `day` (coroutine)."""
    ids = [d.id for d in devices]
    min_duration_ms = round(min_duration_s * 1000)
    events = await store.event_counts(db, ids, day.from_ms, day.to_ms)
    messages = await store.message_counts(db, ids, day.from_ms, day.to_ms)
    moved: dict[str, dict[str, Any]] = {}
    async for device, track in store.tracks(db, ids, day.from_ms, day.to_ms):
        moved[device] = await asyncio.to_thread(movement, track, radius_m, min_duration_ms)
    kinds = list(EVENT_TYPES) + sorted({k for c in events.values() for k in c} - set(EVENT_TYPES))
    days = [
        {
            "device": d.id,
            "fleet": d.fleet,
            "date": day.date.isoformat(),
            **moved.get(d.id, _STILL),
            "events": {k: events.get(d.id, {}).get(k, 0) for k in kinds},
            "messages": {k: messages.get(d.id, {}).get(k, 0) for k in DIRECTIONS},
        }
        for d in devices
    ]
    return DailyReport(day, days, fleet_totals(days))


def fleet_totals(days: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per fleet (sorted by name), the sums of its devices' rows, the highest max_speed, the earliest
    first_ts and latest last_ts, and how many devices sent a fix that day (`active`) of how many."""
    out: dict[str, dict[str, Any]] = {}
    for row in days:
        f = out.setdefault(
            row["fleet"],
            {
                "fleet": row["fleet"],
                "date": row["date"],
                "devices": 0,
                "active": 0,
                "distance_m": 0.0,
                "moving_s": 0.0,
                "stopped_s": 0.0,
                "stops": 0,
                "max_speed": None,
                "first_ts": None,
                "last_ts": None,
                "events": dict.fromkeys(row["events"], 0),
                "messages": dict.fromkeys(row["messages"], 0),
            },
        )
        f["devices"] += 1
        f["active"] += row["first_ts"] is not None
        for key in ("distance_m", "moving_s", "stopped_s"):
            f[key] = round(f[key] + row[key], 3)
        f["stops"] += row["stops"]
        f["max_speed"] = _best(f["max_speed"], row["max_speed"], max)
        f["first_ts"] = _best(f["first_ts"], row["first_ts"], min)
        f["last_ts"] = _best(f["last_ts"], row["last_ts"], max)
        for group in ("events", "messages"):
            for k, n in row[group].items():
                f[group][k] = f[group].get(k, 0) + n
    return [out[name] for name in sorted(out)]


def _best(a: Any, b: Any, pick: Any) -> Any:
    return b if a is None else a if b is None else pick(a, b)


def csv_text(report: DailyReport) -> str:
    """The device rows as CSV: the contract's columns, then `events_<type>` per event type and
    `messages_to_device`, `messages_from_device`; empty cells for nulls."""
    kinds = list(report.days[0]["events"]) if report.days else list(EVENT_TYPES)
    header = [*COLUMNS, *(f"events_{k}" for k in kinds), *(f"messages_{k}" for k in DIRECTIONS)]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for row in report.days:
        writer.writerow(
            [
                *("" if row[c] is None else row[c] for c in COLUMNS),
                *(row["events"][k] for k in kinds),
                *(row["messages"][k] for k in DIRECTIONS),
            ]
        )
    return out.getvalue()
