"""Fix filters (contract part 2, "Fix quality"): which fixes of a batch are set aside, and why.

Policy: a flagged fix is stored with its `flag` (it is what the device said) but does not move the live
position, the fence state or a trip, and trails leave it out unless asked. Per device, in fix-time order,
each fix newer than the device's newest good fix (its head) is tested against the previous *good* fix:
`inaccurate` when its accuracy radius is above `max_accuracy_m`; `jump` when reaching it took more than
`max_speed_kmh`; `duplicate_position` when it lies within `min_distance_m` of the previous good fix (with
`keep_every_s`, like Traccar's skipLimit: unless that fix is more than that older, so a device standing
still keeps a fix that often, and its dwell rules and last-seen go on). So
no two consecutive good fixes are further apart than the speed allows. A device whose last good fix was
itself wrong (a cold start far away) is freed as time passes and the implied speed falls; with
`jump_window_s` a fix more than that after the last good one is believed whatever the speed, which
frees it sooner at the price of that one step. A late fix (older than the head: an offline backlog) is
tested against the stored good fixes around it (`flag_late`, which the engine reads for it): against the
good fix before it, and a late fix from which the next stored good fix is out of reach is a jump too, so
a backlog cannot draw a jump into a trail either.

Where several filters name a fleet, each test takes the strictest threshold. The tests run on the whole
batch at once (numpy, one geodesic call); only a device with a flagged fix is then walked fix by fix,
since each verdict moves the reference of the next.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from tracker.geo import distance_m, pairwise_distance_m
from tracker.model import Fix, FixFilter, Head

INACCURATE, JUMP, DUPLICATE_POSITION = "inaccurate", "jump", "duplicate_position"


class Filters:
    """The filters in force, merged per fleet (the strictest of each threshold)."""

    def __init__(self, filters: Iterable[FixFilter] = ()) -> None:
        self.filters = tuple(filters)
        self._by_fleet: dict[str, FixFilter | None] = {}

    def __bool__(self) -> bool:
        return bool(self.filters)

    def for_fleet(self, fleet: str) -> FixFilter | None:
        """The merged filter of `fleet`, None when no filter applies to it."""
        try:
            return self._by_fleet[fleet]
        except KeyError:
            pass
        found = [f for f in self.filters if f.applies_to(fleet)]
        merged = None
        if found:
            merged = FixFilter(
                fleets=frozenset((fleet,)),
                max_accuracy_m=_least(f.max_accuracy_m for f in found),
                max_speed_kmh=_least(f.max_speed_kmh for f in found),
                min_distance_m=_most(f.min_distance_m for f in found),
                jump_window_s=_most(f.jump_window_s for f in found)
                if all(f.jump_window_s for f in found)
                else None,
                keep_every_s=_most(f.keep_every_s for f in found)
                if all(f.keep_every_s for f in found if f.min_distance_m)
                else None,
            )
        self._by_fleet[fleet] = merged
        return merged


def _least(values: Iterable[float | None]) -> float | None:
    given = [v for v in values if v is not None]
    return min(given) if given else None


def _most(values: Iterable[float | None]) -> float | None:
    given = [v for v in values if v is not None]
    return max(given) if given else None


def flag_batch(
    filters: Filters, fixes: Sequence[Fix], todo: Mapping[str, list[Fix]], heads: Mapping[str, Head]
) -> dict[str, list[Fix]]:
    """Set the `flag` of every fix of the batch (None when it passes); return `todo` (each device's fixes
    that advance its head, in time order) without the flagged ones. Evaluating a batch again (another
    process took one of its devices) starts from clean flags."""
    for f in fixes:
        f.flag = None
    if not filters or not fixes:
        return dict(todo)
    limits = [filters.for_fleet(f.fleet) for f in fixes]
    accuracy_max = np.array(
        [
            lim.max_accuracy_m if lim is not None and lim.max_accuracy_m is not None else math.inf
            for lim in limits
        ]
    )
    accuracy = np.array([f.accuracy if f.accuracy is not None else 0.0 for f in fixes], dtype=np.float64)
    for i in np.flatnonzero(accuracy > accuracy_max).tolist():
        fixes[i].flag = INACCURATE
    out: dict[str, list[Fix]] = {}
    walked: list[tuple[str, FixFilter, list[Fix]]] = []
    for device, fs in todo.items():
        limit = filters.for_fleet(fs[0].fleet)
        good = [f for f in fs if f.flag is None]
        if limit is not None and good and (limit.max_speed_kmh is not None or limit.min_distance_m):
            walked.append((device, limit, good))
        elif good:
            out[device] = good
    if walked:
        _flag_moves(walked, heads, out)
    return out


def _flag_moves(
    walked: list[tuple[str, FixFilter, list[Fix]]], heads: Mapping[str, Head], out: dict[str, list[Fix]]
) -> None:
    """The jump and duplicate-position tests of the devices in `walked`: one vectorised pass over each
    fix's step from the one before it (from the head for the first), then a walk of the devices where
    a step failed."""
    lat0: list[float] = []
    lon0: list[float] = []
    lat1: list[float] = []
    lon1: list[float] = []
    dt_s: list[float] = []
    speed_max: list[float] = []
    window: list[float] = []
    near: list[float] = []
    keep: list[float] = []
    spans: list[tuple[int, int]] = []
    for device, limit, good in walked:
        head = heads.get(device)
        prev: tuple[int, float, float] | None = (head.ts, head.lat, head.lon) if head is not None else None
        start = len(lat0)
        for f in good:
            if prev is not None:
                lat0.append(prev[1])
                lon0.append(prev[2])
                lat1.append(f.lat)
                lon1.append(f.lon)
                dt_s.append((f.ts - prev[0]) / 1000)
                speed_max.append(limit.max_speed_kmh if limit.max_speed_kmh is not None else math.inf)
                window.append(limit.jump_window_s or math.inf)
                near.append(limit.min_distance_m or 0.0)
                keep.append(limit.keep_every_s or math.inf)
            prev = (f.ts, f.lat, f.lon)
        spans.append((start, len(lat0)))
    dist = pairwise_distance_m(np.array(lat0), np.array(lon0), np.array(lat1), np.array(lon1))
    dt = np.array(dt_s, dtype=np.float64)
    jumped = (dist * 3.6 > np.array(speed_max) * dt) & (dt <= np.array(window))
    failed = jumped | ((dist < np.array(near)) & (dt <= np.array(keep)))
    for (device, limit, good), (start, end) in zip(walked, spans, strict=True):
        if not failed[start:end].any():
            out[device] = good
            continue
        kept = _walk(limit, heads.get(device), good)
        if kept:
            out[device] = kept


def _walk(limit: FixFilter, head: Head | None, good: list[Fix]) -> list[Fix]:
    """One device's fixes tested in order, each against the previous fix that passed; flags set in place,
    the passing fixes returned."""
    prev = (head.ts, head.lat, head.lon) if head is not None else None
    kept: list[Fix] = []
    for f in good:
        if prev is not None:
            dist = distance_m(prev[1], prev[2], f.lat, f.lon)
            dt = (f.ts - prev[0]) / 1000
            too_fast = limit.max_speed_kmh is not None and dist * 3.6 > limit.max_speed_kmh * dt
            if too_fast and (limit.jump_window_s is None or dt <= limit.jump_window_s):
                f.flag = JUMP
                continue
            kept_anyway = limit.keep_every_s is not None and dt > limit.keep_every_s
            if limit.min_distance_m and dist < limit.min_distance_m and not kept_anyway:
                f.flag = DUPLICATE_POSITION
                continue
        kept.append(f)
        prev = (f.ts, f.lat, f.lon)
    return kept


def late_fixes(
    filters: Filters, fixes: Sequence[Fix], advancing: Mapping[str, list[Fix]]
) -> dict[str, list[Fix]]:
    """Per device, its good fixes of the batch that advance nothing (older than its head, with a timestamp
    the batch does not repeat), in time order, for the devices whose filter tests jumps: what `flag_late`
    takes. `advancing`: the batch's `newest_per_device`, before flagging."""
    if not filters:
        return {}
    ahead = {(f.device, f.ts) for fs in advancing.values() for f in fs}  # and their repeats in the batch
    out: dict[str, list[Fix]] = {}
    for f in fixes:
        if f.flag is None and (f.device, f.ts) not in ahead:
            limit = filters.for_fleet(f.fleet)
            if limit is not None and limit.max_speed_kmh is not None:
                out.setdefault(f.device, []).append(f)
    for fs in out.values():
        fs.sort(key=lambda f: f.ts)
    return out


