"""The commands that work on the database (or a rules folder) directly, with no server running: accounts,
the daily report, compaction, and the geofence check and dry-run. `cli.py` parses them and calls these;
each returns what to print, or its exit status, and raises domain errors for `cli.guarded`. Each imports
what it needs when it runs, so `tracker --help` stays quick."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from pathlib import Path


async def account(url: str, args: argparse.Namespace) -> str:
    """`device add|revoke`, `viewer add|revoke`: what to print (a new token, or what was revoked)."""
    from tracker.auth import Authenticator
    from tracker.parse import duration_s
    from tracker.store import Database

    expires_s = duration_s(args.expires_in, "--expires-in") if getattr(args, "expires_in", None) else None
    actor = f"cli:{getpass.getuser()}"  # the audit trail's name for whoever ran the command
    db = await Database.connect(url, min_size=1, max_size=1)
    try:
        auth = Authenticator(db, None)
        if (args.command, args.action) == ("device", "revoke"):
            await auth.revoke_device(args.id, actor=actor)
            return f"device {args.id} revoked"
        if (args.command, args.action) == ("viewer", "revoke"):
            await auth.revoke_viewer(args.name, actor=actor)
            return f"viewer {args.name} revoked"
        if args.command == "device":
            _, token = await auth.add_device(
                args.id, args.fleet, args.name, actor=actor, replace=args.replace
            )
        else:
            fleets = None if args.all else frozenset(args.fleets)
            _, token = await auth.add_viewer(
                args.name, fleets, actor=actor, replace=args.replace, expires_s=expires_s
            )
        return token
    finally:
        await db.close()


async def report(url: str, args: argparse.Namespace) -> str:
    """`report daily`: the report of one fleet's day as CSV or JSON text."""
    import orjson

    from tracker import reports
    from tracker.errors import NotFound
    from tracker.parse import check_id
    from tracker.stops import DEFAULT_MIN_DURATION_S, DEFAULT_RADIUS_M
    from tracker.store import Database, accounts

    day = reports.local_day(args.date, args.tz, date_label="--date", tz_label="--tz")
    fleet = check_id(args.fleet, "--fleet")
    db = await Database.connect(url, min_size=1, max_size=3)  # the fixes stream on two connections
    try:
        devices = await accounts.list_devices(db, frozenset([fleet]))
        if not devices:
            raise NotFound(f"fleet {fleet!r} has no devices")
        report = await reports.daily(db, devices, day, DEFAULT_RADIUS_M, DEFAULT_MIN_DURATION_S)
    finally:
        await db.close()
    if args.format == "json":
        return orjson.dumps(report.as_json()).decode()
    return reports.csv_text(report).rstrip("\n")


async def compact(url: str, args: argparse.Namespace, retention_days: int | None) -> str:
    """`db compact`: a line per partition compacted (Busy when another process is at it)."""
    import time

    from tracker.errors import InvalidInput
    from tracker.store import Database, compaction

    if args.after_s < 0 or not 1 <= args.days <= 3660:
        raise InvalidInput("--after-s must be >= 0 and --days between 1 and 3660")
    await (await Database.connect(url, min_size=1, max_size=1)).close()  # migrated, as the server would
    done = await compaction.compact(
        url, int(time.time() * 1000), args.after_s, window_days=args.days, retention_days=retention_days
    )
    lines = [
        f"{c.partition}: key {c.key_bytes_before >> 20} -> {c.key_bytes_after >> 20} MB in {c.seconds:.1f} s"
        for c in done
    ]
    return "\n".join(lines) or "nothing to compact"


def check_geofences(folder: Path) -> int:
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


async def dry_run(url: str, args: argparse.Namespace, folder: Path) -> int:
    """`geofences dry-run`: events on stdout as they come; the file's problems on stderr, status 1."""
    import orjson

    from tracker.geofence import dry_run
    from tracker.geofence.config import load_folder
    from tracker.parse import time_ms
    from tracker.store import Database

    from_ms, to_ms = time_ms(args.from_, "--from"), time_ms(args.to, "--to")
    dry_run.check_request(0, from_ms, to_ms, args.devices)
    in_force = load_folder(folder).fences
    compiled = await asyncio.to_thread(dry_run.compile_file, args.file, in_force)
    if compiled.rules is None:
        for error in compiled.errors:
            print(error, file=sys.stderr)
        return 1
    db = await Database.connect(url, min_size=1, max_size=2)
    out = sys.stdout.buffer
    try:
        scope = await dry_run.scope_of(db, args.devices)
        first = True
        out.write(b'{"events":[' if args.format == "json" else b"")
        async for events in dry_run.run(db, compiled.rules, scope, from_ms, to_ms):
            for event in events:
                line = orjson.dumps({k: v for k, v in event.to_json().items() if k != "id"})
                if args.format == "ndjson":
                    out.write(line + b"\n")
                else:
                    out.write(line if first else b"," + line)
                first = False
            out.flush()
        out.write(b'],"errors":[]}\n' if args.format == "json" else b"")
        out.flush()
    finally:
        await db.close()
    return 0
