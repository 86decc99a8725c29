"""The ingest loop's writer lanes: each a queue of submissions, the connection it keeps between batches,
and the rate it has shown, from which admission estimates how long a new submission would wait."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import asyncpg

from tracker.errors import Busy
from tracker.model import Fix, WriteResult

LANE_RATE_GUESS = 5_000.0  # fixes/s a lane is assumed to store until it has shown its rate under load


@dataclass(slots=True)
class Submission:
    fixes: Sequence[Fix]
    future: asyncio.Future[WriteResult]
    queued_at: float  # time.monotonic()


@dataclass
class Lane:
    """One writer: its queue, the connection it keeps between batches, and how fast it drains."""

    queue: deque[Submission] = field(default_factory=deque)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    conn: asyncpg.Connection | None = None
    queued: int = 0  # fixes in `queue`
    rate: float = LANE_RATE_GUESS  # fixes/s stored while the lane had a backlog (smoothed)

    def wait_s(self, now: float) -> float:
        """How long a submission queued now would wait: the backlog over the rate, or the head's age."""
        head_age = now - self.queue[0].queued_at if self.queue else 0.0
        return max(self.queued / self.rate, head_age)

    def observe(self, fixes: int, seconds: float, backlog: bool) -> None:
        """Learn the rate from a stored batch; a batch taken without a backlog only bounds it from below."""
        sample = fixes / max(seconds, 1e-6)
        self.rate = 0.7 * self.rate + 0.3 * sample if backlog else max(self.rate, sample)


def take_new(fixes: Sequence[Fix], new: set[tuple[str, int]]) -> int:
    """How many of `fixes` were new, taking their keys out of `new`: a key repeated later is a duplicate."""
    accepted = 0
    for f in fixes:
        key = (f.device, f.ts)
        if key in new:
            new.discard(key)
            accepted += 1
    return accepted


def fail(batch: list[Submission], error: Busy) -> None:
    """Answer every submission of `batch` that still waits with `error` (nothing of it was stored)."""
    for sub in batch:
        if not sub.future.done():
            sub.future.set_exception(error)


def flagged_new(fixes: Sequence[Fix], new: set[tuple[str, int]]) -> tuple[tuple[int, str], ...]:
    """(position, flag) of the fixes of one submission that were stored new with a flag: of fixes sharing
    a timestamp only the first, the one stored (as `take_new` counts them)."""
    out = []
    seen: set[int] = set()
    for i, f in enumerate(fixes):
        if f.ts in seen:
            continue
        seen.add(f.ts)
        if f.flag is not None and (f.device, f.ts) in new:
            out.append((i, f.flag))
    return tuple(out)
