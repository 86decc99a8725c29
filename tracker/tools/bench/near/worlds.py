"""One measured configuration of `tracker bench near`: a rule set, and the live state the engine keeps for
it (live index, near pairs, fence states, heads), moved batch by batch as `GeofenceEngine` does.

Policy: only `detect()` is timed, wall and process CPU, exactly as the engine calls it (the batch, its
`newest_per_device` worked out inside, and `near=(index, pairs)`); applying the detection afterwards (heads,
fence states, `near.apply_to(pairs)`, `index.advance`) is not timed, as the engine does it after COMMIT.
Every configuration starts from the same seeded index and sees the same batches, so differences between
them are the rules'.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from tracker.geofence.detect import detect
from tracker.geofence.proximity import NearPairs
from tracker.geofence.ruleset import RuleSet
from tracker.index import LiveIndex
from tracker.model import Fence, FenceState, Fix, Head, Position, Rule, StateKey
from tracker.tools.bench.report import percentile


class CountingIndex(LiveIndex):
    """The live index, counting the lookups `detect_near` makes in it and the candidates they return (the
    devices of the partner fleets in the grid disk, before they are measured; the batch's own index inside
    `detect_near` is not counted: it is looked up once for each of these)."""

    def __init__(self, resolution: int) -> None:
        super().__init__(resolution)
        self.lookups = 0
        self.found = 0

    def candidates(
        self, lat: float, lon: float, radius_m: float, fleets: Collection[str] | None = None
    ) -> list[Position]:
        found = super().candidates(lat, lon, radius_m, fleets)
        self.lookups += 1
        self.found += len(found)
        return found


@dataclass
class World:
    """A rule set and the engine's state for it, with what was measured so far."""

    name: str
    fences: str  # which fences: "none" or the folder's name
    distance_m: float | None  # the near rule's, None for the baseline without one
    rules: RuleSet
    index: CountingIndex
    pairs: NearPairs = field(default_factory=NearPairs)
    states: dict[str, dict[StateKey, FenceState]] = field(default_factory=dict)
    heads: dict[str, Head] = field(default_factory=dict)
    wall_ms: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)
    events: dict[str, int] = field(default_factory=dict)
    fixes: int = 0
    most_pairs: int = 0

    @classmethod
    def make(
        cls,
        name: str,
        fences_name: str,
        fences: Sequence[Fence],
        rules: Sequence[Rule],
        near: Rule | None,
        seed: Sequence[Fix],
        resolution: int,
    ) -> World:
        """A world whose live index and heads hold `seed` (every device's position before the run)."""
        ruleset = RuleSet(fences, [*rules, *([near] if near is not None else [])])
        index = CountingIndex(resolution)
        index.advance(seed)
        heads = {f.device: Head(f.ts, f.lat, f.lon) for f in seed}
        distance = near.distance_m if near is not None else None
        return cls(name, fences_name, distance, ruleset, index, heads=heads)

    def run(self, fixes: list[Fix], measured: bool) -> None:
        """Detect one batch (timed when `measured`), then apply it as the engine does after COMMIT."""
        cpu, wall = time.process_time(), time.perf_counter()
        found = detect(self.rules, self.states, self.heads, fixes, None, (self.index, self.pairs))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        for device, head in found.heads.items():
            old = self.heads.get(device)
            if old is None or head.ts > old.ts:
                self.heads[device] = head
        found.apply_to(self.states, self.rules.keys)
        if found.near is not None:
            found.near.apply_to(self.pairs)
        self.index.advance(fixes)
        self.most_pairs = max(self.most_pairs, len(self.pairs))
        if measured:
            self.wall_ms.append(wall * 1000)
            self.cpu_ms.append(cpu * 1000)
            self.fixes += len(fixes)
            for event in found.events:
                self.events[event.type] = self.events.get(event.type, 0) + 1

    def reset_counts(self) -> None:
        """Forget the lookups of the warm-up."""
        self.index.lookups = self.index.found = 0

    def summary(self, minutes: float) -> dict[str, Any]:
        """What was measured: per-batch cost, fixes/s, events per simulated minute, lookups."""
        ordered = sorted(self.wall_ms)
        total_s = sum(self.wall_ms) / 1000
        batches = len(self.wall_ms)
        lookups = self.index.lookups
        return {
            "fences": self.fences,
            "near_distance_m": self.distance_m,
            "rules": len(self.rules.rules),
            "batches": batches,
            "fixes": self.fixes,
            "batch_ms": {
                "p50": _ms(percentile(ordered, 50)),
                "p99": _ms(percentile(ordered, 99)),
                "max": _ms(ordered[-1] if ordered else None),
                "mean": _ms(total_s * 1000 / batches if batches else None),
            },
            "cpu_ms_per_batch": {
                "p50": _ms(percentile(sorted(self.cpu_ms), 50)),
                "mean": _ms(sum(self.cpu_ms) / batches if batches else None),
            },
            "fixes_per_s": round(self.fixes / total_s) if total_s else None,
            "events": dict(sorted(self.events.items())),
            "events_per_min": {k: round(v / minutes, 1) for k, v in sorted(self.events.items())},
            "near_pairs_at_end": len(self.pairs),
            "near_pairs_most": self.most_pairs,
            "index_lookups": lookups,
            "index_lookups_per_batch": round(lookups / batches, 1) if batches else None,
            "candidates_per_lookup": round(self.index.found / lookups, 2) if lookups else None,
        }


def _ms(x: float | None) -> float | None:
    return None if x is None else round(x, 3)
