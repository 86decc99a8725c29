"""The garbage-collector policy of a long-running server that holds many connections.

CPython's cyclic collector walks every tracked object of a generation it collects. A server holding
10,000 device sockets keeps half a gigabyte of long-lived objects (protocol state, queues, tasks), and
with the default thresholds the collector walks them over and over: measured with 10,000 devices at
1 fix/5 s (issue 12), the default policy stalled the loop into acks of 6.5 s p50 / 13 s p99, while
thresholds and a periodic freeze like these gave 5 ms / 25 ms on the same machine.

So, after start-up (after one full collection) and then every `freeze_interval_s`:
- `gc.freeze()` moves every tracked object to the permanent generation, which no collection walks.
  Nothing is collected first: with 10,000 sockets, a `gc.collect(1)` or even `gc.collect(0)` before
  each freeze stalled the loop for 600-800 ms every 5 s (the bare server under `tracker bench fleet
  --bare-gc policy`), while a plain freeze took the tracker's ack p99 from 879 to 240 ms;
- young collections run every `THRESHOLD0` net allocations instead of every 700, so the per-event
  garbage of a busy loop is swept in few, short passes.
Whatever was frozen, live or cyclic garbage not yet swept, is out of reach until the permanent
generation is thawed: every `full_interval_s` it is, and everything is collected once (one pause
that grows with the heap, logged with its length) and frozen again.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from dataclasses import dataclass

log = logging.getLogger("tracker.gc")

THRESHOLD0 = 100_000  # net allocations between young collections (CPython's default: 700)
THRESHOLD1 = 50  # young collections between generation-1 collections
THRESHOLD2 = 1_000  # generation-1 collections between full ones (CPython adds its 25 % rule)


@dataclass(frozen=True)
class GcPolicy:
    """When to freeze survivors and when to collect everything once."""

    freeze_interval_s: float = 5.0
    full_interval_s: float = 600.0

    def apply(self) -> None:
        """Set the thresholds, collect once and freeze what survives start-up."""
        gc.set_threshold(THRESHOLD0, THRESHOLD1, THRESHOLD2)
        gc.collect()
        gc.freeze()

    async def run(self) -> None:
        """Freeze survivors periodically and collect everything now and then, forever (coroutine)."""
        last_full = time.monotonic()
        while True:
            await asyncio.sleep(self.freeze_interval_s)
            if self.full_interval_s and time.monotonic() - last_full >= self.full_interval_s:
                self.collect_all()
                last_full = time.monotonic()
            else:
                gc.freeze()

    @staticmethod
    def collect_all() -> int:
        """Thaw, collect every generation and freeze again; the number of objects freed."""
        started = time.perf_counter()
        frozen = gc.get_freeze_count()
        gc.unfreeze()
        freed = gc.collect()
        gc.freeze()
        log.info(
            "full garbage collection: %d objects walked, %d freed, %.0f ms",
            frozen,
            freed,
            (time.perf_counter() - started) * 1000,
        )
        return freed


def apply() -> None:
    """The default policy's thresholds and first freeze, for a process that runs no `GcPolicy.run`."""
    GcPolicy().apply()
