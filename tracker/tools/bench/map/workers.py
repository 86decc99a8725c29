"""The line protocol of the worker processes (`python -m tracker.tools.bench.map --worker | --feed-worker`):
settings as the first stdin line, then one JSON command per line, each answered by one JSON line.
`_Child` is the parent's end; `_stdin_reader` and `_answer` the worker's."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from typing import Any

from tracker.tools.bench.base import BenchError, _child_env

_WORKER_FLAG = "--worker"
_FEED_FLAG = "--feed-worker"


class _Child:
    """A worker process of this module: one command per line on its stdin, one JSON answer per line."""

    def __init__(self, name: str, process: asyncio.subprocess.Process) -> None:
        self.name = name
        self.process = process

    @property
    def pid(self) -> int:
        return self.process.pid

    @classmethod
    async def start(cls, name: str, flag: str, config: dict[str, Any]) -> _Child:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tracker.tools.bench.map",
            flag,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=_child_env(),
            limit=2**24,
        )
        child = cls(name, process)
        await child._write(config)
        return child

    async def _write(self, obj: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(obj).encode() + b"\n")
        await self.process.stdin.drain()

    async def read(self, timeout: float) -> dict[str, Any]:
        assert self.process.stdout is not None
        try:
            line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        except TimeoutError:
            raise BenchError(f"{self.name} did not answer within {timeout:.0f} s") from None
        if not line:
            code = await self.process.wait()
            raise BenchError(f"{self.name} exited with {code} (its errors are above)")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer and len(answer) == 1:
            raise BenchError(f"{self.name}: {answer['error']}")
        return answer

    async def command(self, cmd: str, timeout: float = 30, **args: Any) -> dict[str, Any]:
        await self._write({"cmd": cmd, **args})
        return await self.read(timeout)

    async def close(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(Exception):
                await self._write({"cmd": "quit"})
                await asyncio.wait_for(self.process.wait(), 60)
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


async def _stdin_reader() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**26)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


def _answer(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()
