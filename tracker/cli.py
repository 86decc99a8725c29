"""The `tracker` console script. It only builds settings and calls the core; domain errors become a
one-line message and exit status 1 here and nowhere else."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from tracker.errors import ConfigError, TrackerError
from tracker.settings import Settings, load_settings


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tracker", description="Real-time fleet tracking on PostGIS.")
    sub = p.add_subparsers(dest="command", required=True)

    def db_flags(cmd: argparse.ArgumentParser) -> None:
        cmd.add_argument(
            "--database-url",
            help="PostgreSQL URL (default: TRACKER_DATABASE_URL, else the embedded PostGIS cluster)",
        )
        cmd.add_argument("--data-dir", help="folder of the embedded cluster (TRACKER_DATA_DIR)")

    def bench_flags(cmd: argparse.ArgumentParser) -> None:
        cmd.add_argument(
            "--database-url",
            help="PostgreSQL server to create a scratch database on "
            "(default postgresql://postgres@127.0.0.1:5432/postgres)",
        )
        cmd.add_argument("--out", help="also write the JSON report to this file")

    serve = sub.add_parser("serve", help="run the server (HTTP and Socket.IO on one port)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--redis-url", help="share Socket.IO rooms between processes through Redis")
    serve.add_argument("--geofences", help="folder of fleet rules (*.yaml)")
    serve.add_argument(
        "--workers", type=int, help="processes on the one port, sharing rooms through Redis (TRACKER_WORKERS)"
    )
    serve.add_argument(
        "--limit-concurrency",
        type=int,
        help="connections per process beyond which new HTTP requests get 503 (TRACKER_LIMIT_CONCURRENCY)",
    )
    db_flags(serve)

    demo = sub.add_parser(
        "demo", help="serve with simulated couriers replaying sample_tracks/ (prints the map URL)"
    )
    demo.add_argument("--host")
    demo.add_argument("--port", type=int)
    demo.add_argument("--geofences", help="folder of fleet rules (default: geofences/)")
    demo.add_argument("--tracks", type=Path, help="folder of track files to replay (default: sample_tracks/)")
    demo.add_argument("--devices", type=int, default=30, help="simulated devices (default 30)")
    demo.add_argument("--speed", type=float, default=1.0, help="time factor of the replay (default 1)")
    db_flags(demo)

    device = sub.add_parser("device", help="manage devices").add_subparsers(dest="action", required=True)
    add_device = device.add_parser("add", help="register a device and print its token")
    add_device.add_argument("id")
    add_device.add_argument("--fleet", required=True)
    add_device.add_argument("--name")
    add_device.add_argument(
        "--replace", action="store_true", help="re-key an existing device (its old token stops working)"
    )
    db_flags(add_device)

    viewer = sub.add_parser("viewer", help="manage viewers").add_subparsers(dest="action", required=True)
    add_viewer = viewer.add_parser("add", help="register a viewer and print its token")
    add_viewer.add_argument("name")
    grants = add_viewer.add_mutually_exclusive_group(required=True)
    grants.add_argument("--fleet", action="append", dest="fleets", help="a fleet it may see (repeat)")
    grants.add_argument("--all", action="store_true", help="every fleet")
    add_viewer.add_argument(
        "--replace", action="store_true", help="re-key an existing viewer (its old token stops working)"
    )
    db_flags(add_viewer)

    geofences = sub.add_parser("geofences", help="fleet rules").add_subparsers(dest="action", required=True)
    check = geofences.add_parser(
        "check", help="validate every *.yaml of a folder (file:line: reason per problem)"
    )
    check.add_argument("dir", type=Path, help="the geofences folder")

    replay = sub.add_parser(
        "replay", help="stream GPX, CSV, GeoJSON or PLT tracks as a device over Socket.IO"
    )
    replay.add_argument("files", nargs="+", type=Path, metavar="FILE")
    replay.add_argument("--url", required=True, help="the server, e.g. http://127.0.0.1:8000")
    replay.add_argument(
        "--token", required=True, help="the device token (as --token=TOKEN if it starts with -)"
    )
    replay.add_argument("--speed", type=float, default=1.0, help="time factor: 10 plays ten times faster")
    replay.add_argument(
        "--backlog", action="store_true", help="send the whole track at once, ending now (an offline phone)"
    )
    replay.add_argument(
        "--loop", action="store_true", help="repeat forever, each round continuing after the last"
    )
    replay.add_argument("--batch", type=int, default=1000, help="at most this many fixes per event (1-1000)")
    replay.add_argument(
        "--keep-times", action="store_true", help="send the recorded times instead of re-timing to now"
    )
    replay.add_argument("--quiet", action="store_true", help="no progress bar and no per-file lines")

    simulate = sub.add_parser(
        "simulate", help="generate courier and van tracks on a city street grid (sample_tracks/)"
    )
    simulate.add_argument("--out", type=Path, default=Path("sample_tracks"), help="folder to write")
    simulate.add_argument("--seed", type=int, default=20260302, help="same seed, same files (byte for byte)")
    simulate.add_argument(
        "--couriers", type=int, default=16, help="courier shifts (GPX; the last as GeoJSON)"
    )
    simulate.add_argument("--vans", type=int, default=8, help="van shifts (CSV; the last as GeoJSON)")

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
    return p


@contextlib.contextmanager
def _database(settings: Settings) -> Iterator[str]:
    """The database URL: the configured one, or the embedded cluster's (started for the duration)."""
    if settings.database_url:
        yield settings.database_url
        return
    from tracker.embedded_db import EmbeddedPostgres, default_data_dir

    with EmbeddedPostgres(settings.data_dir or default_data_dir()) as url:
        yield url


