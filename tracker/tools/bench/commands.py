"""The `tracker bench ...` commands run from their flags (`cli.py`), each with its report printed.

Policy: a bench's own checks of its flags raise BenchError (exit status 1 with the message); the report
goes to stdout as JSON, progress to stderr. Each bench module is imported only when its command runs, so
`tracker --help` loads none of them.
"""

from __future__ import annotations

import argparse
import sys


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
    if args.action == "trips":
        from tracker.tools.bench.trips import bench_trips

        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        return bench_trips(
            args.database_url,
            args.devices,
            args.rounds,
            seeds,
            args.out,
            senders=args.senders,
            seconds=args.seconds,
        )
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
            args.clusters,
        )
    if args.action == "replay":
        from tracker.tools.bench.replay import bench_replay

        return bench_replay(
            args.database_url,
            args.days,
            args.interval_ms,
            args.devices,
            args.repeats,
            args.seconds,
            args.screenshot,
            args.out,
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
    if args.action == "storm":
        from tracker.tools.bench.server import server_env
        from tracker.tools.bench.storm import bench_storm
        from tracker.tools.bench.storm import build_settings as storm_settings

        storm = storm_settings(
            args.devices,
            args.interval,
            args.warmup,
            args.settle,
            args.recovery_timeout,
            args.cross_every,
            args.restarts,
            server_env(args.server_setting),
            args.generators,
        )
        return bench_storm(args.database_url, storm, args.out)
    if args.action == "soak":
        from tracker.tools.bench.server import server_env
        from tracker.tools.bench.soak import bench_soak
        from tracker.tools.bench.soak import build_settings as soak_settings

        soak = soak_settings(
            args.devices,
            args.minutes,
            args.interval,
            args.viewers,
            args.fleets,
            args.churn,
            args.warmup_minutes,
            args.sample_s,
            server_env(args.server_setting),
            args.generators,
        )
        return bench_soak(args.database_url, soak, args.out)
    if args.action == "ingest-log":
        from tracker.tools.bench.ingest_log import bench_ingest_log

        return bench_ingest_log(
            args.database_url, args.seconds, args.devices, args.batch, args.partitions, args.writers, args.out
        )
    if args.action == "dry-run":
        from tracker.tools.bench.dry_run import Settings as DryRunSettings
        from tracker.tools.bench.dry_run import bench_dry_run

        dry = DryRunSettings(
            args.devices, args.fixes_per_device, args.baseline_hours, args.keep, args.use_database
        )
        return bench_dry_run(args.database_url, dry, args.out)
    if args.action == "report":
        from tracker.tools.bench.report_daily import Settings as ReportSettings
        from tracker.tools.bench.report_daily import bench_report

        report_sizes = ReportSettings(args.devices, args.interval_s, args.runs, args.use_database)
        return bench_report(args.database_url, report_sizes, args.keep, args.out)
    if args.action == "near":
        from tracker.tools.bench.near import bench_near

        return bench_near(
            args.devices, args.near_devices, args.distances, args.minutes, args.geofences, args.out
        )
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
