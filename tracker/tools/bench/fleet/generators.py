"""The load generator's processes, seen from the bench: Node.js running `loadgen.mjs`.

Devices are split into contiguous shares, one per generator process (`--generators`), and the viewers
(the fleet bench's one, the soak's twenty) have a process of their own, so that every process does one
kind of work and its CPU, read from /proc at the window's ends like the server's, says what the load
cost to generate. Each process speaks the benches' line protocol (`tracker.tools.bench.line_protocol`);
`Generators` sends a command to all at once and merges their answers. `Phones` says how devices behave
when their connection drops (the storm and soak benches): they reconnect with socket.io-client's
jittered backoff and send again what was not acked.
"""

from __future__ import annotations

import asyncio
import shutil
import time
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
    "reconnects",
    "connect_failures",
    "churned",
    "dropped",
    "positions",
    "position_events",
    "viewer_bytes",
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


@dataclass(frozen=True)
class Phones:
    """Devices that behave like phones when their connection drops: they keep what was not acked and
    what they take while offline, reconnect with socket.io-client's jittered backoff and send it all
    again. `record_acks`: each keeps the times of the fixes its acks covered (`Generators.ledger`);
    `cross_every`: every that many fixes a device jumps 1 degree north or back (across a fence);
    `ts_base`: the ms the recorded times count from."""

    record_acks: bool = False
    cross_every: int = 0
    ts_base: int = 0

    def config(self) -> dict[str, Any]:
        return {
            "reconnect": True,
            "record_acks": self.record_acks,
            "cross_every": self.cross_every,
            "ts_base": self.ts_base,
        }


@dataclass
class Generators:
    """The device generators and (for the tracker) the viewers'."""

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
        *,
        phones: Phones | None = None,
        viewers: list[tuple[str, str]] | None = None,
        parse_every: int = 1,
    ) -> Generators:
        """Device processes for `tokens`, and a viewer process for `viewer_token` (a viewer of FLEET) or
        `viewers` ((token, fleet) pairs; one `positions` event in `parse_every` parsed)."""
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
                **(phones.config() if phones is not None else {}),
            }
            devices.append(await _start(f"device generator {k}", config))
        watchers = [(viewer_token, FLEET)] if viewer_token is not None else viewers or []
        viewer = None
        if watchers:
            config = {
                "role": "viewers",
                "url": ws_url,
                "viewers": [{"token": t, "fleet": f} for t, f in watchers],
                "parse_every": parse_every,
                "reconnect": phones is not None,
            }
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
            raise BenchError(
                f"{answer.get('viewers', 1) - answer.get('subscribed_count', 0)} viewer(s) could not "
                f"subscribe: {answer.get('error')}"
            )
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

    async def backlog(self) -> dict[str, Any]:
        """Events in flight, fixes the devices hold unsent, devices connected, and devices stuck (once
        connected, now 10 s in one stage of reconnecting; `stuck_stages` says where), over the processes."""
        answers = await asyncio.gather(*(p.command("in_flight") for p in self.devices))
        merged: dict[str, Any] = {
            key: sum(int(a[key]) for a in answers) for key in ("in_flight", "queued", "connected", "stuck")
        }
        merged["stuck_stages"] = sorted({s for a in answers for s in a["stuck_stages"]})
        return merged

    async def drain(self, timeout: float) -> dict[str, Any]:
        """Phones in `drain` mode: wait up to `timeout` s until they hold nothing unacked; how long it
        took and what was left (`in_flight` events, `queued` fixes), and devices connected."""
        started = time.perf_counter()
        backlog = await self.backlog()
        while (backlog["in_flight"] or backlog["queued"]) and time.perf_counter() - started < timeout:
            await asyncio.sleep(0.25)  # poll interval, bounded by the timeout
            backlog = await self.backlog()
        return {"waited_s": round(time.perf_counter() - started, 2), **backlog}

    async def epoch(self) -> None:
        """Start counting recovery: from now on, a device recovers with its first ack on a new socket."""
        await asyncio.gather(*(p.command("epoch") for p in self.devices))

    async def recovery(self, full: bool = False) -> dict[str, Any]:
        """Since the epoch: devices, connected, reconnected (on a new socket), recovered (acked there);
        with `full`, also each one's ms after the epoch (`reconnected_ms`, `recovered_ms`)."""
        answers = await asyncio.gather(*(p.command("recovery", full=full) for p in self.devices))
        merged: dict[str, Any] = {
            key: sum(int(a[key]) for a in answers)
            for key in ("devices", "connected", "reconnected", "recovered")
        }
        if full:
            for key in ("reconnected_ms", "recovered_ms"):
                merged[key] = sorted(ms for a in answers for ms in a[key])
        return merged

    async def ledger(self) -> list[tuple[int, list[int], list[int]]]:
        """(device index, acked fix times in ms after the base, acked count at each mark) per device."""
        answers = await asyncio.gather(*(p.command("ledger", timeout=120) for p in self.devices))
        return [
            (int(a["first_index"]) + i, acked, marks)
            for a in answers
            for i, (acked, marks) in enumerate(zip(a["acked"], a["marks"], strict=True))
        ]

    async def take(self, name: str) -> dict[str, Any]:
        """Window `name` summed over the processes (latencies pooled); its long lists are then freed
        in the generators, so a long run reports each window once."""
        answers = await asyncio.gather(*(p.command("take", name=name) for p in self.all))
        return _merge([a["window"] for a in answers])[name]

    async def report(self) -> dict[str, Any]:
        """Every window by name, summed over the processes (latencies pooled), and what is in flight."""
        answers = await asyncio.gather(*(p.command("report", timeout=120) for p in self.all))
        return {
            "windows": _merge([w for answer in answers for w in answer["windows"]]),
            "in_flight": sum(int(a["in_flight"]) for a in answers),
            "connected": sum(int(a["connected"]) for a in answers),
            "viewers_subscribed": sum(int(a["viewers_subscribed"]) for a in answers),
            "notes": sorted({n for a in answers for n in a["notes"]})[:8],
        }

    async def close(self) -> None:
        await asyncio.gather(*(p.close() for p in self.all), return_exceptions=True)


def _merge(parts: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Windows of several processes by name: counts summed, latencies pooled, the slowest per second."""
    windows: dict[str, dict[str, Any]] = {}
    for w in parts:
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
    return windows
