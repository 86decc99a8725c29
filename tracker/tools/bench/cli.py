"""The `tracker bench ...` commands: their flags, and each run with the report printed.

Policy: a bench's own checks of its flags raise BenchError (exit status 1 with the message); the report
goes to stdout as JSON, progress to stderr. Each bench module is imported only when its command runs.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_bench(sub: Any) -> None:
    """`tracker bench ingest | geofences | messages | history | map | fleet`."""

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


def run_bench(args: argparse.Namespace) -> int:
    """Run the bench `args.action`, print its report; the exit status."""
    if args.action == "geofences":
        from tracker.tools.bench.geofences import bench_geofences

        text, agree = bench_geofences(args.database_url, args.fences, args.points, args.out)
        print(text)
        if not agree:
            print('tracker: the geofence answers disagree; see "correctness" above', file=sys.stderr)
            return 1
        return 0
    print(_report(args))
    return 0


def _report(args: argparse.Namespace) -> str:
    if args.action == "messages":
        from tracker.tools.bench.messages import bench_messages

        return bench_messages(args.database_url, args.messages, args.backlog, args.out)
    if args.action == "map":
        from tracker.tools.bench.map import bench_map

        return bench_map(
            args.database_url,
            args.devices,
            args.seconds,
            args.warmup,
            args.rate,
            args.screenshot,
            args.out,
            args.feed,
        )
    if args.action == "fleet":
        from tracker.tools.bench.fleet import bench_fleet, build_settings
        from tracker.tools.bench.server import server_env

        mode = "closed" if args.closed_loop else "overload" if args.overload else "open"
        settings = build_settings(
            mode,
            args.devices,
            args.rate,
            args.seconds,
            args.warmup,
            args.batch,
            args.workers,
            server_env(args.server_setting),
            args.servers,
            args.generators,
            args.bare_gc,
        )
        return bench_fleet(args.database_url, settings, args.out)
    if args.action == "history":
        from tracker.tools.bench.history import Settings, bench_history

        sizes = Settings(args.devices, args.fixes_per_device, args.live_devices, args.requests, args.warmup)
        return bench_history(args.database_url, sizes, args.keep, args.out)
    from tracker.tools.bench.ingest import bench_ingest

    return bench_ingest(
        args.database_url,
        args.seconds,
        args.devices,
        args.batch,
        args.out,
        args.server_setting,
        args.fence_stripes,
    )
