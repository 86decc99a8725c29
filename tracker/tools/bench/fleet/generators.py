"""The load generator's processes, seen from the bench: Node.js running `loadgen.mjs`.

Devices are split into contiguous shares, one per generator process (`--generators`), and the viewer
(tracker runs only) has a process of its own, so that every process does one kind of work and its CPU,
read from /proc at the window's ends like the server's, says what the load cost to generate. Each
process speaks the benches' line protocol (`tracker.tools.bench.line_protocol`); `Generators` sends a
command to all at once and merges their answers.
"""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tracker.tools.bench.line_protocol import WorkerProcess
from tracker.tools.bench.procfs import cpu_s
from tracker.tools.bench.report import BenchError
from tracker.tools.bench.server import FLEET

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


async def _start(name: str, config: dict[str, Any]) -> WorkerProcess:
    """One Node generator process, `config` sent."""
    argv = ["node", str(SCRIPT), str(node_modules())]
    return await WorkerProcess.start(name, argv, config, line_limit=2**28, close_timeout=30)


@dataclass
class Generators:
    """The device generators and (for the tracker) the viewer's."""

    devices: list[WorkerProcess]
    viewer: WorkerProcess | None

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
            devices.append(await _start(f"device generator {k}", config))
        viewer = None
        if viewer_token is not None:
            config = {"role": "viewer", "url": ws_url, "token": viewer_token, "fleet": FLEET}
            viewer = await _start("viewer generator", config)
        return cls(devices, viewer)

    @property
    def all(self) -> list[WorkerProcess]:
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
