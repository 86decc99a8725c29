"""Which fixes of a replay are due when, re-timed to the replay's start (policy: `tracker.tools.replay`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from tracker.tools.trackfile import IntArray, TrackFile

GAP_MS = 1000  # track time between the end of one file (or round) and the start of the next


class Schedule:
    """Which fixes are due when, as ms after the replay's start (`start_ms`, set by the replayer)."""

    def __init__(self, tracks: Sequence[TrackFile], speed: float, loop: bool, keep_times: bool) -> None:
        gap = max(1, math.floor(GAP_MS / speed))
        self.tracks = list(tracks)
        self.due: list[IntArray] = []
        base = 0
        for track in self.tracks:
            rel = np.floor((track.ts - track.ts[0]) / speed).astype(np.int64)
            steps = np.arange(len(rel), dtype=np.int64)
            rel = np.maximum.accumulate(rel - steps) + steps  # strictly increasing
            self.due.append(rel + base)
            base = int(self.due[-1][-1]) + gap
        self.last = base - gap  # due time of a round's last fix
        self.period = base  # one round, gap included
        self.loop = loop
        self.keep_times = keep_times
        self.start_ms = 0
        self._round = self._track = self._index = 0

    @property
    def total(self) -> int | None:
        return None if self.loop else sum(len(t) for t in self.tracks)

    def next_due_ms(self) -> int | None:
        """Wall-clock ms at which the next fix falls due; None when every fix has been taken."""
        if self._track >= len(self.tracks):
            return None
        return self.start_ms + self._round * self.period + int(self.due[self._track][self._index])

    def take(self, now_ms: int, limit: int) -> list[dict[str, Any]]:
        """Up to `limit` fix objects due at `now_ms`, in order."""
        out: list[dict[str, Any]] = []
        while len(out) < limit and self._track < len(self.tracks):
            track, due, lo = self.tracks[self._track], self.due[self._track], self._index
            offset = self.start_ms + self._round * self.period
            hi = min(int(np.searchsorted(due, now_ms - offset, side="right")), lo + limit - len(out))
            if hi <= lo:
                break
            times = track.ts[lo:hi] if self.keep_times else due[lo:hi] + offset
            out += fix_objects(track, lo, hi, times.tolist())
            self._index = hi
            if hi == len(due):
                self._track, self._index = self._track + 1, 0
                if self._track == len(self.tracks) and self.loop:
                    self._track, self._round = 0, self._round + 1
        return out


def fix_objects(track: TrackFile, lo: int, hi: int, times: list[int]) -> list[dict[str, Any]]:
    """The device protocol's fix objects for points lo..hi of `track`, with the given times."""
    fixes: list[dict[str, Any]] = [
        {"ts": ts, "lat": lat, "lon": lon}
        for ts, lat, lon in zip(times, track.lat[lo:hi].tolist(), track.lon[lo:hi].tolist(), strict=True)
    ]
    for name, column in track.optional.items():
        for fix, value in zip(fixes, column[lo:hi].tolist(), strict=True):
            if not math.isnan(value):
                fix[name] = value
    return fixes
