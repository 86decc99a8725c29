"""The geofences in force for a running server: loading and hot reload, every device's fence states and head,
its active trips (`tracker.trips.book`), the device pairs near now (`on: near`), and the per-batch
evaluation the ingest loop calls.

Reloading reads and compiles in a worker thread, then swaps the compiled `RuleSet` in one assignment, so
a batch is always evaluated against one whole version. A bad file leaves the rules in force (the loader
keeps each file's last good version) and its errors are kept for `/api/geofences`. Fence states of fences
or rules that are gone are dropped from memory and PostGIS; new ones start with no state (outside).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection, Sequence
from pathlib import Path

from tracker.fix_quality import flag_batch, flag_late, late_fixes
from tracker.geofence.config import FenceLoader, LoadResult
from tracker.geofence.detect import Detection, detect, newest_per_device
from tracker.geofence.proximity import NearPairs, near_candidates
from tracker.geofence.ruleset import RuleSet
from tracker.index import LiveIndex
from tracker.metrics import Metrics
from tracker.model import FenceState, Fix, Head, StateKey
from tracker.store import Database, fence_owner, near_pairs
from tracker.store import trips as trips_store
from tracker.store.fixes import good_fixes_around
from tracker.store.geofences import keep_states, load_states
from tracker.store.latest import newest_positions
from tracker.trips import detect as trip_detect
from tracker.trips.book import TripBook
from tracker.trips.changes import TripDetection

log = logging.getLogger("tracker.geofence")

THREAD_MIN_FIXES = 256  # batches this large are evaluated in a worker thread, off the event loop
TRIP_CHUNK = 1000  # devices whose trips are evaluated in one go (about 5 ms) before the loop runs again


class GeofenceEngine:
    """Owns the rules in force, the fence states and heads of every device (and, with several processes,
    which devices this process holds), and reloading."""

    def __init__(
        self,
        folder: Path,
        db: Database,
        metrics: Metrics,
        *,
        shared: bool = False,
        trip_detour: float = 1.3,
        trip_progress_ms: int = 30_000,
        index: LiveIndex | None = None,
    ) -> None:
        self.folder = folder
        # Every device's newest position (the live index), for `on: near` rules, and the pairs near now.
        self.index = index if index is not None else LiveIndex()
        self.pairs = NearPairs()
        self._db = db
        self._metrics = metrics
        self._loader = FenceLoader(folder)
        self._lock = asyncio.Lock()
        self.rules = RuleSet((), ())
        self.errors: tuple[str, ...] = ()
        self.states: dict[str, dict[StateKey, FenceState]] = {}
        self.heads: dict[str, Head] = {}
        # With other processes on the same database (`shared`): the fence epoch of each device held here.
        self.epochs: dict[str, int] | None = {} if shared else None
        # Active trips, evaluated with the fences: taken, checked and written with the same epochs.
        self.trips = TripBook()
        metrics.trips_active.set_function(lambda: len(self.trips))  # read when scraped
        self._trip_detour = trip_detour
        self._trip_progress_ms = trip_progress_ms

    async def start(self, heads: dict[str, Head]) -> None:
        """Load the folder and the stored fence states (coroutine); `heads` are the devices' newest fixes.
        A single process also loads every active trip (with several, a device's trips come with it)."""
        self.heads = heads
        await self.reload()
        self.states = await load_states(self._db, self.rules.keys)
        if self.epochs is None:
            for trip in await trips_store.all_active(self._db):
                self.trips.put(trip)
            near_rules = [r.id for r in self.rules.near_rules]
            if near_rules:
                self.pairs.replace((), await near_pairs.load(self._db, None, near_rules))

    async def reload(self) -> bool:
        """Re-read the folder; put a changed, valid set in force (coroutine). True when rules changed."""
        async with self._lock:
            result: LoadResult = await asyncio.to_thread(self._loader.load)
            if result.errors != self.errors:
                for error in result.errors:
                    log.error("geofences: %s", error)
            self.errors = result.errors
            self._metrics.geofence_errors.set(len(result.errors))
            in_force = self.rules
            if (result.fences, result.rules, result.filters) == (
                in_force.fences,
                in_force.rules,
                in_force.filters.filters,
            ):
                return False
            started = time.perf_counter()
            rules = await asyncio.to_thread(
                RuleSet, result.fences, result.rules, in_force.version + 1, result.filters
            )
            self.rules = rules
            for device in list(self.states):
                kept = {k: s for k, s in self.states[device].items() if k in rules.keys}
                if kept:
                    self.states[device] = kept
                else:
                    del self.states[device]
            if self.folder.is_dir():
                dropped = await keep_states(self._db, rules.keys)
                kept_near = {r.id for r in rules.near_rules}
                await near_pairs.keep_rules(self._db, kept_near)
                for key in [k for k in self.pairs.since if k[0] not in kept_near]:
                    self.pairs.drop(key)
            else:  # a mistyped --geofences must not wipe the stored state of the real rules
                log.warning("geofences folder %s does not exist; stored fence state is kept", self.folder)
                dropped = 0
            self._metrics.geofences_loaded.set(len(rules.fences))
            log.info(
                "geofences loaded: %d fences, %d rules, %d fix filters, %d stale fence states dropped, "
                "compiled in %.0f ms",
                len(rules.fences),
                len(rules.rules),
                len(rules.filters.filters),
                dropped,
                (time.perf_counter() - started) * 1000,
            )
            return True

    async def evaluate(self, fixes: Sequence[Fix]) -> Detection:
        """Detect the batch's events against the rules in force, and move its devices' trips (coroutine;
        big batches' fences in a thread, trips on the loop a chunk of devices at a time)."""
        rules = self.rules
        started = time.perf_counter()
        advancing = newest_per_device(fixes, self.heads)
        todo = flag_batch(rules.filters, fixes, advancing, self.heads)
        late = late_fixes(rules.filters, fixes, advancing)
        if late:  # an offline backlog (or a retry): tested against the stored fixes around it
            around = await good_fixes_around(self._db, {d: (fs[0].ts, fs[-1].ts) for d, fs in late.items()})
            for device, fs in late.items():
                limit = rules.filters.for_fleet(fs[0].fleet)
                assert limit is not None
                flag_late(limit, fs, around[device])
        near = None
        if rules.near_rules:
            near = (self.index, self.pairs)
            if self.epochs is not None:  # another process may have moved these devices' pairs and partners
                ids = [r.id for r in rules.near_rules]
                self.pairs.replace(todo, await near_pairs.load(self._db, list(todo), ids))
                others = near_candidates(rules.near_rules, todo, self.index, self.pairs)
                fresh = LiveIndex(self.index.resolution)
                if others:
                    fresh.load(await newest_positions(self._db, devices=sorted(others)))
                near = (fresh, self.pairs)
        if len(fixes) >= THREAD_MIN_FIXES and (rules.fences or rules.near_rules):
            detection = await asyncio.to_thread(detect, rules, self.states, self.heads, fixes, todo, near)
        else:
            detection = detect(rules, self.states, self.heads, fixes, todo, near)
        if self.trips.active:
            detection.trips = await self._move_trips(rules, todo)
        self._metrics.geofence_seconds.observe(time.perf_counter() - started)
        return detection

    async def _move_trips(self, rules: RuleSet, todo: dict[str, list[Fix]]) -> TripDetection | None:
        """The trips of the batch's devices, evaluated TRIP_CHUNK devices at a time with the loop free in
        between: cheap per fix (numpy), so a thread would only add its wait for the GIL. Each chunk reads
        the book as it is then; a device's trips and head change only between its own batches."""
        book, held = self.trips.active, self.trips.speeds
        devices = [d for d in todo if d in book]
        if not devices:
            return None
        out = TripDetection()
        for start in range(0, len(devices), TRIP_CHUNK):
            if start:
                await asyncio.sleep(0)
            active = {d: book[d] for d in devices[start : start + TRIP_CHUNK] if d in book}
            speeds = {d: held[d] for d in active if d in held}
            out.extend(
                trip_detect.evaluate(
                    active,
                    speeds,
                    {d: todo[d] for d in active},
                    self.heads,
                    rules.fence,
                    detour=self._trip_detour,
                    progress_ms=self._trip_progress_ms,
                )
            )
        return out

    async def take(self, devices: Collection[str]) -> None:
        """Hold `devices` for this process and read their fence state and newest fix from PostGIS, which
        include the last write of whichever process held them before (coroutine; several processes
        only, `tracker.store.fence_owner`). A device connecting here is taken at once; a device whose
        fixes arrive otherwise (HTTP) is taken by the batch that first has them."""
        if self.epochs is None or not devices:
            return
        epochs, states, heads, trips = await fence_owner.take(self._db, devices, self.rules.keys)
        for device in devices:
            self.trips.replace(device, trips.get(device, ()))
            if device in states:
                self.states[device] = states[device]
            else:
                self.states.pop(device, None)
            if device in heads:
                self.heads[device] = heads[device]
            else:
                self.heads.pop(device, None)
        self.epochs.update(epochs)

    def held(self, devices: Collection[str]) -> dict[str, int] | None:
        """The epochs this process holds `devices` under now (None: one process): a copy, for a write to
        check against, since a take meanwhile changes them."""
        if self.epochs is None:
            return None
        return {d: self.epochs[d] for d in devices if d in self.epochs}

    async def take_missing(self, fixes: Sequence[Fix]) -> None:
        """Take the devices of `fixes` this process does not hold (coroutine; several processes only)."""
        if self.epochs is not None:
            await self.take({f.device for f in fixes} - self.epochs.keys())

    def lost(self, devices: Collection[str]) -> None:
        """Another process took `devices`: their next batch takes them back (`take_missing`)."""
        if self.epochs is not None:
            for device in devices:
                self.epochs.pop(device, None)
            log.info("fence state of %d device(s) taken back from another process", len(devices))

    def apply(self, detection: Detection) -> None:
        """Make a committed detection the current state (states of since-removed rules are skipped)."""
        for device, head in detection.heads.items():
            old = self.heads.get(device)
            if old is None or head.ts > old.ts:
                self.heads[device] = head
        detection.apply_to(self.states, self.rules.keys)
        if detection.near is not None:
            detection.near.apply_to(self.pairs)
        if detection.trips is not None:
            self.trips.apply(detection.trips)
            for trip_event in detection.trips.stored:
                self._metrics.trip_events.labels(trip_event.status).inc()
        for event in detection.events:
            self._metrics.geofence_events.labels(event.type).inc()

    def forget(self, device: str) -> None:
        """Drop the device's fence state and newest fix (it was erased)."""
        self.states.pop(device, None)
        self.heads.pop(device, None)
        self.trips.forget(device)
        self.pairs.forget(device)
        if self.epochs is not None:
            self.epochs.pop(device, None)

    def webhooks(self, rule_id: str) -> tuple[str, ...]:
        """The webhook URLs of a rule in force."""
        rule = self.rules.by_id.get(rule_id)
        return rule.webhooks if rule is not None else ()
