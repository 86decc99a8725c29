"""Geofence detection: the contract's state machine, pure (state in, events and state changes out).

Per device and (rule, fence), in fix-time order, a `FenceState` says whether the device counts as inside,
since which fix, how many consecutive fixes disagree (for `confirm_fixes`), and whether the visit's
dwell or speeding event has fired. A missing state means outside: "unknown" behaves exactly like
outside in every rule of the contract, so only devices near or inside a fence cost memory. Rule id ""
is the rule-independent presence (confirm 1) behind "who is inside now". A strict rule
(`accuracy: strict`) takes no step on a fix whose accuracy circle straddles the fence (`margin.py`).

Only fixes newer than the device's newest processed fix (`heads`) are evaluated; older ones are stored
by the caller but fire nothing. `detect` never mutates its inputs: the caller writes the returned
changes and events in the same transaction as the fixes, and applies them to memory only after COMMIT.
"""

from __future__ import annotations

import math
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from tracker.geofence.crossings import batch_crossings
from tracker.geofence.proximity import NearDetection, NearPairs, detect_near
from tracker.geofence.ruleset import PRESENCE, RuleSet
from tracker.index import LiveIndex
from tracker.model import Fence, FenceState, Fix, GeofenceEvent, Head, Rule, StateKey
from tracker.trips.changes import TripDetection

DeviceStates = Mapping[str, Mapping[StateKey, FenceState]]  # device id -> its fence states


@dataclass
class Detection:
    """What one batch changed: events in order, fence state changes (None = back to outside), new heads,
    the trips it moved (`tracker.trips.detect`; None when no device of the batch has a trip) and the
    device pairs it brought near or far (`tracker.geofence.proximity`; their events are in `events`)."""

    version: int
    events: list[GeofenceEvent] = field(default_factory=list)
    state_changes: dict[str, dict[StateKey, FenceState | None]] = field(default_factory=dict)
    heads: dict[str, Head] = field(default_factory=dict)
    trips: TripDetection | None = None
    near: NearDetection | None = None

    @property
    def changes_state(self) -> bool:
        """True when something must be written besides the fixes."""
        return (
            bool(self.events)
            or any(self.state_changes.values())
            or (self.trips is not None and bool(self.trips.writes))
            or bool(self.near)
        )

    def apply_to(
        self, states: dict[str, dict[StateKey, FenceState]], keys: Container[StateKey] | None = None
    ) -> None:
        """Make `state_changes` part of `states`, in place; with `keys`, changed states of other (rule,
        fence) pairs are dropped rather than kept (rules removed while the batch was being written)."""
        for device, changed in self.state_changes.items():
            mine = states.setdefault(device, {})
            for key, state in changed.items():
                if state is None:
                    mine.pop(key, None)
                elif keys is None or key in keys:
                    mine[key] = state
            if not mine:
                del states[device]


def newest_per_device(fixes: Sequence[Fix], heads: Mapping[str, Head]) -> dict[str, list[Fix]]:
    """Each device's fixes that advance its head, in time order (repeated timestamps: the first one)."""
    by_device: dict[str, list[Fix]] = {}
    for f in fixes:
        by_device.setdefault(f.device, []).append(f)
    out: dict[str, list[Fix]] = {}
    for device, fs in by_device.items():
        head = heads.get(device)
        last = head.ts if head is not None else None
        kept = []
        for f in sorted(fs, key=lambda f: f.ts):
            if last is None or f.ts > last:
                kept.append(f)
                last = f.ts
        if kept:
            out[device] = kept
    return out


def step(state: FenceState | None, raw: bool, confirm: int, ts: int) -> tuple[FenceState | None, bool]:
    """Advance one fence state by one fix whose raw position is `raw`; return (new state, whether it
    flipped)."""
    inside = state.inside if state is not None else False
    pending = state.pending if state is not None else 0
    pending = 0 if raw == inside else pending + 1
    if pending >= confirm:
        new = FenceState(True, ts) if raw else None
        return new, True
    if state is None:
        return (FenceState(False, 0, pending) if pending else None), False
    if not inside and pending == 0:
        return None, False
    if pending == state.pending:  # the common case, a device staying inside: no new object
        return state, False
    return replace(state, pending=pending), False


