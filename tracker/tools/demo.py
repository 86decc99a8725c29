"""`tracker demo`: the server, its fleet rules and a few dozen simulated couriers, in one command.

Policy: the server runs in this process exactly as `tracker serve` runs it (embedded PostGIS unless a
database URL is given, the rules of the geofences folder). The couriers are a separate process (the
load generator never shares the server's event loop or core): each replays a file of `sample_tracks/`
in a loop as its own device over Socket.IO. Several couriers on one file start at different points of
it. Device and viewer tokens are issued afresh on every run (the old ones stop working), and the map
URL with the viewer's token is printed once the server answers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import secrets
import signal
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from tracker import bundle
from tracker.cli import database, exit_on_signal, settings_of
from tracker.errors import ConfigError
from tracker.settings import Settings
from tracker.tools.simulate import FLEETS  # file-name prefix -> fleet
from tracker.tools.trackfile import SUFFIXES, TrackFile, read_track

log = logging.getLogger("tracker.tools.demo")

VIEWER = "demo-dispatcher"
_GOLDEN = 0.6180339887498949


@dataclass(frozen=True)
class Vehicle:
    """One simulated device: which file it replays and from how far into it (0..1) it starts."""

    id: str
    fleet: str
    file: Path
    start: float


def plan(folder: Path, count: int) -> list[Vehicle]:
    """`count` vehicles over the track files of `folder`, each file used in turn. Each vehicle starts
    at another point of its shift (a golden-ratio sequence), so that the map moves from the first
    minute instead of every shift beginning parked at a depot, and copies of one file never overlap."""
    found = sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES) if folder.is_dir() else []
    if not found:
        raise ConfigError(f"no track files ({', '.join(SUFFIXES)}) in {folder}: run 'tracker simulate'")
    groups: dict[str, list[Path]] = {}
    for p in found:
        groups.setdefault(_prefix(p), []).append(p)
    # Fleets interleaved in proportion, so that a few devices already show every fleet.
    files = sorted(found, key=lambda p: (groups[_prefix(p)].index(p) / len(groups[_prefix(p)]), p.name))
    vehicles = []
    for i in range(count):
        file, copy = files[i % len(files)], i // len(files)
        name = file.stem if copy == 0 else f"{file.stem}-{copy + 1}"
        vehicles.append(Vehicle(name, FLEETS.get(_prefix(file), "couriers"), file, (i * _GOLDEN) % 1.0))
    return vehicles


def _prefix(file: Path) -> str:
    return file.stem.split("-", 1)[0]


def rotated(track: TrackFile, start: float) -> TrackFile:
    """The track begun `start` (0..1) of the way in, its first part appended after its end, so that
    time runs on: one lap of the same length, from another point."""
    k = int(len(track) * start)
    if k <= 0 or k >= len(track):
        return track
    step = int(np.median(np.diff(track.ts))) if len(track) > 1 else 1000
    shift = int(track.ts[-1] - track.ts[0]) + step

    def turn(a: Any, shift_by: Any = 0) -> Any:
        return np.concatenate([a[k:], a[:k] + shift_by])

    return TrackFile(
        track.name,
        turn(track.ts, shift),
        turn(track.lat),
        turn(track.lon),
        {name: turn(values) for name, values in track.optional.items()},
    )


async def _register(url: str, vehicles: Sequence[Vehicle]) -> tuple[dict[str, str], str]:
    """Issue fresh tokens: one per vehicle, and one for the demo viewer of every fleet (coroutine)."""
    from tracker.auth import Authenticator
    from tracker.store import Database

    db = await Database.connect(url, min_size=1, max_size=2)
    try:
        auth = Authenticator(db, None)
        tokens = {}
        for v in vehicles:
            _, tokens[v.id] = await auth.add_device(v.id, v.fleet, v.id, actor="demo", replace=True)
        _, viewer = await auth.add_viewer(VIEWER, None, actor="demo", replace=True)
        return tokens, viewer
    finally:
        await db.close()


def run(settings: Settings, url: str, tracks: Path, count: int, speed: float) -> None:
    """Serve on `url`'s database with `count` simulated devices until interrupted."""
    import uvicorn

    from tracker.app import create_app
    from tracker.logs import configure
    from tracker.supervisor import uvicorn_options

    vehicles = plan(tracks, count)
    tokens, viewer_token = asyncio.run(_register(url, vehicles))
    if settings.admin_token is None:
        settings = settings.model_copy(update={"admin_token": secrets.token_urlsafe(24)})
    config = uvicorn.Config(
        create_app(settings, url), **uvicorn_options(settings, configure(settings.log_level))
    )
    server = uvicorn.Server(config)
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    base = f"http://{host}:{settings.port}"
    with tempfile.TemporaryDirectory(prefix="tracker-demo-") as tmp:
        plan_file = Path(tmp) / "plan.json"
        plan_file.write_bytes(
            orjson.dumps(
                {
                    "url": base,
                    "speed": speed,
                    "vehicles": [
                        {"id": v.id, "token": tokens[v.id], "file": str(v.file.resolve()), "start": v.start}
                        for v in vehicles
                    ],
                }
            )
        )
        asyncio.run(_serve(server, plan_file, base, viewer_token, settings, vehicles))