def _serve(settings: Settings) -> None:
    from tracker import supervisor
    from tracker.logs import configure

    log_config = configure(settings.log_level)
    supervisor.check(settings)  # before the cluster starts: --workers N may need redis-server
    supervisor.raise_open_files_limit()
    # uvicorn re-raises SIGTERM once it has shut down; exit through Python so that the embedded
    # cluster's context manager stops the cluster instead of the process dying with it running.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    with _database(settings) as url:
        supervisor.serve(settings, url, log_config)


def _demo(settings: Settings, args: argparse.Namespace) -> None:
    from tracker.tools import demo

    if args.devices < 1 or not args.speed > 0:
        raise ConfigError("--devices must be at least 1 and --speed greater than 0")
    if args.geofences is None and not settings.geofences.is_dir():  # run from elsewhere: the checkout's
        settings = settings.model_copy(update={"geofences": demo.ROOT / "geofences"})
    tracks = args.tracks or next(
        (p for p in (Path("sample_tracks"), demo.ROOT / "sample_tracks") if p.is_dir()), Path("sample_tracks")
    )
    if settings.database_url is None and settings.data_dir is None:
        # Its own cluster: the demo's devices and tokens never mix with those `tracker serve` keeps.
        from tracker.embedded_db import default_data_dir

        settings = settings.model_copy(update={"data_dir": default_data_dir().parent / "demo"})
    from tracker.supervisor import raise_open_files_limit

    raise_open_files_limit()
    signal.signal(signal.SIGTERM, _exit_on_signal)
    with _database(settings) as url:
        demo.run(settings, url, tracks, args.devices, args.speed)


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


async def _add(settings: Settings, url: str, args: argparse.Namespace) -> str:
    from tracker.auth import Authenticator
    from tracker.store import Database

    db = await Database.connect(url, min_size=1, max_size=1)
    try:
        auth = Authenticator(db, None)
        if args.command == "device":
            _, token = await auth.add_device(args.id, args.fleet, args.name, replace=args.replace)
        else:
            fleets = None if args.all else frozenset(args.fleets)
            _, token = await auth.add_viewer(args.name, fleets, replace=args.replace)
        return token
    finally:
        await db.close()


