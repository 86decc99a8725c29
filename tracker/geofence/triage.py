"""The dry-run's triage: which fixes of a chunk the detector must see, decided for the whole chunk at once.

Policy: the detector (`detect.py`) stays the one live ingest uses; the dry-run only spares it fixes that
change no state. Such a fix may be left out: the detector's walk treats the next fix it is fed exactly
as it would have after it (a fix covered by the same fences as the one before, with nothing pending, is
either skipped by the walk's quiet path or stepped through without effect, and both fire the same dwell
and speeding events). So the triage keeps, with numpy over the chunk's columns, every fix that may change
a state:

- change points: a device's first fix of the chunk (it may carry pending confirmations in), a fix
  covered by other fences than the fix before it, a fix whose accuracy circle straddles a strict rule's
  fence; and `window` fixes after each (the most `confirm_fixes` of any rule less one, plus one with
  strict rules), within which a confirmation pending from it counts up and flips;
- dwell due: for every visit start a kept fix inside a dwell fence could be (and every unfired dwell the
  device carries in), the first fix at or after its end, for every dwell length (found one early, so
  the fix after is kept too);
- speeding: between change points, the first fix outside their windows that is faster than each
  speeding limit of the fences covering it (a fired event leaves nothing pending);
- the fixes whose incoming segment crosses a cross rule's fence (measured here on every segment, and
  handed to the detector, which would otherwise measure segments between the fixes it was fed), and each
  device's last fix of the chunk (its head).

Fixes at or before the device's head, and repeated timestamps but the first, are dropped as the
detector's `newest_per_device` drops them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import overload

import numpy as np
import numpy.typing as npt

from tracker.geofence.crossings import segment_crossings
from tracker.geofence.ruleset import RuleSet
from tracker.store.history_fixes import FixColumns

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]

_DEVICE_SHIFT = 42  # (device, ms since the chunk's first fix) packed in one int64 key
_SPEED_SLACK = 1e-9  # km/h: a fix this close to a limit is kept (rounding of speed * 3.6)


@dataclass(frozen=True, slots=True)
class Plan:
    """One chunk's triage: `order` indexes the chunk's fixes that advance their device, by device then
    time; `keep` marks those the detector must see; `crossed`: (device index, ts) -> fences crossed."""

    order: Ints
    keep: Bools
    crossed: dict[tuple[int, int], list[int]]

    @property
    def kept(self) -> Ints:
        """The chunk indexes of the fixes to detect, by device then time."""
        return self.order[self.keep]


class Triage:
    """One run's rules, compiled for the triage of its chunks (`fleets`: each device index's fleet)."""

    def __init__(self, rules: RuleSet, fleets: Sequence[str]) -> None:
        self.rules = rules
        confirm = [r.confirm_fixes for r in rules.rules if r.on not in ("cross", "near")]
        # A confirmation pending from a change point flips within its rule's confirm_fixes (the change
        # point's included); after a fix whose accuracy circle straddles a fence, one fix later.
        self.window = max([1, *confirm]) - 1 + (1 if rules.margins else 0)
        n = len(rules.fences)
        pos = rules.fence_position
        self.dwell_ids: set[str] = set()
        dwell_ms: set[float] = set()
        self.dwell_fence = np.zeros(n, dtype=np.bool_)
        limits: dict[float, Bools] = {}
        for r in rules.rules:
            if r.on == "dwell" and r.dwell_s is not None:
                self.dwell_ids.add(r.id)
                dwell_ms.add(r.dwell_s * 1000)
                self.dwell_fence[[pos[f] for f in r.fences]] = True
            elif r.on == "speeding" and r.max_speed_kmh is not None:
                mask = limits.setdefault(float(r.max_speed_kmh), np.zeros(n, dtype=np.bool_))
                mask[[pos[f] for f in r.fences]] = True
        self.dwell_ms = sorted(dwell_ms)
        self.limits = sorted(limits.items())
        strict = rules.strict_fleets
        self.strict = np.array([strict is None or f in strict for f in fleets], dtype=np.bool_)

    def plan(
        self,
        columns: FixColumns,
        head_ts: Ints,
        head_lon: Floats,
        head_lat: Floats,
        carried: tuple[Ints, Ints],
    ) -> Plan:
        """The triage of one chunk. Per device index: its head's ts (-1: none), lon and lat (NaN: none);
        `carried`: (device index, since) of the unfired dwell visits the devices are in."""
        rules = self.rules
        order = np.lexsort((columns.ts, columns.device))  # stable: the first of repeated timestamps
        dev, ts = columns.device[order], columns.ts[order]
        new_dev = np.r_[True, dev[1:] != dev[:-1]]
        valid = (ts > head_ts[dev]) & (new_dev | np.r_[True, ts[1:] != ts[:-1]])
        order, dev, ts = order[valid], dev[valid], ts[valid]
        n = len(order)
        if n == 0:
            return Plan(order, np.zeros(0, dtype=np.bool_), {})
        lon, lat = columns.lon[order], columns.lat[order]
        first = np.r_[True, dev[1:] != dev[:-1]]
        last = np.r_[dev[1:] != dev[:-1], True]
        point, fence = rules.index.inside(lon, lat)  # sorted by point, then fence
        covered = PairSets(point, fence, n)
        change = first | _other_fences(point, fence, n)
        if rules.margins:
            accuracy = np.where(self.strict[dev], np.nan_to_num(columns.accuracy[order], nan=0.0), 0.0)
            unsure, _ = rules.margins.unsure(lon, lat, accuracy, covered)
            change[unsure] = True
        near_change = _window(change, self.window)
        due = np.zeros(n, dtype=np.bool_)  # a dwell due, or one fix before
        fast = np.zeros(n, dtype=np.bool_)
        if self.dwell_ms:
            in_dwell = _any_of(point, fence, self.dwell_fence, n)
            starts = np.flatnonzero(near_change & in_dwell)
            s_dev = np.concatenate([dev[starts], carried[0]])
            s_ts = np.concatenate([ts[starts], carried[1]])
            base = int(ts.min())
            key = (dev << _DEVICE_SHIFT) + (ts - base)
            for d_ms in self.dwell_ms:
                at = np.ceil(s_ts + d_ms).astype(np.int64) - 1 - base  # one early: a window of 2
                at = np.clip(at, 0, (1 << _DEVICE_SHIFT) - 1)
                j = np.searchsorted(key, (s_dev << _DEVICE_SHIFT) + at)
                ok = j < n
                j = j[ok]
                due[j[dev[j] == s_dev[ok]]] = True
        if self.limits:
            speed_kmh = columns.speed[order] * 3.6  # NaN (no speed) is never faster
            run = np.cumsum(change | due)
            for limit, on in self.limits:
                over = np.flatnonzero(
                    (speed_kmh > limit - _SPEED_SLACK) & ~near_change & _any_of(point, fence, on, n)
                )
                _, firsts = np.unique(run[over], return_index=True)
                fast[over[firsts]] = True
        keep = _window(change, self.window) | _window(due, 1) | fast | last
        crossed: dict[tuple[int, int], list[int]] = {}
        if rules.cross_mask.any():
            hd = dev[first]
            h_lon = np.full(n, np.nan)
            h_lat = np.full(n, np.nan)
            h_lon[first], h_lat[first] = head_lon[hd], head_lat[hd]
            by_position = segment_crossings(rules, first, h_lon, h_lat, lon, lat, covered)
            for p, fences in by_position.items():
                keep[p] = True
                crossed[(int(dev[p]), int(ts[p]))] = fences
        return Plan(order, keep, crossed)


def _other_fences(point: Ints, fence: Ints, n: int) -> Bools:
    """Per fix (of one device's run: compared with the fix before it), whether the set of fences
    covering it differs from the one covering the fix before it. Exact: counts, then fence by fence."""
    count = np.bincount(point, minlength=n)
    out = np.zeros(n, dtype=np.bool_)
    out[1:] = count[1:] != count[:-1]
    if len(point):
        c = count[point]
        prev = np.where(point > 0, count[np.maximum(point - 1, 0)], -1)
        same = prev == c  # then the fix before has its c pairs just before this fix's c pairs
        back = np.maximum(np.arange(len(point)) - c, 0)
        out[point[same & (fence != fence[back])]] = True
    return out


def _any_of(point: Ints, fence: Ints, mask: Bools, n: int) -> Bools:
    """Per fix, whether a fence of `mask` covers it."""
    return np.bincount(point[mask[fence]], minlength=n) > 0


def _window(change: Bools, after: int) -> Bools:
    """Each change point and the `after` fixes following it."""
    at = np.arange(len(change))
    latest = np.maximum.accumulate(np.where(change, at, -1))
    return (latest >= 0) & (at - latest <= after)


class PairSets(Sequence[set[int]]):
    """Per fix, the set of fences covering it, made on demand from (point, fence) pairs sorted by point:
    the few fixes the margins and crossings ask about, not a set per fix of the chunk."""

    def __init__(self, point: Ints, fence: Ints, n: int) -> None:
        self._bounds = np.searchsorted(point, np.arange(n + 1))
        self._fence = fence
        self._n = n

    def __len__(self) -> int:
        return self._n

    @overload
    def __getitem__(self, i: int) -> set[int]: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[set[int]]: ...
    def __getitem__(self, i: int | slice) -> set[int] | Sequence[set[int]]:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(self._n))]
        if i < 0:
            i += self._n
        return set(self._fence[int(self._bounds[i]) : int(self._bounds[i + 1])].tolist())
