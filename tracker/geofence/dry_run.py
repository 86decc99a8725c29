"""Trying rules on history: the events a rules file would have fired on the stored fixes of a window.

Policy: the same detector as live ingest, not a second one. `DryRun` holds one run's fence states and
heads (per device, empty at the window's start) and feeds each batch to `detect.detect`, then applies
the detection as the engine applies a committed one (`Detection.apply_to`, heads that only move forward).
The window is read in time chunks across every device in scope (`store.history_fixes`), so that all
devices advance together, as they did live; each chunk is detected in a worker thread while the next is
read, and its events come out in fix order. Without near rules, a chunk's triage (`triage.py`, numpy over
its columns) picks the fixes that may change some state, and only those become `Fix` objects and reach
the detector: most fixes of a day are a device driving on inside the same fences, which the detector
would skip anyway. Nothing is stored or delivered. Fixes stored with a flag are skipped, as live ingest
skipped them.

Posted files may name their own fences and those in force on the server, and are bounded: text size,
window length, devices named (`check_request`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tracker.errors import InvalidInput, NotFound
from tracker.geofence.config import combine_posted
from tracker.geofence.detect import detect, newest_per_device
from tracker.geofence.proximity import NearPairs, fix_position
from tracker.geofence.rules_file import parse_file, parse_text
from tracker.geofence.ruleset import RuleSet
from tracker.geofence.triage import Floats, Ints, Plan, Triage
from tracker.index import LiveIndex
from tracker.model import Fence, FenceState, Fix, GeofenceEvent, Head, StateKey
from tracker.store import Database
from tracker.store.history_fixes import CHUNK_FIXES, FixColumns, chunks, device_fleets, fixes_at, to_fixes

MAX_YAML_BYTES = 1 << 20
MAX_WINDOW_MS = 31 * 86_400_000
MAX_DEVICES = 5_000  # devices a request may name; without a list, every device of its fleets
MAX_EVENTS = 1_000_000  # a run that fires more is stopped: nobody reads them, and they cost memory
MAX_RULES = 500  # rules of a posted file
MAX_FENCES = 5_000  # fences of a posted file
MAX_NEAR_DISTANCE_M = 5_000.0  # a posted near rule's distance_m: each fix measures the devices that close
NEAR_SLICE_MS = 1_000  # with near rules, the batches a chunk is cut into (live batches last ~0.1 s)
# (fix, fence) pairs a chunk's fence lookup may give: a chunk has fewer fixes when fences overlap deeply
# (5,000 posted fences over one spot would give 1.25e9 pairs for a 250k-fix chunk, gigabytes of memory).
MAX_CHUNK_PAIRS = 10_000_000
POSTED_NAME = "posted.yaml"  # the file name in a posted file's `file:line: reason` errors


@dataclass
class DryRun:
    """One run's detector state: every device's fence states and head, from an empty start. Feed it
    batches in time order (a device's fixes never older than its head, which would fire nothing)."""

    rules: RuleSet
    states: dict[str, dict[StateKey, FenceState]] = field(default_factory=dict)
    heads: dict[str, Head] = field(default_factory=dict)
    fixes: int = 0  # fixes fed so far
    # For `on: near` rules: every device's newest position so far, and the pairs near now.
    index: LiveIndex = field(default_factory=LiveIndex)
    pairs: NearPairs = field(default_factory=NearPairs)
    events: int = 0  # events fired so far
    cancelled: bool = False  # set from the event loop when the caller went away: the thread stops
    triage: bool = True  # feed_columns feeds the detector only the fixes that may change state
    _triage: Triage | None = field(default=None, repr=False)

    def feed(self, fixes: Sequence[Fix]) -> list[GeofenceEvent]:
        """The events of one batch (sorted by time), in fix order (pure but for this run's state, which it
        advances). With near rules the batch is cut into NEAR_SLICE_MS slices, as live ingest sees a fleet
        in small batches: who is near whom is decided on each device's newest fix of a slice."""
        if not self.rules.near_rules or not fixes:
            return self._feed(fixes)
        slot = np.asarray([f.ts // NEAR_SLICE_MS for f in fixes], dtype=np.int64)
        cuts = np.flatnonzero(np.diff(slot)) + 1
        events: list[GeofenceEvent] = []
        for start, end in zip([0, *cuts.tolist()], [*cuts.tolist(), len(fixes)], strict=True):
            events.extend(self._feed(fixes[start:end]))
        return events

    def _feed(
        self,
        fixes: Sequence[Fix],
        crossed: Mapping[tuple[str, int], Sequence[int]] | None = None,
        counted: int | None = None,
    ) -> list[GeofenceEvent]:
        if self.cancelled:
            raise DryRunStopped("the dry-run was cancelled")
        todo = newest_per_device(fixes, self.heads)
        near = (self.index, self.pairs) if self.rules.near_rules else None
        detection = detect(self.rules, self.states, self.heads, fixes, todo, near, crossed)
        for device, head in detection.heads.items():  # as GeofenceEngine.apply does after COMMIT
            old = self.heads.get(device)
            if old is None or head.ts > old.ts:
                self.heads[device] = head
        detection.apply_to(self.states, self.rules.keys)
        if near is not None:
            if detection.near is not None:
                detection.near.apply_to(self.pairs)
            self.index.load((fix_position(fs[-1]), 0) for fs in todo.values())
        self.fixes += len(fixes) if counted is None else counted
        self.events += len(detection.events)
        if self.events > MAX_EVENTS:
            raise DryRunStopped(
                f"more than {MAX_EVENTS} events by ts {detection.events[-1].ts}; narrow from/to or devices"
            )
        return sorted(detection.events, key=lambda e: (e.ts, e.device))  # stable: a fix's own order

    def feed_columns(
        self, columns: FixColumns, devices: Sequence[str], fleets: Sequence[str]
    ) -> list[GeofenceEvent]:
        """`feed` for a chunk read by `store.history_fixes` (`devices`/`fleets`: its device list, the
        same for every chunk of a run). Without near rules, only the fixes the triage keeps (`triage.py`)
        become `Fix` objects and reach the detector, with the crossings it measured on every segment."""
        plan = self.plan(columns, devices, fleets)
        if plan is None:
            return self.feed(to_fixes(columns, devices, fleets))
        return self.feed_kept(*kept_fixes(plan, columns, devices, fleets), len(columns))

    def plan(self, columns: FixColumns, devices: Sequence[str], fleets: Sequence[str]) -> Plan | None:
        """The chunk's triage against this run's state; None when every fix must be fed (near rules)."""
        if not self.triage or self.rules.near_rules or not self.rules.fences:
            return None
        if self._triage is None:
            self._triage = Triage(self.rules, fleets)
        return self._triage.plan(columns, *self._heads_of(columns, devices), self._carried(columns, devices))

    def feed_kept(
        self, fixes: Sequence[Fix], crossed: Mapping[tuple[str, int], Sequence[int]], chunk_fixes: int
    ) -> list[GeofenceEvent]:
        """`feed` for the fixes a plan kept of a chunk of `chunk_fixes` (`kept_fixes`)."""
        return self._feed(fixes, crossed, chunk_fixes)

    def _heads_of(self, columns: FixColumns, devices: Sequence[str]) -> tuple[Ints, Floats, Floats]:
        """Per device index: its head's ts (-1: none), lon and lat (NaN: none)."""
        head_ts = np.full(len(devices), -1, dtype=np.int64)
        head_lon = np.full(len(devices), np.nan)
        head_lat = np.full(len(devices), np.nan)
        for d in np.unique(columns.device).tolist():
            head = self.heads.get(devices[d])
            if head is not None:
                head_ts[d], head_lon[d], head_lat[d] = head.ts, head.lon, head.lat
        return head_ts, head_lon, head_lat

    def _carried(self, columns: FixColumns, devices: Sequence[str]) -> tuple[Ints, Ints]:
        """(device index, since) of the unfired dwell visits the chunk's devices are in."""
        assert self._triage is not None
        dwell = self._triage.dwell_ids
        found = [
            (d, state.since)
            for d in np.unique(columns.device).tolist()
            for (rule, _), state in self.states.get(devices[d], {}).items()
            if rule in dwell and state.inside and not state.fired
        ]
        return np.array([d for d, _ in found], dtype=np.int64), np.array(
            [s for _, s in found], dtype=np.int64
        )


def kept_fixes(
    plan: Plan, columns: FixColumns, devices: Sequence[str], fleets: Sequence[str]
) -> tuple[list[Fix], dict[tuple[str, int], list[int]]]:
    """The fixes a plan kept, by device then time, and the fences each (device id, ts) crossed."""
    crossed = {(devices[d], ts): fences for (d, ts), fences in plan.crossed.items()}
    return fixes_at(columns, plan.kept, devices, fleets), crossed


class DryRunStopped(InvalidInput):
    """A run stopped before its end: cancelled, or beyond MAX_EVENTS (the message says which)."""


def _bounds(rules: RuleSet) -> tuple[str, ...]:
    """A posted file's problems of size: what it would cost the server to run, beyond its bounds."""
    errors = []
    if len(rules.rules) > MAX_RULES:
        errors.append(
            f"{POSTED_NAME}: a dry-run takes at most {MAX_RULES} rules; this file has {len(rules.rules)}"
        )
    if len(rules.fences) > MAX_FENCES:
        errors.append(f"{POSTED_NAME}: a dry-run takes at most {MAX_FENCES} fences with those in force")
    for rule in rules.near_rules:
        if rule.distance_m is not None and rule.distance_m > MAX_NEAR_DISTANCE_M:
            errors.append(
                f"{rule.source}: distance_m must be at most {MAX_NEAR_DISTANCE_M:.0f} in a dry-run; "
                f"got {rule.distance_m:g}"
            )
    return tuple(errors)


@dataclass(frozen=True, slots=True)
class Compiled:
    """A posted file ready to run, or its problems as `file:line: reason`."""

    rules: RuleSet | None
    errors: tuple[str, ...]


def compile_text(text: str, in_force: Sequence[Fence], geojson_folder: Path | None) -> Compiled:
    """Parse and validate a posted rules file (synchronous: run it in a thread) against the fences in
    force; `geojson_folder`: the one folder its `geojson:` may name plain files of (None: none)."""
    result = combine_posted(parse_text(POSTED_NAME, text, geojson_folder), in_force)
    if result.errors:
        return Compiled(None, result.errors)
    rules = RuleSet(result.fences, result.rules)
    too_big = _bounds(rules)
    return Compiled(None, too_big) if too_big else Compiled(rules, ())


def compile_file(path: Path, in_force: Sequence[Fence]) -> Compiled:
    """`compile_text` for a file of this machine (the CLI): its `geojson:` files are read as
    `tracker geofences check` reads them, beside it."""
    result = combine_posted(parse_file(path), in_force)
    if result.errors:
        return Compiled(None, result.errors)
    return Compiled(RuleSet(result.fences, result.rules), ())


def check_request(text_bytes: int, from_ms: int, to_ms: int, devices: Sequence[str] | None) -> None:
    """Raise InvalidInput naming the field when a request is beyond the bounds."""
    if text_bytes > MAX_YAML_BYTES:
        raise InvalidInput(f"yaml must be at most {MAX_YAML_BYTES} bytes; got {text_bytes}")
    if from_ms > to_ms:
        raise InvalidInput("from must not be later than to")
    if to_ms - from_ms > MAX_WINDOW_MS:
        raise InvalidInput(f"to - from must be at most {MAX_WINDOW_MS // 86_400_000} days")
    if devices is not None and len(devices) > MAX_DEVICES:
        raise InvalidInput(f"devices must name at most {MAX_DEVICES} devices; got {len(devices)}")


async def run(
    db: Database,
    rules: RuleSet,
    scope: Mapping[str, str],
    from_ms: int,
    to_ms: int,
) -> AsyncIterator[list[GeofenceEvent]]:
    """The events of `rules` on the stored fixes of the devices of `scope` (id -> fleet) with
    from <= ts < to, a chunk's worth at a time in fix order (async generator). Each chunk is detected in
    a worker thread while the next one is read, which keeps the event loop free and both cores busy."""
    state = DryRun(rules)
    devices = list(scope)
    fleets = [scope[d] for d in devices]
    if not rules.rules:
        return
    detecting: asyncio.Future[list[GeofenceEvent]] | None = None
    try:
        async for _, _, columns in chunks(db, devices, from_ms, to_ms, chunk_target(rules)):
            if detecting is not None:
                yield await detecting
            detecting = asyncio.ensure_future(asyncio.to_thread(state.feed_columns, columns, devices, fleets))
        if detecting is not None:
            events, detecting = await detecting, None
            yield events
    finally:
        if detecting is not None and not detecting.done():
            state.cancelled = True  # the thread cannot be cancelled: it stops at its next slice
            detecting.cancel()


def chunk_target(rules: RuleSet) -> int:
    """Fixes per chunk for `rules`: CHUNK_FIXES, fewer where so many fences overlap that the chunk's
    (fix, fence) pairs would pass MAX_CHUNK_PAIRS."""
    return max(1_000, min(CHUNK_FIXES, MAX_CHUNK_PAIRS // max(1, rules.index.max_overlap)))


async def scope_of(db: Database, devices: Sequence[str] | None) -> dict[str, str]:
    """Device id -> fleet of `devices` (None: every registered device), for a caller granted every fleet
    (the CLI); NotFound names the first device that is not registered (coroutine)."""
    known = await device_fleets(db, None, devices)
    for device in devices or ():
        if device not in known:
            raise NotFound(f"device {device!r} not found")
    return known
