"""Fences, rules and fix filters compiled for evaluation (`RuleSet`): one whole version of the rules in
force, swapped in by one assignment on reload, so a batch is always evaluated against one version.

Compiling builds what each batch needs at once: the fences' spatial index (`grid.py`), the rules on each
fence, the crossings' fence mask, the accuracy margins of the fences strict rules watch (`margin.py`), the
near rules, the merged fix filters (`tracker.fix_quality`), and the (rule, fence) keys of every fence
state (rule id PRESENCE, "", is the rule-independent presence behind "who is inside now").
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tracker.fix_quality import Filters
from tracker.geofence.grid import FenceIndex
from tracker.geofence.margin import Margins
from tracker.model import Fence, FixFilter, Rule

PRESENCE = ""  # the rule id of the rule-independent presence state


class RuleSet:
    """Fences, rules and fix filters compiled for evaluation: the spatial index and, per fence, the rules
    on it."""

    def __init__(
        self,
        fences: Sequence[Fence],
        rules: Sequence[Rule],
        version: int = 0,
        filters: Sequence[FixFilter] = (),
    ) -> None:
        self.version = version
        self.fences = tuple(fences)
        self.rules = tuple(rules)
        self.filters = Filters(filters)
        self.near_rules = tuple(r for r in self.rules if r.on == "near")
        self.index = FenceIndex(self.fences)
        position = {f.id: i for i, f in enumerate(self.fences)}
        self.fence_position = position
        self.by_fence: list[list[Rule]] = [[] for _ in self.fences]
        self.cross_by_fence: list[list[Rule]] = [[] for _ in self.fences]
        for rule in self.rules:
            for fid in rule.fences:
                target = self.cross_by_fence if rule.on == "cross" else self.by_fence
                target[position[fid]].append(rule)
        self.cross_mask = np.array([bool(rs) for rs in self.cross_by_fence], dtype=np.bool_)
        strict = sorted({position[fid] for r in self.rules if r.strict for fid in r.fences})
        self.margins = Margins(self.fences, strict)
        # the fleets with a strict rule (None: every fleet), whose fixes' accuracy circles are measured
        self.strict_fleets: frozenset[str] | None = frozenset()
        for r in self.rules:
            if r.strict:
                self.strict_fleets = (
                    None
                    if r.fleets is None or self.strict_fleets is None
                    else (self.strict_fleets | r.fleets)
                )
        self.keys = {(PRESENCE, f.id) for f in self.fences} | {
            (r.id, fid) for r in self.rules if r.on != "cross" for fid in r.fences
        }
        self.by_id = {r.id: r for r in self.rules}

    def fence(self, fence_id: str) -> Fence | None:
        """The loaded fence of that id, None when there is none."""
        position = self.fence_position.get(fence_id)
        return None if position is None else self.fences[position]