def detect(
    rules: RuleSet,
    states: DeviceStates,
    heads: Mapping[str, Head],
    fixes: Sequence[Fix],
    todo: Mapping[str, list[Fix]] | None = None,
    near: tuple[LiveIndex, NearPairs] | None = None,
    crossed: Mapping[tuple[str, int], Sequence[int]] | None = None,
) -> Detection:
    """Evaluate a batch of fixes against `rules`; see the module docstring (`todo`: the batch's
    `newest_per_device`, when the caller has it already; `near`: the other devices' newest positions and
    the pairs near now, for `on: near` rules; `crossed`: the fences each (device, ts) crossed coming in,
    measured by a caller that feeds only some of a device's fixes, instead of the batch's segments). Pure."""
    out = Detection(rules.version)
    if todo is None:
        todo = newest_per_device(fixes, heads)
    for device, fs in todo.items():
        last = fs[-1]
        out.heads[device] = Head(last.ts, last.lat, last.lon)
    _detect_fences(rules, states, heads, todo, out, crossed)
    if near is not None and rules.near_rules and todo:
        out.near = detect_near(rules.near_rules, todo, *near)
        if out.near is not None:
            out.events.extend(out.near.events)
    return out


def _detect_fences(
    rules: RuleSet,
    states: DeviceStates,
    heads: Mapping[str, Head],
    todo: Mapping[str, list[Fix]],
    out: Detection,
    given: Mapping[tuple[str, int], Sequence[int]] | None,
) -> None:
    """The fence rules' part of `detect`, into `out`."""
    if not todo or not rules.fences:
        return
    ordered = [f for fs in todo.values() for f in fs]
    lon = np.fromiter((f.lon for f in ordered), dtype=np.float64, count=len(ordered))
    lat = np.fromiter((f.lat for f in ordered), dtype=np.float64, count=len(ordered))
    point, fence = rules.index.inside(lon, lat)
    # Each fix's set of covering fences; most fixes are in none, and share one empty set (never mutated).
    none: set[int] = set()
    raw = [none] * len(ordered)
    if len(point):
        starts = np.flatnonzero(np.r_[True, point[1:] != point[:-1]])
        bounds = [*starts.tolist(), len(point)]
        fences = fence.tolist()
        for k, p in enumerate(point[starts].tolist()):
            raw[p] = set(fences[bounds[k] : bounds[k + 1]])
    if given is None:
        crossed = batch_crossings(rules, todo, heads, lon, lat, raw)
    elif given:
        crossed = {i: list(c) for i, f in enumerate(ordered) if (c := given.get((f.device, f.ts)))}
    else:
        crossed = {}
    unsure = rules.margins.unsure_per_fix(ordered, rules.strict_fleets, lon, lat, raw)
    offset = 0
    for device, fs in todo.items():
        end = offset + len(fs)
        _walk(
            rules,
            device,
            fs,
            raw[offset:end],
            unsure[offset:end],
            crossed,
            offset,
            states.get(device, {}),
            out,
        )
        offset = end


