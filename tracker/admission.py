"""Admission control: refuse what the server cannot take soon, at once and cheaply, instead of queueing it.

Offered more than it can do, a server that queues everything answers everything late: measured at twice
its capacity, the tracker used to ack 0.46x its capacity and answer after 12-23 s. So a fix event is
refused with `retry` (and the time to wait) while any of these holds:
- the event loop lags (`LoopLag`): the process is out of CPU, and every queued task makes every answer later;
- the device's ingest lane would take longer than the bound to drain (`Ingestor.check_load`);
- the device has spent its token bucket (`RateLimiter`), so one device replaying a backlog in a tight loop
  cannot take the queue from the others;
- the connection already has its bound of events unanswered (`tracker.sockets`).
The wait a refusal names grows with the overload and carries jitter, so that refused devices come back
spread out and with their fixes in fewer, larger batches, which cost less per fix. A refusal is not free
(a frame read and one written: measured at 10,000 connections, about two thirds of what taking an event
costs), so a fixed wait lets a large fleet keep the loop busy with refusals alone: 10,000 devices in a
closed loop, told to come back after 0.5-1 s, got 4,700 refusals/s and 490 acks/s. So the wait has a
floor that doubles for every 0.6 s the loop stays late and halves for every 3.5 s it keeps time, until
the devices coming back fit what the process can take.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

from tracker.errors import Busy

LAG_PROBE_S = 0.05  # how often the loop-lag probe wakes up
RETRY_MIN_S = 0.5
RETRY_MAX_S = 30.0
RETRY_FACTOR = 4.0  # a refusal asks the device to wait this many times the current excess delay
FLOOR_GROWTH = 1.06  # per probe while the loop is late: the floor doubles in about 0.6 s
FLOOR_DECAY = 0.99  # per probe while it keeps time: the floor halves in about 3.5 s


class LoopLag:
    """How late the event loop runs its timers (near 0 when idle, its run queue's length when saturated),
    and the waits refusals name, which grow while it stays late."""

    def __init__(self, limit_s: float, observe: Callable[[float], None] | None = None) -> None:
        self.limit_s = limit_s
        self.lag_s = 0.0
        self.floor_s = RETRY_MIN_S  # the shortest wait a refusal names now
        self._observe = observe  # each sample, for the loop-lag histogram in /metrics

    async def run(self) -> None:
        """Probe forever (coroutine): sleep a fixed interval, keep a smoothed overshoot, move the floor."""
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(LAG_PROBE_S)
            sample = max(0.0, loop.time() - started - LAG_PROBE_S)
            self.lag_s = 0.5 * self.lag_s + 0.5 * sample
            if self.lag_s > self.limit_s:
                self.floor_s = min(RETRY_MAX_S, self.floor_s * FLOOR_GROWTH)
            else:
                self.floor_s = max(RETRY_MIN_S, self.floor_s * FLOOR_DECAY)
            if self._observe is not None:
                self._observe(sample)

    def retry_after(self, delay_s: float = 0.0) -> float:
        """The wait to name in a refusal when answers run `delay_s` late: at least the floor, longer the
        later, jittered by +-50 % so that refused devices come back spread out."""
        base = min(RETRY_MAX_S, max(self.floor_s, delay_s * RETRY_FACTOR))
        return base * random.uniform(0.5, 1.5)

    def check(self) -> None:
        """Raise Busy while the loop lags beyond the limit."""
        if self.lag_s > self.limit_s:
            raise Busy(
                f"server overloaded: it runs {self.lag_s * 1000:.0f} ms behind; retry",
                self.retry_after(self.lag_s),
            )


class RateLimiter:
    """A token bucket per device: `rate` fixes (or other `unit`s) per second sustained, up to `burst` at
    once."""

    def __init__(self, rate: float, burst: int, unit: str = "fixes") -> None:
        self._rate = rate
        self._unit = unit
        self._burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}  # device -> (tokens, last refill)

    def take(self, device: str, count: int) -> None:
        """Spend `count` tokens of `device`, or raise Busy saying when to retry."""
        now = time.monotonic()
        tokens, last = self._buckets.get(device, (self._burst, now))
        tokens = min(self._burst, tokens + (now - last) * self._rate)
        if count > tokens:
            self._buckets[device] = (tokens, now)
            wait = (count - tokens) / self._rate
            raise Busy(
                f"rate limit: device {device!r} may send {self._rate:g} {self._unit}/s "
                f"(bursts of {self._burst:.0f}); retry in {wait:.1f} s",
                wait,
            )
        self._buckets[device] = (tokens - count, now)
