"""The line protocol between a bench and its worker processes (the fleet bench's Node generators, the
map bench's load generator and feed): settings as the first stdin line, then one JSON command per line,
each answered by one JSON line on stdout.

`WorkerProcess` is the bench's end; `stdin_reader` and `answer` the worker's. An answer that is only
`{"error": ...}` is the worker's refusal and raises BenchError, as do silence past a timeout and an exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Sequence
from typing import Any

from tracker.tools.bench.report import BenchError
from tracker.tools.server_process import clean_env


class WorkerProcess:
    """A worker process: one command per line on its stdin, one JSON answer per line on its stdout."""

    def __init__(self, name: str, process: asyncio.subprocess.Process, close_timeout: float) -> None:
        self.name = name
        self.process = process
        self.close_timeout = close_timeout

    @property
    def pid(self) -> int:
        return self.process.pid

    @classmethod
    async def start(
        cls,
        name: str,
        argv: Sequence[str],
        config: dict[str, Any],
        line_limit: int,
        close_timeout: float = 30,
    ) -> WorkerProcess:
        """Start `argv` (named `name` in errors) and send it `config`; answers up to `line_limit` bytes."""
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=clean_env(),
            limit=line_limit,
        )
        child = cls(name, process, close_timeout)
        await child.write(config)
        return child

    async def write(self, obj: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(obj).encode() + b"\n")
        await self.process.stdin.drain()

    async def read(self, timeout: float) -> dict[str, Any]:
        """The next answer (waits up to `timeout` seconds)."""
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
        await self.write({"cmd": cmd, **args})
        return await self.read(timeout)

    async def close(self) -> None:
        """Ask the worker to quit; kill it if it has not within `close_timeout`."""
        if self.process.returncode is None:
            with contextlib.suppress(Exception):
                await self.write({"cmd": "quit"})
                await asyncio.wait_for(self.process.wait(), self.close_timeout)
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


async def stdin_reader() -> asyncio.StreamReader:
    """The worker's stdin as a stream (lines up to 64 MiB)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**26)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


def answer(obj: dict[str, Any]) -> None:
    """One answer of the worker: a JSON line on stdout."""
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()
