"""The demo's load generator: a process of its own (`python -m tracker.tools.couriers PLAN`) in which every
vehicle of a plan file replays its track in a loop as its own device over Socket.IO.

Policy: a vehicle starts, within its planned part of its shift, where it drives most in the next five
minutes, so that the map moves from the start: half of a shift or more is loading and waiting at
customers, and started anywhere, half the fleet would stand still in the first minutes. A vehicle that
already has a stored position (the demo ran before) starts instead at its track's point nearest to it, so
that a restart does not join two runs across town on the map; unless that point is more than
`RESUME_WITHIN_M` away (the vehicle drove another track then). The process is
stopped by its parent, the demo, with SIGTERM before the server shuts down, so that no device reports a
lost connection; it ignores Ctrl-C (the terminal sends it to the whole process group, and the server
might still be closing) and ends by itself if its parent is gone.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from tracker.geo import distances_from_m, segment_lengths_m
from tracker.tools.trackfile import TrackFile, read_track

log = logging.getLogger("tracker.tools.demo")

MOVING_M_S = 1.0  # faster than this is driving, slower is a stop (GPS noise stays below it)
AHEAD_MS = 300_000  # the first minutes, in track time, that should be lively
RESUME_WITHIN_M = 1000.0  # farther from its last position than this, a vehicle starts where it drives


def moving(track: TrackFile) -> np.ndarray[Any, np.dtype[np.bool_]]:
    """Per fix: whether the vehicle is driving there, by the file's speeds where it has them, else by the
    distance to the next fix over the time to it."""
    dt_s = np.maximum(np.diff(track.ts) / 1000.0, 1e-3)
    derived = (
        np.append(segment_lengths_m(track.lat, track.lon) / dt_s, 0.0) if len(track) > 1 else np.zeros(1)
    )
    speed = track.optional.get("speed")
    if speed is None:
        return derived[: len(track)] > MOVING_M_S
    return np.where(np.isnan(speed), derived[: len(track)], speed) > MOVING_M_S


def underway(track: TrackFile, start: float, span: float, ahead_ms: int = AHEAD_MS) -> int:
    """The index of the fix to start from: of those where the vehicle drives, from `start` to `start +
    span` of the way in (fractions of the track, going round its end), the one followed by the most
    driving in the next `ahead_ms` of the track."""
    n = len(track)
    if n < 2:
        return 0
    # The track twice over, the second lap shifted in time, so that a window may go round the end.
    lap_ms = int(track.ts[-1] - track.ts[0]) + int(np.median(np.diff(track.ts)))
    ts = np.concatenate([track.ts, track.ts + lap_ms])
    driving = np.tile(moving(track), 2)
    dt = np.append(np.diff(ts), 0)
    driven = np.concatenate([[0], np.cumsum(np.where(driving, dt, 0))])  # driving ms before each fix
    first = int(n * start) % n
    candidates = np.arange(first, first + max(1, int(n * span)))
    until = np.searchsorted(ts, ts[candidates] + ahead_ms)
    score = np.where(driving[candidates], driven[until] - driven[candidates], -1)
    return int(candidates[int(np.argmax(score))] % n)


def nearest(track: TrackFile, lat: float, lon: float, within_m: float = RESUME_WITHIN_M) -> int | None:
    """The index of the fix nearest to (lat, lon), where a restarted vehicle goes on from, or None when
    even that one is farther than `within_m` (its last position was not on this track)."""
    if len(track) == 0:
        return None
    dist = distances_from_m(lat, lon, track.lat, track.lon)
    k = int(np.argmin(dist))
    return k if dist[k] <= within_m else None


def start_index(track: TrackFile, start: float, span: float, last: Sequence[float] | None) -> int:
    """Where a vehicle's replay begins: nearest to its `last` stored (lat, lon) when it has one on this
    track, else where it drives (`underway`)."""
    k = nearest(track, last[0], last[1]) if last is not None else None
    return underway(track, start, span) if k is None else k


def rotated(track: TrackFile, k: int) -> TrackFile:
    """The track begun at fix `k`, its first part appended after its end, so that time runs on: one lap
    of the same length, from another point."""
    if k <= 0 or k >= len(track):
        return track
    step = int(np.median(np.diff(track.ts))) if len(track) > 1 else 1000
    shift = int(track.ts[-1] - track.ts[0]) + step

    def turn(a: Any, shift_by: Any = 0) -> Any:
        return np.concatenate([a[k:], a[:k] + shift_by])

    return TrackFile(
        track.name,
        turn(track.ts, shift),
        turn(track.lat),
        turn(track.lon),
        {name: turn(values) for name, values in track.optional.items()},
    )


async def replay_plan(plan_file: Path) -> None:
    """Every vehicle of the plan replays its track in a loop, until SIGTERM or the parent is gone
    (coroutine)."""
    from tracker.tools.replay import Replayer

    spec = orjson.loads(plan_file.read_bytes())

    async def one(v: dict[str, Any]) -> None:
        track = read_track(v["file"])
        track = rotated(track, start_index(track, v["start"], v["span"], v.get("last")))

        def on_message(message: dict[str, Any]) -> None:
            log.info(
                "device=%s got message %s from %s: %s",
                v["id"],
                message["id"],
                message["from"],
                message["body"],
            )

        while True:  # a lost server comes back: the replayer reconnects, this restarts a failed lap
            try:
                replayer = Replayer(
                    spec["url"], v["token"], [track], speed=spec["speed"], loop=True, on_message=on_message
                )
                await replayer.run()
            except Exception as exc:  # logged, retried: the demo keeps going
                log.warning("device=%s replay stopped (%s); again in 5 s", v["id"], exc)
                await asyncio.sleep(5)

    async def orphaned() -> None:
        parent = os.getppid()
        while os.getppid() == parent:
            await asyncio.sleep(1)

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    tasks: list[asyncio.Future[Any]] = [
        asyncio.gather(*(one(v) for v in spec["vehicles"])),
        asyncio.ensure_future(orphaned()),
        asyncio.ensure_future(stop.wait()),
    ]
    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def main(argv: Sequence[str]) -> int:
    from tracker.logs import configure

    configure(os.environ.get("TRACKER_LOG_LEVEL", "info"))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    asyncio.run(replay_plan(Path(argv[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