def flag_late(limit: FixFilter, late: list[Fix], stored: Sequence[tuple[int, float, float]]) -> None:
    """Flag the jumps among one device's late fixes (time order), given its stored good fixes as (ts, lat,
    lon) in time order from the one before the first late fix to the one after the last: each late fix
    is tested against the good fix before it, stored or late; a stored fix out of reach of the late fixes
    before it flags them, newest first, until one reaches it. Fixes already stored (a retried backlog)
    are left alone."""
    assert limit.max_speed_kmh is not None
    speed = limit.max_speed_kmh / 3.6
    window = limit.jump_window_s

    def reachable(a: tuple[int, float, float], b: tuple[int, float, float]) -> bool:
        dt = (b[0] - a[0]) / 1000
        if window is not None and dt > window:
            return True
        return distance_m(a[1], a[2], b[1], b[2]) <= speed * dt

    known = {ts for ts, _, _ in stored}
    merged = sorted(
        [(ts, 0, (ts, lat, lon), None) for ts, lat, lon in stored]
        + [(f.ts, 1, (f.ts, f.lat, f.lon), f) for f in late if f.ts not in known],
        key=lambda item: (item[0], item[1]),
    )
    kept: list[tuple[tuple[int, float, float], Fix | None]] = []
    for _, _, point, fix in merged:
        if fix is None:  # a stored good fix: the late fixes before it must reach it
            while kept and kept[-1][1] is not None and not reachable(kept[-1][0], point):
                late_fix = kept.pop()[1]
                assert late_fix is not None
                late_fix.flag = JUMP
            kept.append((point, None))
        elif kept and not reachable(kept[-1][0], point):
            fix.flag = JUMP
        else:
            kept.append((point, fix))