def _check_geofences(folder: Path) -> int:
    """`geofences check`: exit 0 when all is valid, 1 with `file:line: reason` lines, 2 without the folder."""
    import logging

    from tracker.geofence.config import load_folder

    logging.basicConfig(format="warning: %(message)s", level=logging.WARNING)  # e.g. a repaired polygon
    if not folder.is_dir():
        print(f"tracker: geofences folder '{folder}' does not exist or is not a folder", file=sys.stderr)
        return 2
    result = load_folder(folder)
    for error in result.errors:
        print(error, file=sys.stderr)
    if result.errors:
        return 1
    files = sum(1 for f in result.files if f.endswith((".yaml", ".yml")))
    print(f"{len(result.fences)} fences, {len(result.rules)} rules in {files} files")
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the console script."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "geofences":
            sys.exit(_check_geofences(args.dir))
        if args.command == "replay":
            from tracker.tools.replay import run_cli as replay_cli

            sys.exit(replay_cli(args))
        if args.command == "simulate":
            from tracker.tools.simulate import run_cli as simulate_cli

            sys.exit(simulate_cli(args))
        if args.command == "bench" and args.action == "geofences":
            from tracker.tools.bench.geofences import bench_geofences

            text, agree = bench_geofences(args.database_url, args.fences, args.points, args.out)
            print(text)
            if not agree:
                print('tracker: the geofence answers disagree; see "correctness" above', file=sys.stderr)
                sys.exit(1)
            return
        if args.command == "bench" and args.action == "messages":
            from tracker.tools.bench.messages import bench_messages

            print(bench_messages(args.database_url, args.messages, args.backlog, args.out))
            return
        if args.command == "bench" and args.action == "map":
            from tracker.tools.bench.map import bench_map

            print(
                bench_map(
                    args.database_url,
                    args.devices,
                    args.seconds,
                    args.warmup,
                    args.rate,
                    args.screenshot,
                    args.out,
                    args.feed,
                )
            )
            return
        if args.command == "bench" and args.action == "fleet":
            from tracker.tools.bench.fleet import bench_fleet

            mode = "closed" if args.closed_loop else "overload" if args.overload else "open"
            print(
                bench_fleet(
                    args.database_url,
                    mode,
                    args.devices,
                    args.rate,
                    args.seconds,
                    args.warmup,
                    args.batch,
                    args.workers,
                    args.server_setting,
                    args.servers,
                    args.generators,
                    args.out,
                    args.bare_gc,
                )
            )
            return
        if args.command == "bench" and args.action == "history":
            from tracker.tools.bench.history import Settings as HistorySettings
            from tracker.tools.bench.history import bench_history

            sizes = HistorySettings(
                args.devices, args.fixes_per_device, args.live_devices, args.requests, args.warmup
            )
            print(bench_history(args.database_url, sizes, args.keep, args.out))
            return
        if args.command == "bench":
            from tracker.tools.bench.base import bench_ingest

            print(
                bench_ingest(
                    args.database_url,
                    args.seconds,
                    args.devices,
                    args.batch,
                    args.out,
                    args.server_setting,
                    args.fence_stripes,
                )
            )
            return
        settings = load_settings(
            host=getattr(args, "host", None),
            port=getattr(args, "port", None),
            redis_url=getattr(args, "redis_url", None),
            workers=getattr(args, "workers", None),
            limit_concurrency=getattr(args, "limit_concurrency", None),
            geofences=getattr(args, "geofences", None),
            database_url=args.database_url,
            data_dir=args.data_dir,
        )
        if args.command == "serve":
            _serve(settings)
        elif args.command == "demo":
            _demo(settings, args)
        else:
            with _database(settings) as url:
                print(asyncio.run(_add(settings, url, args)))
    except TrackerError as exc:
        print(f"tracker: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
