"""The server's commands: serve, device add|revoke, viewer add|revoke, geofences check|dry-run, report
daily, db compact (those that need no server run in `offline_commands.py`). They only build settings and
call the core; domain errors become a one-line message and exit status 1 here (`guarded`) and nowhere
else. The `tracker` console script (`tracker.tools.cli`) builds on this parser and adds the tools'
commands; nothing here imports a tool."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from tracker import __version__
from tracker import offline_commands as commands
from tracker.errors import TrackerError
from tracker.settings import Settings, load_settings

COMMANDS = ("serve", "device", "viewer", "geofences", "report", "db")  # this module's; the tools add theirs


def new_parser() -> tuple[argparse.ArgumentParser, Any]:
    """The `tracker` parser without commands, and the subparsers to add commands to."""
    p = argparse.ArgumentParser(prog="tracker", description="Real-time fleet tracking on PostGIS.")
    p.add_argument("--version", action="version", version=f"tracker {__version__}")
    return p, p.add_subparsers(dest="command", required=True)


def db_flags(cmd: argparse.ArgumentParser, data_dir: str = "TRACKER_DATA_DIR") -> None:
    """--database-url and --data-dir: which database a command uses (`data_dir`: its default, for help)."""
    cmd.add_argument(
        "--database-url",
        help="PostgreSQL URL (default: TRACKER_DATABASE_URL, else the embedded PostGIS cluster)",
    )
    cmd.add_argument("--data-dir", help=f"folder of the embedded cluster (default: {data_dir})")


def add_serve(sub: Any) -> None:
    serve = sub.add_parser("serve", help="run the server (HTTP and Socket.IO on one port)")
    serve.add_argument("--host", help="address to listen on (default: TRACKER_HOST, else 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default: TRACKER_PORT, else 8000)")
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


def add_accounts(sub: Any) -> None:
    """`device add|revoke` and `viewer add|revoke`."""
    device = sub.add_parser("device", help="manage devices").add_subparsers(dest="action", required=True)
    add_device = device.add_parser("add", help="register a device and print its token")
    add_device.add_argument("id")
    add_device.add_argument("--fleet", required=True)
    add_device.add_argument("--name")
    add_device.add_argument(
        "--replace", action="store_true", help="re-key an existing device (its old token stops working)"
    )
    db_flags(add_device)
    revoke_device = device.add_parser(
        "revoke", help="revoke a device's token (refused at once; its sockets cut within 2 s)"
    )
    revoke_device.add_argument("id")
    db_flags(revoke_device)

    viewer = sub.add_parser("viewer", help="manage viewers").add_subparsers(dest="action", required=True)
    add_viewer = viewer.add_parser("add", help="register a viewer and print its token")
    add_viewer.add_argument("name")
    grants = add_viewer.add_mutually_exclusive_group(required=True)
    grants.add_argument("--fleet", action="append", dest="fleets", help="a fleet it may see (repeat)")
    grants.add_argument("--all", action="store_true", help="every fleet")
    add_viewer.add_argument(
        "--replace", action="store_true", help="re-key an existing viewer (its old token stops working)"
    )
    add_viewer.add_argument(
        "--expires-in", help="the token expires after this: 30d, 12h, 90m, 3600 (seconds)"
    )
    db_flags(add_viewer)
    revoke_viewer = viewer.add_parser(
        "revoke", help="revoke a viewer's token (refused at once; its sockets cut within 2 s)"
    )
    revoke_viewer.add_argument("name")
    db_flags(revoke_viewer)


def add_geofences(sub: Any) -> None:
    geofences = sub.add_parser("geofences", help="fleet rules").add_subparsers(dest="action", required=True)
    check = geofences.add_parser(
        "check", help="validate every *.yaml of a folder (file:line: reason per problem)"
    )
    check.add_argument("dir", type=Path, help="the geofences folder")
    dry = geofences.add_parser(
        "dry-run",
        help="the events a rules file would have fired on stored fixes (NDJSON on stdout; nothing stored)",
    )
    dry.add_argument("file", type=Path, help="a geofences YAML file (it may name the fences in force)")
    dry.add_argument("--from", dest="from_", required=True, help="ms since the epoch or ISO 8601 with offset")
    dry.add_argument(
        "--to", required=True, help="ms since the epoch or ISO 8601 with offset (at most 31 days)"
    )
    dry.add_argument("--device", action="append", dest="devices", help="only this device (repeat)")
    dry.add_argument(
        "--format", choices=("ndjson", "json"), default="ndjson", help="one event per line, or JSON"
    )
    dry.add_argument("--geofences", help="the folder of the fences in force (default: TRACKER_GEOFENCES)")
    db_flags(dry)


def add_report(sub: Any) -> None:
    """`report daily`: a fleet's day, for cron jobs."""
    report = sub.add_parser("report", help="reports from the stored history").add_subparsers(
        dest="action", required=True
    )
    daily = report.add_parser(
        "daily", help="a fleet's day, a row per device (CSV or JSON on stdout), as GET /api/reports/daily"
    )
    daily.add_argument("--date", required=True, help="the local day, YYYY-MM-DD")
    daily.add_argument("--fleet", required=True, help="the fleet to report on")
    daily.add_argument("--tz", default="UTC", help="IANA time zone the day is local to (default UTC)")
    daily.add_argument("--format", choices=("csv", "json"), default="csv", help="default csv")
    db_flags(daily)


