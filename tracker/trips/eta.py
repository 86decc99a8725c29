"""A device's recent moving speed, smoothed so that one noisy fix cannot swing the ETA.

Each segment between consecutive fixes gives a speed. Segments that are no movement are left out: a
gap (longer than GAP_S), a standstill (slower than STOP_MPS, or shorter than the fixes' accuracy: GPS
jitter while parked), and an implausible jump (faster than JUMP_MPS). The rest feed a time-weighted
moving average with time constant TAU_S, each clamped to within STEP_RATIO of the current estimate, so
a burst of noise moves the speed a little, never all the way. The speed is unknown (None) until
WARMUP_S seconds of movement were seen; until then the ETA is null.

ETA = fix time + remaining distance x detour factor / speed. Stops are left out of the speed on
purpose: while a device waits, its fixes keep the remaining distance and their later times push the
ETA later by exactly the wait.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from tracker.geo import FloatArray, segment_lengths_m

GAP_S = 300.0  # a silence longer than this is no segment
STOP_MPS = 1.0  # slower than this is standing (walking pace at most)
JUMP_MPS = 70.0  # faster than this is a GPS jump (250 km/h)
MIN_MOVE_M = 5.0  # segments shorter than this (or than the fixes' accuracy) are jitter
TAU_S = 300.0  # the moving average's time constant: about the last five minutes of driving
STEP_RATIO = 2.0  # one segment may pull the estimate at most to twice (or half) its value
WARMUP_S = 30.0  # seconds of movement before the speed counts as known


class Speed(NamedTuple):
    """A device's smoothed moving speed (None while unknown) after `moving_s` seconds of movement (a
    named tuple: one is made per fix of a moving device, and a tuple is the cheapest to make)."""

    mps: float | None = None
    moving_s: float = 0.0


def moving(dt_s: float, dist_m: float, accuracy_m: float) -> bool:
    """True when a segment of `dist_m` in `dt_s` between fixes this accurate is movement."""
    if not 0 < dt_s <= GAP_S or dist_m < max(MIN_MOVE_M, accuracy_m):
        return False
    return STOP_MPS <= dist_m / dt_s <= JUMP_MPS


def advance(speed: Speed, dt_s: float, dist_m: float, accuracy_m: float = 0.0) -> Speed:
    """The speed after one more segment (unchanged when the segment is no movement)."""
    if not moving(dt_s, dist_m, accuracy_m):
        return speed
    v = dist_m / dt_s
    moved = speed.moving_s + dt_s
    if speed.mps is None or speed.moving_s < WARMUP_S:
        # Warm-up: the plain time-weighted mean of what was seen so far.
        mean = v if speed.mps is None else (speed.mps * speed.moving_s + v * dt_s) / moved
        return Speed(mean, moved)
    v = min(max(v, speed.mps / STEP_RATIO), speed.mps * STEP_RATIO)
    weight = 1.0 - math.exp(-dt_s / TAU_S)
    return Speed(speed.mps + weight * (v - speed.mps), moved)


def advance_many(
    mps: FloatArray, moving_s: FloatArray, dt_s: FloatArray, dist_m: FloatArray, accuracy_m: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """`advance` for many devices at once, one segment each: their new speeds (NaN: unknown) and
    moving seconds. The same rules, vectorised for the ingest path's common case."""
    with np.errstate(divide="ignore", invalid="ignore"):
        v = np.where(dt_s > 0, dist_m / np.where(dt_s > 0, dt_s, 1.0), 0.0)
        move = (
            (dt_s > 0)
            & (dt_s <= GAP_S)
            & (dist_m >= np.maximum(MIN_MOVE_M, accuracy_m))
            & (v >= STOP_MPS)
            & (v <= JUMP_MPS)
        )
        moved = moving_s + dt_s
        unknown = np.isnan(mps)
        mean = np.where(
            unknown, v, (np.where(unknown, 0.0, mps) * moving_s + v * dt_s) / np.where(move, moved, 1.0)
        )
        step = np.minimum(np.maximum(v, mps / STEP_RATIO), mps * STEP_RATIO)
        ema = mps + (1.0 - np.exp(-dt_s / TAU_S)) * (step - mps)
        warm = unknown | (moving_s < WARMUP_S)
        return np.where(move, np.where(warm, mean, ema), mps), np.where(move, moved, moving_s)


def known(speed: Speed) -> float | None:
    """The speed to compute an ETA with, None while unknown."""
    return speed.mps if speed.mps is not None and speed.moving_s >= WARMUP_S else None


def eta_ts(ts: int, to_go_m: float, speed: Speed, detour: float) -> int | None:
    """When a device at `to_go_m` from its destination at time `ts` should arrive (None: unknown)."""
    v = known(speed)
    if v is None:
        return None
    return ts + round(max(0.0, to_go_m) * detour / v * 1000)


def speed_along(fixes: Sequence[tuple[int, float, float, float]], speed: Speed | None = None) -> Speed:
    """The speed after the segments between `fixes` (ts, lat, lon, accuracy), oldest first, starting from
    `speed` (unknown by default): how a new trip learns how fast its device has been moving."""
    speed = speed or Speed()
    if len(fixes) < 2:
        return speed
    lengths = segment_lengths_m(
        np.array([f[1] for f in fixes], dtype=np.float64), np.array([f[2] for f in fixes], dtype=np.float64)
    )
    for i, length in enumerate(lengths.tolist()):
        a, b = fixes[i], fixes[i + 1]
        speed = advance(speed, (b[0] - a[0]) / 1000, length, max(a[3], b[3]))
    return speed
