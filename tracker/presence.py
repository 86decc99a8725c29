"""Which devices are connected, to this process or (with Redis) to any process of the cluster.

One process: a count of open connections per device, as the device namespace opens and closes them.

Several processes: each keeps its own counts and mirrors the set of its connected devices in Redis, a SET
`<namespace>:online:<origin>` whose expiry (TRACKER_PRESENCE_EXPIRY_S) a heartbeat renews every third of
it, and registers itself in the ZSET `<namespace>:presence` (TRACKER_REDIS_NAMESPACE). The set also holds
ALIVE, which no device id can be, so it exists exactly while its process renews it. A read asks every
registered process's set about the devices wanted (SMISMEMBER) and adds this process's own counts, which
are always current. A process killed without a goodbye (kill -9, a lost machine) stops renewing, so its
set expires and its devices count offline within the expiry, judged by Redis's clock alone (no clocks of
machines compared); a reader that finds a set gone takes its process out of the registry. A process that
stops cleanly deletes its set. A device counts online while any process holds it, so one connected to
two processes at once (a phone between networks) stays online until both connections close.

The hot path does no I/O: connects and disconnects only mark the device, and the changes since the last
flush go as one MULTI (SADD, SREM, PEXPIRE, the registry's ZADD), at once after a quiet spell and then at
most once per FLUSH_S, so a reconnect storm of 10,000 devices costs a few dozen round trips, not 10,000.
Why per-process sets rather than one shared count per device: a count cannot be taken back for a process
that died, a set with an expiry can.

Redis outages (`tracker.redis_link`): while Redis is down nothing is written, reads answer from this
process's own counts (and /readyz says so), and the flush retries every RETRY_S. After a failure, or when
a flush finds this process's set or registry entry gone (Redis restarted empty), the whole set is
written again in one transaction, so the others see exactly this process's devices again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from collections import Counter
from collections.abc import Iterable

from redis.asyncio.client import Pipeline

from tracker.redis_link import ERRORS, RETRY_S, RedisLink, client

log = logging.getLogger("tracker.presence")

ALIVE = "@alive"  # in every process's set: not a device id (tracker.parse.ID_PATTERN), never removed
FLUSH_S = 0.1  # connects and disconnects reach Redis within this (a lone one, at once)


def online_key(namespace: str, origin: str) -> str:
    """The Redis SET of the devices connected to the process `origin`."""
    return f"{namespace}:online:{origin}"


class Presence:
    """Connections per device here; with a Redis URL, also shared with the other processes."""

    def __init__(self, redis_url: str | None, expiry_s: float, namespace: str = "tracker") -> None:
        self._here: Counter[str] = Counter()  # device id -> open connections to this process
        self._redis = client(redis_url) if redis_url else None
        self._expiry_ms = max(1, round(expiry_s * 1000))
        self._beat_s = expiry_s / 3
        self._origin = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._namespace = namespace
        self._registry = f"{namespace}:presence"  # ZSET: origin -> wall-clock second of its last heartbeat
        self._key = online_key(namespace, self._origin)
        self._changes: dict[str, bool] = {}  # device -> online here, since the last flush
        self._rewrite = True  # write the whole set at the next flush (at start, after a failure)
        self._next_beat = 0.0
        self._wake = asyncio.Event()  # set by a change: the flush loop sends it
        self.link: RedisLink | None = None
        if self._redis is not None:
            self.link = RedisLink(
                "device presence", "online in /api/devices counts this process's connections only"
            )

    def connected(self, device: str) -> None:
        """A connection of `device` opened here (no I/O)."""
        self._here[device] += 1
        if self._here[device] == 1 and self._redis is not None:  # without Redis there is none to tell
            self._changes[device] = True
            self._wake.set()

    def disconnected(self, device: str) -> None:
        """A connection of `device` closed here (no I/O)."""
        left = self._here[device] - 1
        if left > 0:
            self._here[device] = left
            return
        del self._here[device]
        if self._redis is not None:
            self._changes[device] = False
            self._wake.set()

    async def online(self, devices: Iterable[str]) -> set[str]:
        """Those of `devices` connected to any live process (coroutine). While Redis is down, or when it
        fails to answer, those connected to this process."""
        wanted = list(devices)
        found = {d for d in wanted if d in self._here}
        if self._redis is None or self.link is None or not self.link.up or not wanted:
            return found
        try:
            origins = [o.decode() for o in await self._redis.zrange(self._registry, 0, -1)]
            others = [o for o in origins if o != self._origin]  # our own counts are newer than our set
            if others:
                pipe = self._redis.pipeline(transaction=False)
                for origin in others:
                    pipe.smismember(online_key(self._namespace, origin), [ALIVE, *wanted])
                gone = []
                for origin, (alive, *flags) in zip(others, await pipe.execute(), strict=True):
                    if not alive:  # expired (killed) or deleted (stopped): no devices
                        gone.append(origin)
                    found.update(d for d, flag in zip(wanted, flags, strict=True) if flag)
                if gone:
                    await self._redis.zrem(self._registry, *gone)
        except ERRORS as exc:
            self.link.failed(exc)
            self._rewrite = True
        return found

    async def run(self) -> None:
        """Flush changes as they come, at most once per FLUSH_S, and heartbeat, until cancelled
        (coroutine); nothing without Redis. The first change after a quiet spell goes at once, so a lone
        connect is seen by the other processes within a round trip; a storm's go once per FLUSH_S."""
        if self._redis is None or self.link is None:
            return
        while True:
            if not self._wake.is_set():
                due = max(0.0, self._next_beat - time.monotonic()) if self.link.up else RETRY_S
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), due)
            self._wake.clear()
            await self.flush()
            await asyncio.sleep(FLUSH_S if self.link.up else RETRY_S)  # what changes meanwhile, coalesces

    async def flush(self) -> None:
        """Send what changed since the last flush, with a heartbeat when one is due (coroutine). A failure
        marks Redis down and asks for the whole set to be written again."""
        if self._redis is None or self.link is None:
            return
        now = time.monotonic()
        if not (self._rewrite or self._changes or now >= self._next_beat):
            return
        rewrite, self._rewrite = self._rewrite, False
        changes, self._changes = self._changes, {}
        try:
            if rewrite:
                await self._write_all()
            elif await self._write(changes):
                log.info("device presence was missing from redis; writing this process's set again")
                await self._write_all()
        except ERRORS as exc:
            self.link.failed(exc)
            self._rewrite = True
            return
        self._next_beat = now + self._beat_s
        self.link.ok()

    async def _write(self, changes: dict[str, bool]) -> bool:
        """Apply `changes` and renew the expiry and the registry, atomically; return True when Redis had
        lost this process's set or registry entry (it restarted empty, the set expired while this
        process stalled, a reader took it for dead), which only writing the whole set repairs."""
        assert self._redis is not None
        pipe = self._redis.pipeline(transaction=True)
        pipe.exists(self._key)
        added = [d for d, on in changes.items() if on]
        removed = [d for d, on in changes.items() if not on]
        if added:
            pipe.sadd(self._key, *added)
        if removed:
            pipe.srem(self._key, *removed)
        self._renew(pipe)
        results = await pipe.execute()
        return not results[0] or bool(results[-1])  # no set before; ZADD counts a new origin

    async def _write_all(self) -> None:
        """Replace this process's set with its current devices, atomically, and renew the registry."""
        assert self._redis is not None
        pipe = self._redis.pipeline(transaction=True)
        pipe.delete(self._key)
        pipe.sadd(self._key, ALIVE, *self._here)
        self._renew(pipe)
        await pipe.execute()

    def _renew(self, pipe: Pipeline) -> None:
        """Queue the set's expiry and the registry's heartbeat (two commands)."""
        pipe.pexpire(self._key, self._expiry_ms)
        pipe.zadd(self._registry, {self._origin: time.time()})

    async def close(self) -> None:
        """Take this process's devices out of the cluster's presence, if Redis answers (coroutine)."""
        if self._redis is None or self.link is None:
            return
        if self.link.up:
            with contextlib.suppress(*ERRORS):
                pipe = self._redis.pipeline(transaction=True)
                pipe.delete(self._key)
                pipe.zrem(self._registry, self._origin)
                await pipe.execute()
        await self._redis.aclose()
