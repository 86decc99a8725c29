"""`tracker bench soak`: a fleet and its dispatchers for half an hour, watched for leaks and drift.

What it measures. N devices (default 10,000) over `--fleets` fleets, each on its own websocket from the
fleet bench's Node generator, send a fix every `--interval` s (10) to `tracker serve` on a scratch
database, while `--viewers` Socket.IO viewers (20, kept lean: they count every `positions` event and
parse one in ten) each watch one fleet, and `--churn` % of the devices (1) lose their connection each
minute and come back after socket.io-client's backoff, sending again what was not acked. Every
`--sample-s` (60) the server's RSS, open descriptors (/proc/<pid>/fd), asyncio tasks
(`tracker_asyncio_tasks` in /metrics) and connections are read, with the ack p50/p99 and acked/offered
of that sample and the CPU of the server, PostgreSQL and the generators. The report: RSS growth from the
end of the warm-up to the end (goal <= 5 %), descriptors and tasks first vs last (no leak), ack p99 per
sample (steady: the worst at most twice the median).

Reading RSS under churn. The server's GC policy (`tracker.gc_policy`) freezes every 5 s whatever is
alive or not yet swept, so the cyclic garbage of closed connections stays until its full collection
every TRACKER_GC_FULL_INTERVAL_S (600 s): RSS rises with reconnects between two full collections (about
32 KB per reconnect, measured with 300-2,000 devices) and levels after one. The report lists the full
collections the server logged; a run shorter than the interval sees none, and its RSS growth is then
mostly that garbage (`--server-setting GC_FULL_INTERVAL_S=60` shows the difference).

Each row also says what the server and PostgreSQL did in the sample (`causes`: retry answers by reason,
commit time, late loop probes, checkpoints, WAL, autovacuum, table size), to explain a p99 that drifts.

The pieces: `settings` (the checked flags), `samples` (rows and the summary), `causes`; the generator,
its phones and viewers are the fleet bench's (`tracker.tools.bench.fleet.generators`), the server's vitals
`tracker.tools.bench.vitals`.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from tracker.tools.bench.fleet.figures import Reading
from tracker.tools.bench.fleet.generators import Generators, Phones, node_modules
from tracker.tools.bench.fleet.runs import backend_pids
from tracker.tools.bench.procfs import cpu_s, machine_jiffies, tree_pids
from tracker.tools.bench.report import DEFAULT_BASE_URL, BenchError, machine_facts, progress, write_report
from tracker.tools.bench.scratch import scratch_database
from tracker.tools.bench.server import raise_fd_limit, register_devices, register_viewer, start_server
from tracker.tools.bench.soak import causes, samples
from tracker.tools.bench.soak.settings import SoakSettings, build_settings
from tracker.tools.bench.vitals import Vitals, read_vitals
from tracker.tools.server_process import ServerProcess

__all__ = ["bench_soak", "build_settings"]

DRAIN_S = 30.0  # after the last sample: the longest wait for the phones to send what they hold


def bench_soak(database_url: str | None, settings: SoakSettings, out: str | None) -> str:
    """Run the soak as `settings` (`build_settings` checks them) say; return its JSON report (also
    written to `out` when given)."""
    node_modules()
    fd_limit = raise_fd_limit(settings.devices + settings.viewers + 1024)
    report = run(database_url or DEFAULT_BASE_URL, settings, fd_limit)
    return write_report(report, out)


def run(base_url: str, settings: SoakSettings, fd_limit: int) -> dict[str, Any]:
    """The whole run on a scratch database of `base_url`; the report."""
    loadavg = list(os.getloadavg())
    fleets = [f"soak-{k}" for k in range(settings.fleets)]
    with tempfile.TemporaryDirectory(prefix="tracker-bench-soak-") as tmp:
        with scratch_database(base_url) as (db_url, pg):
            server = start_server(db_url, Path(tmp), settings.server_env)
            try:
                ids = [f"soak-{i:05d}" for i in range(settings.devices)]
                of = [fleets[i % settings.fleets] for i in range(settings.devices)]
                tokens = asyncio.run(register_devices(server, ids, of))
                watchers = [
                    (register_viewer(server, f"soak-viewer-{j:03d}", [fleet]), fleet)
                    for j, fleet in ((j, fleets[j % settings.fleets]) for j in range(settings.viewers))
                ]
                result = asyncio.run(_soak(server, settings, tokens, watchers, db_url))
                server.check_alive()
            finally:
                server.stop()
        # read while the log is there
        collections = full_collections(server)
        errors = {
            "server_log_error_lines": server.log_error_lines(),
            "server_log_error_samples": server.log_error_samples(),
        }
    rows = result.pop("rows")
    return {
        "machine": {**machine_facts(), "loadavg_at_start": loadavg, "fd_limit": fd_limit, **pg},
        "settings": settings.as_report(),
        **result,
        "summary": {**samples.summary(rows, settings), "server_full_collections": len(collections)},
        "samples": rows,
        "server_full_collections": collections,
        **errors,
    }


async def _soak(
    server: ServerProcess,
    settings: SoakSettings,
    tokens: list[str],
    watchers: list[tuple[str, str]],
    db_url: str,
) -> dict[str, Any]:
    """Connect the viewers and the fleet, run the load for the samples, drain; the report's parts."""
    gens = await Generators.start(
        server.url,
        tokens,
        None,
        settings.generators,
        settings.connect_rate,
        settings.connect_concurrency,
        phones=Phones(),
        viewers=watchers,
        parse_every=settings.parse_every,
    )
    backends: list[int] = []

    def read() -> Reading:
        jiffies = machine_jiffies()
        return Reading(
            time.perf_counter(),
            cpu_s(tree_pids(server.pid)),
            cpu_s(backends),
            gens.cpu_s(),
            gens.cpu_by_process(),
            jiffies[0] if jiffies else None,
        )

    rows: list[dict[str, Any]] = []
    try:
        viewer = await gens.connect_viewer()
        progress(f"connecting {len(tokens)} devices")
        connect = await gens.connect_devices(timeout=60 + 3 * len(tokens) / settings.connect_rate)
        progress(f"{connect['connected']} connected in {connect['connect_s']:.1f} s")
        if not connect["connected"]:
            raise BenchError(f"no device could connect to the server: {connect['notes']}")
        at_start = await read_vitals(server.pid, server.url)
        counters = await causes.read_counters(server.url, db_url)
        backends = await backend_pids(db_url)
        await gens.load(
            mode="open", rate=1 / settings.interval, phone=True, churn_per_minute=settings.churn_percent / 100
        )
        await gens.mark("s1")
        begin, started = read(), time.perf_counter()
        late: tuple[int, Vitals, dict[str, Any], Reading, Reading, dict[str, Any]] | None = (
            None  # the sample whose window is taken next
        )
        for k in range(1, settings.samples + 1):
            await asyncio.sleep(max(0.0, started + k * settings.sample_s - time.perf_counter()))
            await gens.mark(f"s{k + 1}" if k < settings.samples else "drain")
            end = read()
            vitals = await read_vitals(server.pid, server.url)
            seen = await gens.backlog()
            counters, previous = await causes.read_counters(server.url, db_url), counters
            if late is not None:
                rows.append(await _taken(gens, *late, settings))
            late = (k, vitals, seen, begin, end, causes.growth(previous, counters))
            backends = await backend_pids(db_url)
            begin = read()
            _say(k, settings.samples, vitals, rows[-1] if rows else None)
        await gens.load(mode="drain", phone=True)
        drain = await gens.drain(DRAIN_S)
        if late is not None:
            rows.append(await _taken(gens, *late, settings))
        report = await gens.report()
    finally:
        await gens.close()
    return {
        "connect": connect,
        "viewers": _viewers(viewer),
        "vitals_after_connect": at_start.as_report(),
        "drain": drain,
        "devices_connected_at_end": report["connected"],
        "viewers_subscribed_at_end": report["viewers_subscribed"],
        "generator_notes": report["notes"],
        "rows": rows,
    }


