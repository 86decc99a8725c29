"""The `tracker bench ...` commands and their flags; `commands.py` runs them.

Policy: argparse checks only types here; a bench's own checks of its flags raise BenchError (exit status 1
with the message) when it runs, where the sizes it needs are known.
"""

from __future__ import annotations

import argparse
from typing import Any


def add_bench(sub: Any) -> None:
    """`tracker bench ingest | ingest-log | geofences | near | messages | trips | history | dry-run | map |
    replay | fleet | storm | soak`."""

    def bench_flags(cmd: argparse.ArgumentParser) -> None:
        cmd.add_argument(
            "--database-url",
            help="PostgreSQL server to create a scratch database on "
            "(default postgresql://postgres@127.0.0.1:5432/postgres)",
        )
        cmd.add_argument("--out", help="also write the JSON report to this file")

    bench = sub.add_parser("bench", help="measure the server").add_subparsers(dest="action", required=True)
    ingest = bench.add_parser("ingest", help="acked fixes/s and ack latency vs. direct inserts (JSON)")
    bench_flags(ingest)
    ingest.add_argument("--seconds", type=float, default=10.0, help="measured seconds per run")
    ingest.add_argument("--devices", type=int, default=20, help="concurrent device connections")
    ingest.add_argument("--batch", default="1,50", help="fixes per event, comma-separated sizes")
    ingest.add_argument(
        "--server-setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a server setting for this run, as TRACKER_NAME (repeat), e.g. INGEST_WRITERS=1",
    )
    ingest.add_argument(
        "--fence-stripes",
        action="store_true",
        help="load fence rules that make each device enter or exit a fence every 100 fixes",
    )
    fences = bench.add_parser(
        "geofences", help="which fences cover which points: ours vs. STRtree, naive and PostGIS (JSON)"
    )
    fences.add_argument("--fences", default="1000,10000", help="fence counts, comma-separated")
    fences.add_argument("--points", type=int, default=1_000_000, help="random points per fence count")
    bench_flags(fences)
    msgs = bench.add_parser(
        "messages",
        help="dispatcher-to-device message latency vs. a fix round trip, and an offline backlog (JSON)",
    )
    bench_flags(msgs)
    msgs.add_argument("--messages", type=int, default=1000, help="timed messages to a connected device")
    msgs.add_argument("--backlog", type=int, default=5000, help="messages queued for an offline device")
    trips = bench.add_parser(
        "trips", help="ingest throughput with an active trip per device vs none, and ETA accuracy (JSON)"
    )
    bench_flags(trips)
    trips.add_argument("--devices", type=int, default=10_000, help="devices, each with one trip in trip runs")
    trips.add_argument("--rounds", type=int, default=6, help="timed fixes per device and run (8 runs)")
    trips.add_argument(
        "--seeds", default="20260302,1,2,3", help="simulation seeds of the ETA accuracy, comma-separated"
    )
    trips.add_argument(
        "--senders", type=int, default=200, help="whole server: devices sending fixes (0: skip that part)"
    )
    trips.add_argument("--seconds", type=float, default=8.0, help="whole server: seconds per run (8 runs)")
    hist = bench.add_parser(
        "history", help="trail, positions, area and nearby latency on a loaded history (JSON)"
    )
    bench_flags(hist)
    hist.add_argument("--devices", type=int, default=1_000, help="devices with a day of stored fixes")
    hist.add_argument("--fixes-per-device", type=int, default=10_000, help="fixes per device over 24 h")
    hist.add_argument(
        "--live-devices", type=int, default=10_000, help="devices in the live index (the rest: one fix each)"
    )
    hist.add_argument("--requests", type=int, default=200, help="timed requests per query")
    hist.add_argument("--warmup", type=int, default=20, help="untimed requests per query first")
    hist.add_argument("--keep", action="store_true", help="keep the scratch database (its URL is reported)")
    map_ = bench.add_parser(
        "map",
        help="the map page in headless Chromium under streaming devices: fps, script ms per update (JSON)",
    )
    bench_flags(map_)
    map_.add_argument("--devices", default="1000,10000", help="sending devices per run, comma-separated")
    map_.add_argument("--seconds", type=float, default=20.0, help="measured seconds per window")
    map_.add_argument("--warmup", type=float, default=15.0, help="longest warm-up before a loaded window (s)")
    map_.add_argument("--rate", type=float, default=1.0, help="fixes per second per device")
    map_.add_argument("--screenshot", help="write a PNG of the page under the last load here")
    map_.add_argument("--feed", default="server,redis", help="server (real devices), redis (full rate)")
    map_.add_argument(
        "--clusters", action="store_true", help="also measure each load zoomed out, devices in clusters"
    )
    replay = bench.add_parser(
        "replay", help="the map's history replay of a week at 1 Hz: open time, fps playing (JSON)"
    )
    bench_flags(replay)
    replay.add_argument("--days", type=float, default=7.0, help="the replay's window, days")
    replay.add_argument("--interval-ms", type=int, default=1000, help="ms between a device's fixes")
    replay.add_argument("--devices", type=int, default=1, help="devices replayed at once")
    replay.add_argument("--repeats", type=int, default=5, help="timed HTTP reads of each kind")
    replay.add_argument("--seconds", type=float, default=10.0, help="measured seconds idle and playing")
    replay.add_argument("--screenshot", help="write a PNG of the page while it plays here")
    fleet = bench.add_parser(
        "fleet",
        help="N devices on their own sockets at a fixed rate vs. a bare python-socketio server (JSON)",
    )
    bench_flags(fleet)
    fleet_modes = fleet.add_mutually_exclusive_group()
    fleet_modes.add_argument(
        "--closed-loop", action="store_true", help="each device sends its next event on its ack (capacity)"
    )
    fleet_modes.add_argument(
        "--overload", action="store_true", help="capacity, then 2x it open loop, then 0.5x (phones retry)"
    )
    fleet.add_argument(
        "--devices", type=int, help="devices, one socket each (default 10000; closed loop 200; overload 2000)"
    )
    fleet.add_argument("--rate", type=float, default=0.2, help="open loop: fixes/s per device (default 0.2)")
    fleet.add_argument("--seconds", type=float, default=30.0, help="measured seconds (overload: at 2x)")
    fleet.add_argument("--warmup", type=float, default=10.0, help="seconds of load before measuring")
    fleet.add_argument("--batch", type=int, default=1, help="closed loop: fixes per event (default 1)")
    fleet.add_argument("--workers", type=int, help="passed to tracker serve --workers")
    fleet.add_argument(
        "--server-setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a tracker setting for this run, as TRACKER_NAME (repeat)",
    )
    fleet.add_argument("--servers", default="tracker,bare", help="tracker, bare or both (default both)")
    fleet.add_argument("--generators", type=int, default=1, help="Node processes for the devices (default 1)")
    fleet.add_argument(
        "--bare-gc",
        choices=("policy", "apply", "default"),
        default="apply",
        help="the bare server's GC: tracker.gc_policy.apply() at start-up (default), that and its "
        "periodic freeze (policy), or CPython's (default)",
    )

    _add_dry_run(bench, bench_flags)
    _add_storm(bench, bench_flags)
    _add_soak(bench, bench_flags)
    _add_ingest_log(bench, bench_flags)
    _add_report(bench, bench_flags)
    _add_near(bench)


