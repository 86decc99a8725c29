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
spread out and with their fixes in fewer, larger batches, which cost less per fix.
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


def retry_after(delay_s: float) -> float:
    """The wait to name in a refusal when answers run `delay_s` late: longer the worse, jittered."""
    base = min(RETRY_MAX_S, max(RETRY_MIN_S, delay_s * RETRY_FACTOR))
    return base * random.uniform(0.75, 1.25)


class LoopLag:
    """How late the event loop runs its timers: near 0 when idle, its run queue's length when saturated."""

    def __init__(self, limit_s: float, observe: Callable[[float], None] | None = None) -> None:
        self.limit_s = limit_s
        self.lag_s = 0.0
        self._observe = observe  # each sample, for the loop-lag histogram in /metrics

    async def run(self) -> None:
        """Probe forever (coroutine): sleep a fixed interval and keep a smoothed overshoot."""
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(LAG_PROBE_S)
            sample = max(0.0, loop.time() - started - LAG_PROBE_S)
            self.lag_s = 0.5 * self.lag_s + 0.5 * sample
            if self._observe is not None:
                self._observe(sample)

    def check(self) -> None:
        """Raise Busy while the loop lags beyond the limit."""
        if self.lag_s > self.limit_s:
            raise Busy(
                f"server overloaded: it runs {self.lag_s * 1000:.0f} ms behind; retry",
                retry_after(self.lag_s),
            )


class RateLimiter:
    """A token bucket per device: `rate` fixes per second sustained, up to `burst` at once."""

    def __init__(self, rate: float, burst: int) -> None:
        self._rate = rate
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
                f"rate limit: device {device!r} may send {self._rate:g} fixes/s "
                f"(bursts of {self._burst:.0f}); retry in {wait:.1f} s",
                wait,
            )
        self._buckets[device] = (tokens - count, now)