def _walk(
    rules: RuleSet,
    device: str,
    fixes: list[Fix],
    raw: list[set[int]],
    unsure: list[set[int]],
    crossed: Mapping[int, list[int]],
    offset: int,
    before: Mapping[StateKey, FenceState],
    out: Detection,
) -> None:
    """Run one device's fixes through its fence states, collecting events and changed states into `out`."""
    states = dict(before)
    changed: dict[StateKey, FenceState | None] = {}
    fleet = fixes[0].fleet
    pos_of = rules.fence_position
    rules_here: dict[int, list[Rule | None]] = {}  # fence index -> the rules on it for this fleet
    # `quiet`: the last fix changed no state and left none pending (confirm_fixes). Then a fix covered by
    # the same fences, sure of each, changes nothing either (every step would return its state as it
    # is), unless an unfired dwell comes due (`wake_ts`) or the fix is fast enough for an unfired
    # speeding rule (`speed_cap`, km/h). Most fixes are such (a device driving on inside one district),
    # and skip the rules. The dry-run's triage (triage.py) feeds only the fixes that may miss this path:
    # a change here is a change there.
    quiet = False
    wake_ts, speed_cap = math.inf, math.inf
    previous: set[int] | None = None
    for i, fix in enumerate(fixes):
        here = raw[i]
        if (
            quiet
            and not unsure[i]
            and (here is previous or here == previous)
            and fix.ts < wake_ts
            and (fix.speed is None or fix.speed * 3.6 <= speed_cap)
        ):
            previous = here
            _cross(rules, fleet, fix, crossed.get(offset + i, ()), out.events)
            continue
        previous = here
        moved = False
        wake_ts, speed_cap = math.inf, math.inf
        relevant = here.union([pos_of[fid] for _, fid in states if fid in pos_of]) if states else here
        for fi in sorted(relevant):
            fence = rules.fences[fi]
            is_in = fi in here
            applicable = rules_here.get(fi)
            if applicable is None:  # None first: the presence state
                applicable = rules_here[fi] = [None, *(r for r in rules.by_fence[fi] if r.applies_to(fleet))]
            for rule in applicable:
                key = (rule.id if rule is not None else PRESENCE, fence.id)
                old = states.get(key)
                if rule is not None and rule.strict and fi in unsure[i]:
                    new, flipped = old, False  # the accuracy circle straddles the edge: no evidence
                else:
                    new, flipped = step(old, is_in, rule.confirm_fixes if rule is not None else 1, fix.ts)
                if rule is not None:
                    new = _fire(rule, fence, fix, old, new, flipped, out.events)
                    if new is not None and new.inside and not new.fired:
                        if rule.on == "dwell" and rule.dwell_s is not None:
                            wake_ts = min(wake_ts, new.since + rule.dwell_s * 1000)
                        elif rule.on == "speeding" and rule.max_speed_kmh is not None:
                            speed_cap = min(speed_cap, rule.max_speed_kmh)
                if new is not old:  # step and _fire return the same object when nothing changed
                    moved = True
                    if new is None:
                        states.pop(key, None)
                    else:
                        states[key] = new
                    changed[key] = new
        quiet = not (moved or unsure[i]) and all(s.pending == 0 for s in states.values())
        _cross(rules, fleet, fix, crossed.get(offset + i, ()), out.events)
    if changed:
        out.state_changes[device] = changed


def _cross(rules: RuleSet, fleet: str, fix: Fix, fences: Iterable[int], events: list[GeofenceEvent]) -> None:
    """The cross events of one fix whose incoming segment crossed `fences`."""
    for fi in fences:
        fence = rules.fences[fi]
        for rule in rules.cross_by_fence[fi]:
            if rule.applies_to(fleet):
                events.append(_event("cross", rule, fence, fix))


def _fire(
    rule: Rule,
    fence: Fence,
    fix: Fix,
    old: FenceState | None,
    new: FenceState | None,
    flipped: bool,
    events: list[GeofenceEvent],
) -> FenceState | None:
    """Append the event `rule` fires on this fix, if any; return the state with its `fired` flag set."""
    if rule.on == "enter" and flipped and new is not None:
        events.append(_event("enter", rule, fence, fix))
    elif rule.on == "exit" and flipped and new is None and old is not None and old.inside:
        events.append(_event("exit", rule, fence, fix))
    elif new is not None and new.inside and not new.fired:
        if rule.on == "dwell" and rule.dwell_s is not None and fix.ts - new.since >= rule.dwell_s * 1000:
            events.append(_event("dwell", rule, fence, fix))
            return replace(new, fired=True)
        if (
            rule.on == "speeding"
            and rule.max_speed_kmh is not None
            and fix.speed is not None
            and fix.speed * 3.6 > rule.max_speed_kmh
        ):
            events.append(_event("speeding", rule, fence, fix))
            return replace(new, fired=True)
    return new


def _event(kind: str, rule: Rule, fence: Fence, fix: Fix) -> GeofenceEvent:
    return GeofenceEvent(kind, rule.id, fence.id, fix.device, fix.fleet, fix.ts, fix.lat, fix.lon)