def run_cli(args: argparse.Namespace) -> int:
    """`tracker demo`: the demo on its own embedded cluster (unless a database is given), until stopped."""
    from tracker.supervisor import raise_open_files_limit

    settings = settings_of(args)
    if args.devices < 1 or not args.speed > 0:
        raise ConfigError("--devices must be at least 1 and --speed greater than 0")
    if args.geofences is None and not settings.geofences.is_dir():  # run from elsewhere: bundle.py's
        settings = settings.model_copy(update={"geofences": bundle.geofences()})
    tracks = args.tracks or next(
        (p for p in (Path("sample_tracks"), bundle.sample_tracks()) if p.is_dir()), Path("sample_tracks")
    )
    if settings.database_url is None and settings.data_dir is None:
        # Its own cluster: the demo's devices and tokens never mix with those `tracker serve` keeps.
        from tracker.embedded_db import default_data_dir

        settings = settings.model_copy(update={"data_dir": default_data_dir().parent / "demo"})
    raise_open_files_limit()
    signal.signal(signal.SIGTERM, exit_on_signal)
    with database(settings) as url:
        run(settings, url, tracks, args.devices, args.speed)
    return 0


async def _serve(
    server: Any, plan_file: Path, base: str, viewer_token: str, settings: Settings, vehicles: list[Vehicle]
) -> None:
    serving = asyncio.create_task(server.serve())
    while not server.started:  # bounded by uvicorn itself: serve() ends if it cannot start
        if serving.done():
            await serving
            return
        await asyncio.sleep(0.05)
    couriers = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tracker.tools.demo", str(plan_file)
    )
    fleets = sorted({v.fleet for v in vehicles})
    print(
        f"\ntracker demo: {len(vehicles)} simulated devices ({', '.join(fleets)}) replaying sample tracks"
        f"\n  map:          {base}/?token={viewer_token}"
        f"\n  viewer token: {viewer_token}"
        f"\n  admin token:  {settings.admin_token}"
        f"\n  API:          {base}/openapi.json"
        "\n  stop with Ctrl-C\n",
        flush=True,
    )
    try:
        await serving
    finally:
        if couriers.returncode is None:
            couriers.terminate()
            with contextlib.suppress(ProcessLookupError):
                await asyncio.wait_for(couriers.wait(), 10)


async def _couriers(plan_file: Path) -> None:
    """The load generator's process: every vehicle of the plan replays its track in a loop."""
    from tracker.tools.replay import Replayer

    spec = orjson.loads(plan_file.read_bytes())

    async def one(v: dict[str, Any]) -> None:
        track = rotated(read_track(v["file"]), v["start"])

        def on_message(message: dict[str, Any]) -> None:
            log.info(
                "device=%s got message %s from %s: %s",
                v["id"],
                message["id"],
                message["from"],
                message["body"],
            )

        while True:  # a lost server comes back: the replayer reconnects, this restarts a failed lap
            try:
                replayer = Replayer(
                    spec["url"], v["token"], [track], speed=spec["speed"], loop=True, on_message=on_message
                )
                await replayer.run()
            except Exception as exc:  # logged, retried: the demo keeps going
                log.warning("device=%s replay stopped (%s); again in 5 s", v["id"], exc)
                await asyncio.sleep(5)

    await asyncio.gather(*(one(v) for v in spec["vehicles"]))


def _couriers_main(argv: Sequence[str]) -> int:
    from tracker.logs import configure

    configure(os.environ.get("TRACKER_LOG_LEVEL", "info"))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with contextlib.suppress(KeyboardInterrupt, SystemExit):
        asyncio.run(_couriers(Path(argv[0])))
    return 0


if __name__ == "__main__":
    sys.exit(_couriers_main(sys.argv[1:]))