def full_collections(server: ServerProcess) -> list[str]:
    """The server's full garbage collections, as its log tells them (time and message). Between two,
    the cyclic garbage of closed connections stays frozen (`tracker.gc_policy`), so RSS grows with
    churn until the next one: a run shorter than TRACKER_GC_FULL_INTERVAL_S (600 s) sees none."""
    found = []
    for line in server.log_text().splitlines():
        if "full garbage collection" in line:
            try:
                entry = json.loads(line)
                found.append(f"{entry.get('ts')} {entry.get('msg', entry.get('message'))}")
            except ValueError:
                found.append(line[:200])
    return found


def _viewers(answer: dict[str, Any] | None) -> dict[str, Any] | None:
    if answer is None:
        return None
    return {
        "viewers": answer["viewers"],
        "subscribed": answer["subscribed_count"],
        "connect_s": round(answer["connect_s"], 3),
    }


async def _taken(
    gens: Generators,
    k: int,
    vitals: Vitals,
    seen: dict[str, Any],
    begin: Reading,
    end: Reading,
    caused: dict[str, Any],
    settings: SoakSettings,
) -> dict[str, Any]:
    window = await gens.take(f"s{k}")
    figures = samples.row(k, k * settings.sample_s, vitals, window, begin, end)
    figures.update(generator_connected=seen["connected"], generator_stuck=seen["stuck"], causes=caused)
    if seen["stuck"]:
        figures["generator_stuck_stages"] = seen["stuck_stages"]
    return figures


def _say(k: int, of: int, vitals: Vitals, previous: dict[str, Any] | None) -> None:
    ack = ""
    if previous:
        c = previous["causes"]
        ack = (
            f", sample {previous['sample']} ack p99 {previous['ack_ms']['p99']} ms "
            f"(retry {c['retry_by_reason']}, "
            f"commit {c['commit_ms_mean']} ms, loop late >100 ms {c['loop_late_100ms']}x, "
            f"checkpoints {c['checkpoints']}, autovacuums {c['autovacuums']})"
        )
    progress(
        f"sample {k}/{of}: RSS {vitals.rss_mb} MB, {vitals.open_fds} fds, {vitals.asyncio_tasks} tasks, "
        f"{vitals.connected_devices} devices connected{ack}"
    )
