"""Device-to-device proximity (`on: near`): roaming fences around every device of some fleets.

Policy: per rule, a pair of devices (one of `fleets`, the other of `near_fleets`, which defaults to the
same) is *near* from the fix that brings them within `distance_m` (event `near`) until a fix puts them
more than `distance_m` x 1.2 apart (event `far`); the gap between the two distances keeps GPS noise at
the edge from firing again and again. A pair is one state whichever device moved, so a pair within one
fleet fires once, not twice. The event is the moving device's, with `other` naming the other one.

Detection is pure and per batch, like the fence state machine: each moving device's newest good fix is
looked up in the live H3 index (`LiveIndex.candidates`, a grid disk sized to the distance, visiting only
the partner fleets' devices) for devices near it, never compared with all devices; devices moving in the
same batch are looked up among the batch's own positions; all candidates of the batch are then measured
in one geodesic call, and the pairs a mover is already near are measured again for `far`. The caller writes
the transitions conditionally (`tracker.store.near_pairs`): when two processes see the same approach at
once, only one stores the event.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from tracker.geo import cell_hex, distance_m, pairwise_distance_m
from tracker.index import LiveIndex
from tracker.model import Fix, GeofenceEvent, Position, Rule

FAR_FACTOR = 1.2  # a near pair is far again beyond distance_m times this

PairKey = tuple[str, str, str]  # (rule id, lower device id, higher device id)


def pair_key(rule: str, a: str, b: str) -> PairKey:
    """The one key of the pair (a, b) under `rule`, whichever moved."""
    return (rule, a, b) if a < b else (rule, b, a)


class NearPairs:
    """The pairs that are near now, with the time each became near, indexed by device."""

    def __init__(self) -> None:
        self.since: dict[PairKey, int] = {}
        self._by_device: dict[str, set[PairKey]] = {}

    def __len__(self) -> int:
        return len(self.since)

    def of(self, device: str) -> set[PairKey]:
        """The near pairs `device` is part of (do not mutate)."""
        return self._by_device.get(device, set())

    def put(self, key: PairKey, since: int) -> None:
        self.since[key] = since
        for device in key[1:]:
            self._by_device.setdefault(device, set()).add(key)

    def drop(self, key: PairKey) -> None:
        if self.since.pop(key, None) is None:
            return
        for device in key[1:]:
            keys = self._by_device.get(device)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_device[device]

    def forget(self, device: str) -> None:
        """Drop every pair of `device` (erased, or about to be read again from the database)."""
        for key in list(self.of(device)):
            self.drop(key)

    def replace(self, devices: Iterable[str], stored: Mapping[PairKey, int]) -> None:
        """Make the pairs of `devices` exactly those `stored` (read from the database)."""
        for device in devices:
            self.forget(device)
        for key, since in stored.items():
            self.put(key, since)


@dataclass
class NearDetection:
    """One batch's proximity transitions: the pairs that came near (since the fix's ts) and went far,
    and their events, each pair at most once."""

    events: list[GeofenceEvent] = field(default_factory=list)
    began: dict[PairKey, int] = field(default_factory=dict)
    ended: set[PairKey] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.began or self.ended)

    def apply_to(self, pairs: NearPairs) -> None:
        """Make the transitions part of `pairs`. After a conditional write this is the stored truth
        either way: a pair whose insert found it already near is near, one whose delete found nothing
        is not."""
        for key, since in self.began.items():
            pairs.put(key, since)
        for key in self.ended:
            pairs.drop(key)


def partners(rule: Rule, fleet: str) -> frozenset[str] | None | bool:
    """The fleets a device of `fleet` is paired with under `rule`: a set, None for every fleet, or False
    when the rule does not concern the fleet."""
    side_a = rule.fleets
    side_b = rule.near_fleets if rule.near_fleets is not None else rule.fleets
    found: list[frozenset[str] | None] = []
    if side_a is None or fleet in side_a:
        found.append(side_b)
    if side_b is None or fleet in side_b:
        found.append(side_a)
    if not found:
        return False
    if any(f is None for f in found):
        return None
    return frozenset().union(*(f for f in found if f is not None))


def near_candidates(
    rules: Iterable[Rule], todo: Mapping[str, list[Fix]], index: LiveIndex, pairs: NearPairs
) -> set[str]:
    """The devices `detect_near` may pair the batch's movers with, as `index` places them: those in the
    grid disks of the movers' near rules and those they are near now. With several processes the index
    knows another process's moves a broadcast interval late, so the caller reads these devices' newest
    stored fixes and passes them to `detect_near` as its index: a decision is never made on a position
    older than an acked fix (two devices reporting in turn through two processes flapped near/far)."""
    near_rules = [r for r in rules if r.on == "near" and r.distance_m is not None]
    found: set[str] = set()
    for device, fs in todo.items():
        fix = fs[-1]
        for rule in near_rules:
            fleets = partners(rule, fix.fleet)
            if fleets is False:
                continue
            assert rule.distance_m is not None and not isinstance(fleets, bool)
            found.update(p.device for p in index.candidates(fix.lat, fix.lon, rule.distance_m, fleets))
        found.update(k[1] if k[2] == device else k[2] for k in pairs.of(device))
    return found - set(todo)


def detect_near(
    rules: Iterable[Rule], todo: Mapping[str, list[Fix]], index: LiveIndex, pairs: NearPairs
) -> NearDetection | None:
    """The near/far transitions of the batch's moving devices (`todo`: each device's good fixes that
    advance it, in time order) against the other devices' newest positions in `index`; None when no
    near rule concerns the batch. Pure: `index` and `pairs` are read, not changed."""
    near_rules = [r for r in rules if r.on == "near" and r.distance_m is not None]
    if not near_rules:
        return None
    movers: dict[str, Fix] = {}
    for device, fs in todo.items():
        if any(partners(r, fs[0].fleet) is not False for r in near_rules):
            movers[device] = fs[-1]
    if not movers:
        return None
    batch = LiveIndex(index.resolution)  # where the batch puts its movers, which the index does not know yet
    batch.load((fix_position(f), 0) for f in movers.values())
    # Every (mover, rule) lookup's candidates first, then one geodesic call for all of them.
    asks: list[tuple[str, Fix, Rule]] = []
    others: list[list[Position]] = []
    for device, fix in movers.items():
        for rule in near_rules:
            fleets = partners(rule, fix.fleet)
            if fleets is False:
                continue
            assert rule.distance_m is not None and not isinstance(fleets, bool)
            found = batch.candidates(fix.lat, fix.lon, rule.distance_m, fleets)
            found += (
                p
                for p in index.candidates(fix.lat, fix.lon, rule.distance_m, fleets)
                if p.device not in movers
            )
            asks.append((device, fix, rule))
            others.append([p for p in found if p.device != device])
    sizes = [len(found) for found in others]
    flat = [p for found in others for p in found]
    from_lat = np.repeat([fix.lat for _, fix, _ in asks], sizes) if asks else np.zeros(0)
    from_lon = np.repeat([fix.lon for _, fix, _ in asks], sizes) if asks else np.zeros(0)
    to_lat = np.fromiter((p.lat for p in flat), np.float64, len(flat))
    to_lon = np.fromiter((p.lon for p in flat), np.float64, len(flat))
    dist = pairwise_distance_m(from_lat, from_lon, to_lat, to_lon).tolist()
    out = NearDetection()
    seen: set[PairKey] = set()
    offset = 0
    for (device, fix, rule), found, size in zip(asks, others, sizes, strict=True):
        assert rule.distance_m is not None
        fleet_of = {p.device: p.fleet for p in found}
        near = sorted(
            {
                p.device
                for p, d in zip(found, dist[offset : offset + size], strict=True)
                if d <= rule.distance_m
            }
        )
        offset += size
        for other in near:
            key = pair_key(rule.id, device, other)
            if key not in seen:
                seen.add(key)
                if key not in pairs.since:
                    out.began[key] = fix.ts
                    out.events.append(_event("near", rule, fix, other, fleet_of[other]))
        for key in sorted(pairs.of(device)):
            if key[0] != rule.id or key in seen:
                continue
            seen.add(key)
            other = key[2] if key[1] == device else key[1]
            moved = movers.get(other)
            where = (moved.lat, moved.lon, moved.fleet) if moved is not None else None
            if where is None and (known := index.get(other)) is not None:
                where = (known.lat, known.lon, known.fleet)
            if where is None:
                continue
            if distance_m(fix.lat, fix.lon, where[0], where[1]) > rule.distance_m * FAR_FACTOR:
                out.ended.add(key)
                out.events.append(_event("far", rule, fix, other, where[2]))
    return out


def fix_position(f: Fix) -> Position:
    """The live-index position of a fix."""
    return Position(f.device, f.fleet, f.ts, f.lat, f.lon, f.speed, f.heading, cell_hex(f.cell))


def _event(kind: str, rule: Rule, fix: Fix, other: str, other_fleet: str) -> GeofenceEvent:
    return GeofenceEvent(
        kind,
        rule.id,
        "",
        fix.device,
        fix.fleet,
        fix.ts,
        fix.lat,
        fix.lon,
        other=other,
        other_fleet=other_fleet,
    )
