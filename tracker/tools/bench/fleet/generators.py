"""The load generator's processes, seen from the bench: Node.js running `loadgen.mjs`.

Devices are split into contiguous shares, one per generator process (`--generators`), and the viewer
(tracker runs only) has a process of its own, so that every process does one kind of work and its CPU,
read from /proc at the window's ends like the server's, says what the load cost to generate. Each
process reads its settings as the first stdin line and then one JSON command per line, answering each
with one JSON line; `Generators` sends a command to all at once and merges their answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tracker.tools.bench.base import FLEET, BenchError, _child_env
from tracker.tools.bench.fleet.procs import cpu_s

SCRIPT = Path(__file__).with_name("loadgen.mjs")
ROOT = Path(__file__).resolve().parents[4]  # the checkout, with web/node_modules
_SUMMED = (
    "events",
    "fixes",
    "generated",
    "answered",
    "answered_within_2s",
    "unanswered",
    "late_sends",
    "skipped_disconnected",
    "acks",
    "accepted",
    "duplicates",
    "rejected",
    "retries",
    "retry_after_ms_sum",
    "errors",
    "disconnects",
    "positions",
    "position_events",
    "in_flight_at_end",
)
_LISTS = ("ack_ms", "retry_ms", "viewer_ms")


def node_modules() -> Path:
    """The `web/node_modules` folder holding the `ws` package; BenchError saying how to get it."""
    if shutil.which("node") is None:
        raise BenchError("the load generator needs Node.js (`node` on PATH): bash .ci/setup installs it")
    folder = ROOT / "web" / "node_modules"
    if not (folder / "ws" / "package.json").is_file():
        raise BenchError(f"the load generator needs the npm package ws in {folder}: run npm --prefix web ci")
    return folder


class _Process:
    """One Node generator process and its line protocol."""

    def __init__(self, name: str, process: asyncio.subprocess.Process) -> None:
        self.name = name
        self.process = process

    @property
    def pid(self) -> int:
        return self.process.pid

    @classmethod
    async def start(cls, name: str, config: dict[str, Any]) -> _Process:
        process = await asyncio.create_subprocess_exec(
            "node",
            str(SCRIPT),
            str(node_modules()),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=_child_env(),
            limit=2**28,
        )
        child = cls(name, process)
        await child.write(config)
        return child

    async def write(self, obj: dict[str, Any]) -> None:
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
        await self.write({"cmd": cmd, **args})
        return await self.read(timeout)

    async def close(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(Exception):
                await self.write({"cmd": "quit"})
                await asyncio.wait_for(self.process.wait(), 30)
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


@dataclass
class Generators:
    """The device generators and (for the tracker) the viewer's."""

    devices: list[_Process]
    viewer: _Process | None

    @classmethod
    async def start(
        cls,
        url: str,
        tokens: list[str],
        viewer_token: str | None,
        processes: int,
        connect_rate: float,
        connect_concurrency: int,
    ) -> Generators:
        ws_url = url.replace("http://", "ws://", 1) + "/socket.io/?EIO=4&transport=websocket"
        share = -(-len(tokens) // processes)
        devices = []
        for k in range(processes):
            part = tokens[k * share : (k + 1) * share]
            config = {
                "role": "devices",
                "url": ws_url,
                "tokens": part,
                "first_index": k * share,
                "connect_rate": connect_rate / processes,
                "connect_concurrency": max(1, connect_concurrency // processes),
            }
            devices.append(await _Process.start(f"device generator {k}", config))
        viewer = None
        if viewer_token is not None:
            config = {"role": "viewer", "url": ws_url, "token": viewer_token, "fleet": FLEET}
            viewer = await _Process.start("viewer generator", config)
        return cls(devices, viewer)

    @property
    def all(self) -> list[_Process]:
        return self.devices + ([self.viewer] if self.viewer else [])

    def cpu_s(self) -> float:
        return cpu_s(p.pid for p in self.all)

    def cpu_by_process(self) -> list[float]:
        return [cpu_s([p.pid]) for p in self.all]

    async def connect_viewer(self) -> dict[str, Any] | None:
        if self.viewer is None:
            return None
        answer = await self.viewer.command("connect", timeout=60)
        if not answer.get("subscribed"):
            raise BenchError(f"the viewer could not subscribe to fleet {FLEET}: {answer.get('error')}")
        return answer

    async def connect_devices(self, timeout: float) -> dict[str, Any]:
        answers = await asyncio.gather(*(p.command("connect", timeout) for p in self.devices))
        merged: dict[str, Any] = {
            key: sum(int(a[key]) for a in answers) for key in ("connected", "failed", "refused", "reattempts")
        }
        merged["connect_s"] = round(max(float(a["connect_s"]) for a in answers), 2)
        merged["notes"] = sorted({n for a in answers for n in a.get("notes", [])})[:8]
        return merged

    async def load(self, **cmd: Any) -> None:
        await asyncio.gather(*(p.command("load", **cmd) for p in self.devices))

    async def mark(self, name: str) -> None:
        await asyncio.gather(*(p.command("mark", name=name) for p in self.all))

    async def in_flight(self) -> int:
        answers = await asyncio.gather(*(p.command("in_flight") for p in self.devices))
        return sum(int(a["in_flight"]) for a in answers)

    async def report(self) -> dict[str, Any]:
        """Every window by name, summed over the processes (latencies pooled), and what is in flight."""
        answers = await asyncio.gather(*(p.command("report", timeout=120) for p in self.all))
        windows: dict[str, dict[str, Any]] = {}
        for answer in answers:
            for w in answer["windows"]:
                into = windows.setdefault(w["name"], {"name": w["name"], "seconds": 0.0})
                into["seconds"] = max(into["seconds"], float(w["seconds"]))
                for key in _SUMMED:
                    into[key] = into.get(key, 0) + (w[key] or 0)
                for key in _LISTS:
                    into.setdefault(key, []).extend(w[key])
                slowest = into.setdefault("max_ms_by_second", [])
                for i, ms in enumerate(w["max_ms_by_second"]):
                    if i < len(slowest):
                        slowest[i] = max(slowest[i], ms)
                    else:
                        slowest.append(ms)
        return {
            "windows": windows,
            "in_flight": sum(int(a["in_flight"]) for a in answers),
            "connected": sum(int(a["connected"]) for a in answers),
            "notes": sorted({n for a in answers for n in a["notes"]})[:8],
        }

    async def close(self) -> None:
        await asyncio.gather(*(p.close() for p in self.all), return_exceptions=True)
