"""Redis between processes: how we connect to it, and whether it answers.

Policy: Redis carries only live traffic between processes (Socket.IO rooms, the live index); PostGIS holds
everything durable. So an outage may cost delivery to the other processes and nothing else: no handler,
emit or flush waits on a dead Redis or raises because of it. Clients fail fast (`client`: a short connect
and command timeout, no retries hidden inside redis-py), and a `RedisLink` remembers that Redis is down:
publishers skip it, instead of trying on every emit, until a reader, which tries every `RETRY_S` in the
background, finds it back. The log says once that Redis is down and once that it is back.
"""

from __future__ import annotations

import logging
import time

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

log = logging.getLogger("tracker.redis")

RETRY_S = 1.0  # a reader tries to (re)subscribe this often while Redis is down
CONNECT_TIMEOUT_S = 1.0
COMMAND_TIMEOUT_S = 2.0  # longer than any publish of a healthy Redis, short enough not to stall a flush
# What a lost or refused connection raises (redis' ConnectionError and TimeoutError are RedisErrors; a
# socket's TimeoutError is an OSError).
ERRORS: tuple[type[BaseException], ...] = (OSError, RedisError)


def client(url: str) -> aioredis.Redis:
    """A client of `url` that fails fast: errors reach the caller at once, which knows whether to retry.

    redis-py's default would retry a failed command three times with backoff of up to seconds, inside the
    call, and without a connect timeout an unreachable host would hold a connect for minutes."""
    return aioredis.from_url(  # type: ignore[no-untyped-call,no-any-return]
        url,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        socket_timeout=COMMAND_TIMEOUT_S,
        retry=Retry(NoBackoff(), 0),
    )


class RedisLink:
    """Whether Redis answers one part of this process (`what`), as its last attempt found; logged on change.

    `failed` and `ok` record attempts; `up` tells a publisher whether to try at all."""

    def __init__(self, what: str, meanwhile: str) -> None:
        self._what = what  # e.g. "Socket.IO rooms"
        self._meanwhile = meanwhile  # what works, and what does not, while Redis is down
        self._down_since: float | None = None
        self._next_probe = 0.0

    @property
    def up(self) -> bool:
        """False from a failed attempt until one succeeds."""
        return self._down_since is None

    def failed(self, exc: BaseException) -> None:
        """An attempt failed with `exc`: from now on Redis is down (logged the first time only)."""
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.warning(
                "redis does not answer (%s: %s): %s: %s; trying again every %.0f s",
                type(exc).__name__,
                exc,
                self._what,
                self._meanwhile,
                RETRY_S,
            )

    def ok(self) -> None:
        """An attempt succeeded: Redis is up (logged when it was down)."""
        if self._down_since is not None:
            log.info(
                "redis answers again after %.1f s: %s shared between processes again",
                time.monotonic() - self._down_since,
                self._what,
            )
            self._down_since = None

    async def probe(self, redis: aioredis.Redis) -> None:
        """While down, PING through `redis` at most every RETRY_S (coroutine): an answer marks the link up,
        a failure raises. Cheap while up: a reader calls it after every message it reads.

        For a reader whose subscription still looks alive when a publisher found Redis down (a publish
        that timed out, a network that drops packets): either Redis answers, and publishing resumes, or
        the subscription is likely dead too and the reader should subscribe again."""
        if self._down_since is None or time.monotonic() < self._next_probe:
            return
        self._next_probe = time.monotonic() + RETRY_S
        await redis.ping()
        self.ok()