def _server_setting(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(
        "--server-setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a tracker setting for this run, as TRACKER_NAME (repeat)",
    )


def _add_dry_run(bench: Any, bench_flags: Any) -> None:
    dry = bench.add_parser(
        "dry-run",
        help="a rules file tried on a day of stored history over HTTP, fixes/s vs COPY and PostGIS (JSON)",
    )
    bench_flags(dry)
    dry.add_argument("--devices", type=int, default=1_000, help="devices with a day of stored fixes (1000)")
    dry.add_argument(
        "--fixes-per-device", type=int, default=17_280, help="fixes per device over 24 h (17280: one per 5 s)"
    )
    dry.add_argument(
        "--baseline-hours", type=float, default=2.0, help="hours of the day the PostGIS baseline covers (2)"
    )
    dry.add_argument("--keep", action="store_true", help="keep the scratch database (its URL is reported)")
    dry.add_argument("--use-database", help="a database a --keep run left: skip loading the day")


def _add_storm(bench: Any, bench_flags: Any) -> None:
    storm = bench.add_parser(
        "storm",
        help="N connected devices through a SIGTERM and a kill -9 restart: recovery, lost fixes (JSON)",
    )
    bench_flags(storm)
    storm.add_argument("--devices", type=int, default=10_000, help="devices, one socket each (default 10000)")
    storm.add_argument("--interval", type=float, default=5.0, help="seconds between a device's fixes (5)")
    storm.add_argument("--warmup", type=float, default=20.0, help="seconds of load before the first restart")
    storm.add_argument(
        "--settle", type=float, default=20.0, help="seconds of load after a recovery before memory is read"
    )
    storm.add_argument(
        "--recovery-timeout", type=float, default=180.0, help="seconds a restart may take to recover (180)"
    )
    storm.add_argument(
        "--cross-every", type=int, default=6, help="fixes between a device's fence crossings (0: no fence)"
    )
    storm.add_argument("--restarts", default="sigterm,kill", help="sigterm, kill or both, in the order given")
    storm.add_argument("--generators", type=int, default=1, help="Node processes for the devices (default 1)")
    _server_setting(storm)


def _add_soak(bench: Any, bench_flags: Any) -> None:
    soak = bench.add_parser(
        "soak",
        help="N devices and viewers for minutes, with churn: RSS, fds, tasks, ack p99 per minute (JSON)",
    )
    bench_flags(soak)
    soak.add_argument("--devices", type=int, default=10_000, help="devices, one socket each (default 10000)")
    soak.add_argument("--minutes", type=float, default=30.0, help="minutes of load (default 30)")
    soak.add_argument("--interval", type=float, default=10.0, help="seconds between a device's fixes (10)")
    soak.add_argument("--viewers", type=int, default=20, help="viewers, each subscribed to a fleet (20)")
    soak.add_argument("--fleets", type=int, default=5, help="fleets the devices are spread over (5)")
    soak.add_argument(
        "--churn", type=float, default=1.0, help="percent of the devices that reconnect each minute (1)"
    )
    soak.add_argument(
        "--warmup-minutes",
        type=float,
        help="minutes before the baseline of RSS growth (default min(5, minutes/6); at least one sample)",
    )
    soak.add_argument("--sample-s", type=float, default=60.0, help="seconds between samples (default 60)")
    soak.add_argument("--generators", type=int, default=1, help="Node processes for the devices (default 1)")
    _server_setting(soak)


def _add_ingest_log(bench: Any, bench_flags: Any) -> None:
    log = bench.add_parser(
        "ingest-log",
        help="fixes into a NATS JetStream stream and drained into PostgreSQL vs. written directly (JSON)",
    )
    bench_flags(log)
    log.add_argument("--seconds", type=float, default=10.0, help="direct-write seconds per batch size (10)")
    log.add_argument("--devices", type=int, default=1000, help="devices the fixes come from (1000)")
    log.add_argument("--batch", default="10,1000", help="fixes per write, comma-separated sizes (10,1000)")
    log.add_argument("--partitions", type=int, default=8, help="stream partitions by device (8)")
    log.add_argument("--writers", type=int, default=2, help="writes in flight, as TRACKER_INGEST_WRITERS (2)")


def _add_report(bench: Any, bench_flags: Any) -> None:
    report = bench.add_parser(
        "report", help="a whole fleet's daily report on one stored fleet-day vs. a plain SQL aggregate (JSON)"
    )
    bench_flags(report)
    report.add_argument("--devices", type=int, default=1_000, help="devices of the fleet (default 1000)")
    report.add_argument("--interval-s", type=float, default=5.0, help="seconds between a device's fixes (5)")
    report.add_argument("--runs", type=int, default=3, help="timed runs of each, alternating (3)")
    report.add_argument("--keep", action="store_true", help="keep the scratch database (its URL is reported)")
    report.add_argument("--use-database", help="a database a --keep run left: skip loading the day")


def _add_near(bench: Any) -> None:
    near = bench.add_parser(
        "near",
        help="an on: near rule's cost per ingest batch in detect() vs. the same batches without (JSON)",
    )
    near.add_argument(
        "--devices", type=int, default=10_000, help="live devices, a fix each every 5 s (10000)"
    )
    near.add_argument(
        "--near-devices", type=int, default=1_000, help="of them in the near rule's fleets (1000)"
    )
    near.add_argument(
        "--distances", default="100,500", help="near rules' distance_m, comma-separated (100,500)"
    )
    near.add_argument("--minutes", type=float, default=5.0, help="simulated minutes measured (5)")
    near.add_argument(
        "--geofences", help="fences measured with and without (default: the project's geofences/)"
    )
    near.add_argument("--out", help="also write the JSON report to this file")
