"""Socket.IO rooms shared between processes through Redis, and what happens while Redis is down.

python-socketio's `AsyncRedisManager` already emits to this process's own clients before it publishes to
the others, and swallows a failed publish. But while Redis is down it tries again on every emit (two
connects each, logged as two errors), each try may wait for a connect or a redis-py retry with backoff,
and its reader, once it lost Redis, waits up to 60 s between tries (doubling), so rooms stay split for up
to a minute after Redis is back. `RedisRooms` keeps its emit path and replaces how it reaches Redis:

- publishing skips Redis while it is known to be down (`tracker.redis_link`): this process's clients
  still get every event, the others miss it, and nothing raises into a handler or the broadcaster;
- the reader subscribes again every `RETRY_S` while Redis is down, and its success ends the outage for
  the publisher too; while a publisher's failure is unexplained it PINGs, so a dead subscription that
  never said so is found as well;
- the log says once that Redis is down and once that it is back.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
import socketio

from tracker.redis_link import ERRORS, RETRY_S, RedisLink, client
from tracker.room_index import RoomIndex

READ_TIMEOUT_S = 1.0  # the reader wakes at least this often, to probe after a publisher's failure


class RedisRooms(RoomIndex, socketio.AsyncRedisManager):  # type: ignore[misc]
    """The Socket.IO client manager of a process sharing rooms through the Redis at `url`."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.link = RedisLink("Socket.IO rooms", "events reach this process's clients only")
        self._client: aioredis.Redis | None = None  # made in the event loop, on first use

    def _redis(self) -> aioredis.Redis:
        if self._client is None:
            self._client = client(self.redis_url)
        return self._client

    async def _publish(self, data: Any) -> None:
        """Send one message to the other processes (coroutine); skipped while Redis is down, never raises."""
        if not self.link.up:
            return
        try:
            await self._redis().publish(self.channel, self.json.dumps(data))
        except ERRORS as exc:
            self.link.failed(exc)
        else:
            self.link.ok()

    async def _listen(self) -> AsyncIterator[Any]:
        """The messages of the other processes, for python-socketio's reader task; never ends."""
        redis = self._redis()
        while True:
            pubsub = redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self.link.ok()
                while True:
                    message = await pubsub.get_message(timeout=READ_TIMEOUT_S)
                    if message is not None and message["type"] == "message":
                        yield message["data"]
                    await self.link.probe(redis)
            except ERRORS as exc:
                self.link.failed(exc)
            finally:
                await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(RETRY_S)
