"""Cross rules: which fences each fix's incoming segment crosses, for a whole batch at once.

A fix's incoming segment starts at the device's fix before it, or for a device's first fix of a batch at
its head (none without a head). A crossing counts when the straight segment touches the fence and both
ends are outside it. Two callers: the detector, on one batch's fixes grouped by device, and the dry-run's
triage (`triage.py`), on a whole chunk's columns, which then feeds the detector only some of the fixes
and hands it these crossings, measured on every segment.
"""

from __future__ import annotations

from collections.abc import Container, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from tracker.geofence.ruleset import RuleSet
from tracker.model import Fix, Head

Floats = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]


def batch_crossings(
    rules: RuleSet,
    todo: Mapping[str, list[Fix]],
    heads: Mapping[str, Head],
    lon: Floats,
    lat: Floats,
    raw: Sequence[Container[int]],
) -> dict[int, list[int]]:
    """Fence indexes each fix's incoming segment crosses, by position in the batch (`todo`'s fixes in
    order; `raw`: the fences covering each); cross rules only."""
    if not rules.cross_mask.any():
        return {}
    n = len(lon)
    counts = np.fromiter((len(fs) for fs in todo.values()), dtype=np.int64, count=len(todo))
    starts = np.cumsum(counts) - counts
    first = np.zeros(n, dtype=np.bool_)
    first[starts] = True
    head_lon = np.full(n, np.nan)
    head_lat = np.full(n, np.nan)
    for position, device in zip(starts.tolist(), todo, strict=True):
        head = heads.get(device)
        if head is not None:
            head_lon[position], head_lat[position] = head.lon, head.lat
    return segment_crossings(rules, first, head_lon, head_lat, lon, lat, raw)


def segment_crossings(
    rules: RuleSet,
    first: Bools,
    head_lon: Floats,
    head_lat: Floats,
    lon: Floats,
    lat: Floats,
    raw: Sequence[Container[int]],
) -> dict[int, list[int]]:
    """Fence indexes each fix's incoming segment crosses, by position: fixes of one device are adjacent,
    `first` marks each device's first, whose segment starts at (head_lon, head_lat) (NaN: no head, no
    segment); `raw[i]`: the fences covering fix i. Cross rules only."""
    if not rules.cross_mask.any():
        return {}
    e = np.flatnonzero(~first | ~np.isnan(head_lon))
    if not len(e):
        return {}
    from_head = first[e]
    s_lon = np.where(from_head, head_lon[e], lon[e - 1])
    s_lat = np.where(from_head, head_lat[e], lat[e - 1])
    seg, fence = rules.index.crossings(s_lon, s_lat, lon[e], lat[e], rules.cross_mask)
    if not len(seg):
        return {}
    head_inside: dict[int, set[int]] = {}  # segment index -> fences covering its head
    rows = np.unique(seg[from_head[seg]])
    if len(rows):
        hp, hf = rules.index.inside(s_lon[rows], s_lat[rows])
        for p, f in zip(hp.tolist(), hf.tolist(), strict=True):
            head_inside.setdefault(int(rows[p]), set()).add(f)
    out: dict[int, list[int]] = {}
    for j, f in zip(seg.tolist(), fence.tolist(), strict=True):
        pos = int(e[j])
        start_inside: Container[int] = head_inside.get(j, set()) if from_head[j] else raw[pos - 1]
        if f not in raw[pos] and f not in start_inside:
            out.setdefault(pos, []).append(f)
    return out
