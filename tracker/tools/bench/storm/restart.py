"""One restart of the storm: the signal, a new server on the same port and database, the devices'
return, and what the window from that signal to the next says.

The steps: read the server's vitals, open the window (a `mark` in every generator) and start the
epoch, send the signal (SIGTERM: the server drains and exits by itself; SIGKILL: a crash), wait for the
exit, start `tracker serve` again with the same environment (port, database, rules, admin token),
wait for /readyz, then poll the generators until every device has had a fix acked on a new socket
(`recovered`) or `recovery_timeout` has passed since the signal; let the load run `settle` seconds and
read the vitals again. Times are seconds after the signal.

The server's CPU over a window spans two processes, so `ServerCpu` polls the CPU of whichever server
runs, every POLL_S, and keeps each process's last reading: the CPU of a window is the growth of their
sum (what a process spent in its last POLL_S before exiting is missed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tracker.tools.bench.fleet.figures import latency
from tracker.tools.bench.fleet.generators import Generators
from tracker.tools.bench.procfs import CLK_TCK, machine_jiffies, proc_cpu_s, tree_pids
from tracker.tools.bench.report import progress, rounded
from tracker.tools.bench.storm.settings import RECOVERY_GOAL_S, StormSettings
from tracker.tools.bench.vitals import read_vitals
from tracker.tools.server_process import ServerProcess

POLL_S = 0.25
RECOVERY_POLL_S = 0.5
SIGNALS = {"sigterm": signal.SIGTERM, "kill": signal.SIGKILL}
SHUTDOWN_LOGGERS = {"uvicorn.error", "tracker.core", "tracker.gc", "tracker.supervisor"}
MAX_SHUTDOWN_STEPS = 20


@dataclass
class ServerCpu:
    """CPU seconds of every server process seen, each at its last reading (polled every POLL_S)."""

    server: ServerProcess
    last: dict[int, float] = field(default_factory=dict)

    def poll(self) -> None:
        for pid in tree_pids(self.server.pid):
            cpu = proc_cpu_s(pid)
            if cpu is not None:
                self.last[pid] = cpu

    def total(self) -> float:
        self.poll()
        return sum(self.last.values())

    async def run(self) -> None:
        while True:
            self.poll()
            await asyncio.sleep(POLL_S)  # poll interval; cancelled at the end of the run


@dataclass(frozen=True)
class Reading:
    """CPU seconds at one instant (perf_counter `t`): the servers, the generators, the machine's busy
    jiffies (None where /proc/stat cannot be read)."""

    t: float
    server_cpu_s: float
    loadgen_cpu_s: float
    machine_busy_jiffies: int | None


class Clock:
    """Opens the named windows in every generator and reads the CPU counters at each."""

    def __init__(self, gens: Generators, cpu: ServerCpu) -> None:
        self.gens = gens
        self.cpu = cpu
        self.readings: dict[str, Reading] = {}
        self.started_ms: dict[str, int] = {}  # unix ms of each mark, in order

    async def mark(self, name: str) -> None:
        self.started_ms[name] = int(time.time() * 1000)
        await self.gens.mark(name)
        jiffies = machine_jiffies()
        self.readings[name] = Reading(
            time.perf_counter(), self.cpu.total(), self.gens.cpu_s(), jiffies[0] if jiffies else None
        )

    def cpu_cores(self, name: str, following: str) -> dict[str, Any]:
        """Cores used from mark `name` to mark `following`: servers, generators, machine, other tenants."""
        a, b = self.readings[name], self.readings[following]
        wall = b.t - a.t
        server = (b.server_cpu_s - a.server_cpu_s) / wall
        loadgen = (b.loadgen_cpu_s - a.loadgen_cpu_s) / wall
        cores: dict[str, Any] = {"server_cpu_cores": round(server, 3), "loadgen_cpu_cores": round(loadgen, 3)}
        if a.machine_busy_jiffies is not None and b.machine_busy_jiffies is not None:
            busy = (b.machine_busy_jiffies - a.machine_busy_jiffies) / CLK_TCK / wall
            cores["machine_busy_cores"] = round(busy, 3)
            # PostgreSQL, shared with other tenants, is in here: its backends change with each server
            cores["other_busy_cores"] = round(max(0.0, busy - server - loadgen), 3)
        return cores


async def restart(
    kind: str, server: ServerProcess, number: int, gens: Generators, clock: Clock, settings: StormSettings
) -> tuple[ServerProcess, dict[str, Any]]:
    """Restart `server` as `kind` says (sigterm, kill), the new one being the `number`-th; the new
    server and the restart's figures (the window's own are added by the caller)."""
    before = await read_vitals(server.pid, server.url)
    await clock.mark(kind)
    await gens.epoch()
    started = time.perf_counter()
    signalled_at = time.time()
    progress(f"{kind}: signalling server pid {server.pid}")
    await asyncio.to_thread(server.stop, SIGNALS[kind])
    exited_s = time.perf_counter() - started
    new = await asyncio.to_thread(respawn, server, number)
    clock.cpu.server = new
    ready_s = time.perf_counter() - started
    progress(f"{kind}: old server exited after {exited_s:.1f} s, new one ready after {ready_s:.1f} s")
    status = await gens.recovery()
    while (
        status["recovered"] < status["devices"] and time.perf_counter() - started < settings.recovery_timeout
    ):
        await asyncio.sleep(RECOVERY_POLL_S)  # poll interval, bounded by the recovery timeout
        status = await gens.recovery()
    waited_s = time.perf_counter() - started
    full = await gens.recovery(full=True)
    everyone = full["recovered"] == full["devices"]
    progress(
        f"{kind}: {full['recovered']} of {full['devices']} devices recovered"
        + (f" after {waited_s:.1f} s" if everyone else f" within {settings.recovery_timeout:g} s")
    )
    await asyncio.sleep(settings.settle)
    after = await read_vitals(new.pid, new.url)
    recovered_s = [ms / 1000 for ms in full["recovered_ms"]]
    last_recovered = max(recovered_s) if everyone and recovered_s else None
    figures: dict[str, Any] = {
        "signal": signal.Signals(SIGNALS[kind]).name,
        "old_server_exit_code": server.process.returncode,
        "old_server_exited_s": round(exited_s, 2),
        "new_server_ready_s": round(ready_s, 2),
        "devices": full["devices"],
        "devices_recovered": full["recovered"],
        "devices_reconnected": full["reconnected"],
        "all_recovered_s": rounded(last_recovered, 2),
        "reconnected_s": latency([ms / 1000 for ms in full["reconnected_ms"]]),
        "recovered_s": latency(recovered_s),
        "recovered_within_goal": sum(1 for s in recovered_s if s <= RECOVERY_GOAL_S),
        "vitals_before": before.as_report(),
        "vitals_after_recovery": after.as_report(),
        "rss_after_vs_before": rounded(
            after.rss_mb / before.rss_mb if after.rss_mb and before.rss_mb else None
        ),
        "old_server_log_error_lines": server.log_error_lines(),
        "old_server_log_error_samples": server.log_error_samples(3),
        "old_server_shutdown": shutdown_steps(server, signalled_at),
    }
    return new, figures


def shutdown_steps(server: ServerProcess, signalled_at: float) -> list[str]:
    """What the old server logged about its shutdown, each line prefixed with its seconds after the
    signal: where the time between signal and exit went."""
    steps = []
    for line in server.log_text().splitlines():
        try:
            entry = json.loads(line)
            at = datetime.fromisoformat(entry["ts"]).timestamp() - signalled_at
        except (ValueError, KeyError, TypeError):
            continue
        if at >= 0 and entry.get("logger") in SHUTDOWN_LOGGERS:
            steps.append(f"{at:.2f} s: {entry.get('msg', '')}"[:200])
    return steps[:MAX_SHUTDOWN_STEPS]


def respawn(server: ServerProcess, number: int) -> ServerProcess:
    """`tracker serve` again on `server`'s port with its environment, its log beside the first one's;
    ready (it blocks until /readyz answers)."""
    port = int(server.url.rsplit(":", 1)[1])
    log = server.log.with_name(f"{server.log.stem}-restart-{number}.log")
    argv = [sys.executable, "-m", "tracker", "serve"]
    return ServerProcess.spawn(argv, port, log, server.env).wait_ready()


@contextlib.asynccontextmanager
async def watching(cpu: ServerCpu) -> Any:
    """`cpu` polled in the background while the block runs."""
    task = asyncio.create_task(cpu.run(), name="server-cpu")
    try:
        yield cpu
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
