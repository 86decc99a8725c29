"""Refused authentication: visible in the log and the metrics, and slow for an address that keeps trying.

Every refusal (no token, an unknown or revoked one, an expired viewer token) is counted by edge and
reason in `tracker_auth_refusals` and logged with the edge and the client's address, never the token.
Each address has a bucket of failures (`TRACKER_AUTH_FAILURE_BURST`, one more every
`TRACKER_AUTH_FAILURE_REFILL_S`). Once it is empty, the address's next failures are answered only after
the wait for the bucket's next failure (HTTP 429 with Retry-After; a socket's connect is refused with
`too many failed attempts`) and logged once per quiet spell. A token that works is looked up and
admitted as always, from any address: devices behind the same NAT as a guesser are not hurt. Tokens
are 256 random bits, so slowing guesses protects the log and the database, not the tokens.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass

from tracker.errors import TooManyFailures, TrackerError
from tracker.metrics import Metrics

log = logging.getLogger("tracker.auth")

MAX_HELD = 32  # refusals of one address held back at once; more are answered at once
MAX_ADDRESSES = 10_000  # buckets kept before full ones are forgotten


@dataclass(slots=True)
class _Bucket:
    failures: float  # failures left before the address is slowed
    at: float  # monotonic time of `failures`
    held: int = 0  # refusals waiting out their delay
    logged: bool = False  # the slowing of this spell was logged


class Refusals:
    """Counts, logs and paces refused authentications, per client address."""

    def __init__(self, metrics: Metrics, burst: int, refill_s: float) -> None:
        self._metrics = metrics
        self._burst = burst
        self._refill_s = refill_s
        self._buckets: dict[str, _Bucket] = {}

    async def refuse(
        self, exc: TrackerError, reason: str, edge: str, address: str | None, asked: str = ""
    ) -> TrackerError:
        """Record the refusal `exc` (for `reason`) of a request on `edge` (what it `asked`: a path) from
        `address`, and return the error to raise: `exc` itself, or (once the address has spent its
        failures) a TooManyFailures after the wait."""
        if address is None:
            self._count_and_log(edge, reason, address, asked)
            return exc
        bucket = self._bucket(address)
        if bucket.failures >= 1:
            bucket.failures -= 1
            bucket.logged = False
            self._count_and_log(edge, reason, address, asked)
            return exc
        # Each slowed failure takes the next failure the address earns, so a guesser's failures are
        # answered one per refill at most, however many it sends at once (up to MAX_HELD wait).
        hold = bucket.held < MAX_HELD
        if hold:
            bucket.failures -= 1
        wait_s = -bucket.failures * self._refill_s
        self._metrics.auth_refusals.labels(edge, "throttled").inc()
        if not bucket.logged:
            bucket.logged = True
            log.warning(
                "refusing %s from %s: too many failed attempts (%s); slowing its failures by %.1f s",
                edge,
                address,
                reason,
                wait_s,
            )
        if hold:
            bucket.held += 1
            try:
                await asyncio.sleep(wait_s)
            finally:
                bucket.held -= 1
        retry_s = max(1, math.ceil(self._refill_s))
        return TooManyFailures(
            f"too many failed attempts from this address; retry after {retry_s} s", retry_s
        )

    def _count_and_log(self, edge: str, reason: str, address: str | None, asked: str) -> None:
        self._metrics.auth_refusals.labels(edge, reason).inc()
        where = f"{edge} {asked}".rstrip()
        log.warning("refused %s from %s: %s", where, address or "an unknown address", reason)

    def _bucket(self, address: str) -> _Bucket:
        now = time.monotonic()
        bucket = self._buckets.get(address)
        if bucket is None:
            if len(self._buckets) >= MAX_ADDRESSES:
                self._forget(now)
            bucket = self._buckets[address] = _Bucket(float(self._burst), now)
            return bucket
        bucket.failures = min(float(self._burst), bucket.failures + (now - bucket.at) / self._refill_s)
        bucket.at = now
        return bucket

    def _forget(self, now: float) -> None:
        """Drop the buckets that have refilled (their addresses start afresh anyway); when guesses come
        from so many addresses that none has, the older half, so memory stays bounded."""
        for address, bucket in list(self._buckets.items()):
            if bucket.held == 0 and bucket.failures + (now - bucket.at) / self._refill_s >= self._burst:
                del self._buckets[address]
        if len(self._buckets) >= MAX_ADDRESSES:
            for address in list(self._buckets)[: MAX_ADDRESSES // 2]:
                del self._buckets[address]