def add_db(sub: Any) -> None:
    """`db compact`: rebuild closed days' keys, for cron (the server does it itself unless told not to)."""
    db = sub.add_parser("db", help="database upkeep").add_subparsers(dest="action", required=True)
    compact = db.add_parser(
        "compact",
        help="rebuild the primary key of closed days of fixes not compacted yet (as the server does)",
    )
    compact.add_argument(
        "--after-s", type=float, default=3600.0, help="seconds after its UTC day ended a day is due (3600)"
    )
    compact.add_argument("--days", type=int, default=7, help="closed days looked at, newest first (7)")
    db_flags(compact)


def _parser() -> argparse.ArgumentParser:
    """The server's own commands only (the console script's parser is `tracker.tools.cli.parser`)."""
    p, sub = new_parser()
    add_serve(sub)
    add_accounts(sub)
    add_geofences(sub)
    add_report(sub)
    add_db(sub)
    return p


@contextlib.contextmanager
def database(settings: Settings) -> Iterator[str]:
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
    signal.signal(signal.SIGTERM, exit_on_signal)
    with database(settings) as url:
        supervisor.serve(settings, url, log_config)


def exit_on_signal(signum: int, frame: object) -> None:
    """A SIGTERM handler that exits through Python, so that context managers (a cluster) clean up."""
    raise SystemExit(128 + signum)


def settings_of(args: argparse.Namespace) -> Settings:
    """The settings a command runs with: its flags over the TRACKER_* environment."""
    return load_settings(
        host=getattr(args, "host", None),
        port=getattr(args, "port", None),
        redis_url=getattr(args, "redis_url", None),
        workers=getattr(args, "workers", None),
        limit_concurrency=getattr(args, "limit_concurrency", None),
        geofences=getattr(args, "geofences", None),
        database_url=args.database_url,
        data_dir=args.data_dir,
    )


def run(args: argparse.Namespace) -> int:
    """Run one of COMMANDS, parsed; its exit status. Domain errors are raised (see `guarded`)."""
    if args.command == "geofences" and args.action == "check":
        return commands.check_geofences(args.dir)
    settings = settings_of(args)
    if args.command == "geofences":
        with database(settings) as url:
            return asyncio.run(commands.dry_run(url, args, settings.geofences))
    if args.command == "serve":
        _serve(settings)
    elif args.command == "report":
        with database(settings) as url:
            print(asyncio.run(commands.report(url, args)))
    elif args.command == "db":
        with database(settings) as url:
            print(asyncio.run(commands.compact(url, args, settings.retention_days)))
    else:
        with database(accounts_database(settings)) as url:
            print(asyncio.run(commands.account(url, args)))
    return 0


def accounts_database(settings: Settings) -> Settings:
    """The settings `device` and `viewer` commands run with: told no other database than `tracker serve`'s
    default, they go to the running demo's cluster while `tracker serve`'s is not running, so that the step
    after `tracker demo` (add a device, stream from it) reaches the demo. Stderr says so; stdout keeps only
    the token."""
    from tracker.embedded_db import default_data_dir, demo_data_dir, server_running

    if settings.database_url or (settings.data_dir or default_data_dir()) != default_data_dir():
        return settings  # told which
    demo = demo_data_dir()
    if not server_running(demo):
        return settings
    if server_running(default_data_dir()):
        print(f"tracker: the demo runs too; for its database add --data-dir {demo}", file=sys.stderr)
        return settings
    print(f"tracker: the demo is running: using its database ({demo})", file=sys.stderr)
    return settings.model_copy(update={"data_dir": demo})


def guarded(command: Callable[[], int]) -> int:
    """Run `command`; a domain error becomes a one-line message and status 1, Ctrl-C status 130."""
    try:
        return command()
    except TrackerError as exc:
        print(f"tracker: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def main(argv: Sequence[str] | None = None) -> None:
    """The server's own commands (the console script is `tracker.tools.cli.main`, which adds the tools')."""
    args = _parser().parse_args(argv)
    sys.exit(guarded(lambda: run(args)))
