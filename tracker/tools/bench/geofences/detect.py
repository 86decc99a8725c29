"""The whole state machine: `detect()` on batches of fixes of moving devices, enter, exit and dwell
rules on every fence, state carried from batch to batch: what the ingest loop pays per batch.

Policy: DEVICES devices in straight lines at 5-30 m/s, a fix every FIX_INTERVAL_S, batches of BATCH
fixes; only `detect()` is timed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np

from tracker.geofence.detect import detect
from tracker.geofence.ruleset import RuleSet
from tracker.model import Fence, FenceState, Fix, Head, Rule, StateKey
from tracker.tools.bench.geofences.answers import BATCH, Clock, timed
from tracker.tools.bench.geofences.fences import SEED
from tracker.tools.bench.report import percentile, progress

DEVICES = 1_000
FIX_INTERVAL_S = 5
DETECT_FIXES = 200_000
DWELL_S = 60.0


def detect_batches(
    fences: Sequence[Fence], bbox: tuple[float, float, float, float], n_fixes: int
) -> dict[str, Any]:
    """`detect()` on batches of fixes of moving devices; state carried from batch to batch."""
    clock = Clock()
    ids = tuple(f.id for f in fences)
    rules = [
        Rule("enter", "enter", ids),
        Rule("exit", "exit", ids),
        Rule("dwell", "dwell", ids, dwell_s=DWELL_S),
    ]
    ruleset, compile_s = timed(lambda: RuleSet(fences, rules))
    rng = np.random.default_rng(SEED + 2)
    lon0 = rng.uniform(bbox[0], bbox[2], DEVICES)
    lat0 = rng.uniform(bbox[1], bbox[3], DEVICES)
    heading = rng.uniform(0, 2 * math.pi, DEVICES)
    speed = rng.uniform(5, 30, DEVICES)
    per_batch = BATCH // DEVICES
    batches = max(1, n_fixes // BATCH)
    t0 = 1_700_000_000_000
    devices = [f"dev-{i:04d}" for i in range(DEVICES)]
    tracks: dict[str, dict[StateKey, FenceState]] = {}
    heads: dict[str, Head] = {}
    events: dict[str, int] = {}
    batch_ms = []
    for b in range(batches):
        fixes: list[Fix] = []
        for k in range(b * per_batch, (b + 1) * per_batch):
            metres = speed * k * FIX_INTERVAL_S
            lat = lat0 + metres * np.cos(heading) / 111_320
            lon = lon0 + metres * np.sin(heading) / (111_320 * np.cos(np.radians(lat)))
            ts = t0 + k * FIX_INTERVAL_S * 1000
            fixes.extend(
                Fix(device=d, fleet="bench", ts=ts, lat=float(y), lon=float(x), speed=float(s))
                for d, x, y, s in zip(devices, lon, lat, speed, strict=True)
            )
        found, wall = timed(partial(detect, ruleset, tracks, heads, fixes))
        batch_ms.append(wall * 1000)
        heads.update(found.heads)
        for device, changed in found.state_changes.items():
            mine = tracks.setdefault(device, {})
            for key, track in changed.items():
                if track is None:
                    mine.pop(key, None)
                else:
                    mine[key] = track
            if not mine:
                del tracks[device]
        for event in found.events:
            events[event.type] = events.get(event.type, 0) + 1
    ordered = sorted(batch_ms)
    total = len(batch_ms) * per_batch * DEVICES
    rate = total / (sum(batch_ms) / 1000)
    progress(f"detect: {rate:,.0f} fixes/s, {sum(events.values())} events")
    return {
        "ruleset_compile_s": round(compile_s, 3),
        "rules": len(rules),
        "devices": DEVICES,
        "batch": per_batch * DEVICES,
        "batches": len(batch_ms),
        "fixes_per_s": round(rate),
        "p50_batch_ms": round(percentile(ordered, 50) or 0.0, 2),
        "p99_batch_ms": round(percentile(ordered, 99) or 0.0, 2),
        "max_batch_ms": round(ordered[-1], 2),
        "events": events,
        "devices_with_tracks_at_end": len(tracks),
        "cpu_s": clock.cpu(),
    }
