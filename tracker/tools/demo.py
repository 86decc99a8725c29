"""`tracker demo`: the server, its fleet rules and a few dozen simulated couriers, in one command.

Policy: the server runs in this process as `tracker serve` runs it; the couriers are a separate process
(`tracker.tools.couriers`), each replaying a file of `sample_tracks/` in a loop as its own device. The port
is bound first, so a second demo on a busy port stops before it touches the first one's database. A
vehicle with a stored position goes on from its track's point nearest to it, so a restart draws no line
across town. The viewer's token is kept beside the cluster's folder (0600) and reused while the database
takes it, so a bookmarked map URL keeps working. The banner comes once the vehicles are connected, after
their log lines; the map also draws the simulated streets.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from tracker import bundle
from tracker.cli import database, exit_on_signal, settings_of
from tracker.errors import ConfigError, TrackerError, Unauthorized
from tracker.settings import Settings
from tracker.tools.simulate import FLEETS  # file-name prefix -> fleet
from tracker.tools.trackfile import SUFFIXES

if TYPE_CHECKING:
    from tracker.store import Database

log = logging.getLogger("tracker.tools.demo")

VIEWER = "demo-dispatcher"


@dataclass(frozen=True)
class Vehicle:
    """One simulated device: which file it replays, and the part of it (from `start`, `span` long, as
    fractions 0..1 of the shift) in which it starts, at its liveliest point (`tracker.tools.couriers`)."""

    id: str
    fleet: str
    file: Path
    start: float
    span: float = 1.0


def plan(folder: Path, count: int) -> list[Vehicle]:
    """`count` vehicles over the track files of `folder`, each file used in turn. Copies of one file
    share its shift out between them (each starts in its own part of it), so that they never overlap."""
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
        copies = count // len(files) + (1 if i % len(files) < count % len(files) else 0)
        name = file.stem if copy == 0 else f"{file.stem}-{copy + 1}"
        fleet = FLEETS.get(_prefix(file), "couriers")
        vehicles.append(Vehicle(name, fleet, file, copy / copies, 1 / copies))
    return vehicles


def _prefix(file: Path) -> str:
    return file.stem.split("-", 1)[0]


@dataclass(frozen=True)
class Registered:
    """What the demo's database gives its run: a fresh token per vehicle, the viewer's token, and each
    vehicle's newest stored (lat, lon), where it goes on from."""

    tokens: dict[str, str]
    viewer: str
    last: dict[str, tuple[float, float]]


async def _register(url: str, vehicles: Sequence[Vehicle], viewer_file: Path) -> Registered:
    """Fresh tokens, one per vehicle; the demo viewer's (every fleet) from `viewer_file` while the database
    still takes it, else a new one written there; the vehicles' last positions (coroutine)."""
    from tracker.store import Database
    from tracker.store.latest import newest_positions

    db = await Database.connect(url, min_size=1, max_size=2)
    try:
        ids = {v.id for v in vehicles}
        last = {p.device: (p.lat, p.lon) for p, _ in await newest_positions(db) if p.device in ids}
        return Registered(*await _tokens(db, vehicles, viewer_file), last)
    finally:
        await db.close()


async def _tokens(db: Database, vehicles: Sequence[Vehicle], viewer_file: Path) -> tuple[dict[str, str], str]:
    """The vehicles' fresh tokens, and the viewer's: kept or new (coroutine)."""
    from tracker.auth import Authenticator

    auth = Authenticator(db, None)
    tokens = {}
    for v in vehicles:
        _, tokens[v.id] = await auth.add_device(v.id, v.fleet, v.id, actor="demo", replace=True)
    with contextlib.suppress(OSError, Unauthorized):
        kept = viewer_file.read_text().strip()
        viewer = await auth.viewer(kept)
        if viewer.name == VIEWER and viewer.fleets is None and viewer.expires_ts is None:
            return tokens, kept
    _, token = await auth.add_viewer(VIEWER, None, actor="demo", replace=True)
    try:
        viewer_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(viewer_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(token + "\n")
    except OSError as exc:  # the demo works on; the next one mints another viewer token
        log.warning("cannot keep the viewer token in %s: %s", viewer_file, exc)
    return tokens, token


def listen(host: str, port: int) -> socket.socket:
    """The server's listening socket, bound before anything else (as uvicorn binds it), or ConfigError
    naming the address when it is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"cannot listen on {host}:{port}: {exc.strerror}. Is a demo or `tracker serve` already running "
            "there? Stop it, or choose another port with --port"
        ) from None
    return sock


def run(settings: Settings, url: str, sock: socket.socket, tracks: Path, count: int, speed: float) -> None:
    """Serve on `url`'s database and the bound `sock` with `count` simulated devices until interrupted."""
    import uvicorn

    from tracker.app import create_app
    from tracker.logs import configure
    from tracker.supervisor import uvicorn_options

    vehicles = plan(tracks, count)
    registered = asyncio.run(_register(url, vehicles, viewer_token_file(settings)))
    tokens, viewer_token = registered.tokens, registered.viewer
    if settings.admin_token is None:
        settings = settings.model_copy(update={"admin_token": secrets.token_urlsafe(24)})
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    base = f"http://{host}:{sock.getsockname()[1]}"
    with tempfile.TemporaryDirectory(prefix="tracker-demo-") as tmp:
        plan_file = Path(tmp) / "plan.json"
        plan_file.write_bytes(
            orjson.dumps(
                {
                    "url": base,
                    "speed": speed,
                    "vehicles": [
                        {
                            "id": v.id,
                            "token": tokens[v.id],
                            "file": str(v.file.resolve()),
                            "start": v.start,
                            "span": v.span,
                            "last": registered.last.get(v.id),
                        }
                        for v in vehicles
                    ],
                }
            )
        )
        if tracks.resolve() == bundle.sample_tracks().resolve() and settings.map_overlay is None:
            settings = settings.model_copy(update={"map_overlay": _streets(Path(tmp))})
        config = uvicorn.Config(
            create_app(settings, url), **uvicorn_options(settings, configure(settings.log_level))
        )
        server = uvicorn.Server(config)
        fleets = sorted({v.fleet for v in vehicles})
        banner = (
            f"\ntracker demo: {len(vehicles)} simulated devices ({', '.join(fleets)}) replaying sample tracks"
            f"\n  map:          {base}/?token={viewer_token}"
            f"\n  viewer token: {viewer_token} (kept across restarts)"
            f"\n  admin token:  {settings.admin_token}"
            f"\n  API:          {base}/openapi.json"
            f"\n  your device:  {_tracker()} device add van-7 --fleet couriers{_database_flag(settings)}"
            "\n                (in another terminal: it goes to this demo's database; then the README's"
            "\n                device example, with that token)"
            "\n  stop with Ctrl-C\n"
        )
        online = functools.partial(_online, base, viewer_token, len(vehicles))
        ended = asyncio.run(_serve(server, sock, plan_file, banner, online))
    if ended is not None:
        raise ended


def viewer_token_file(settings: Settings) -> Path:
    """Where the demo keeps its viewer's token: beside its cluster's folder."""
    from tracker.embedded_db import demo_data_dir

    folder = settings.data_dir or demo_data_dir()
    return folder.with_name(folder.name + "-viewer.token")


def _tracker() -> str:
    """`tracker` as the user can call it: by name on PATH, else this virtualenv's `.venv/bin/tracker`."""
    script = Path(sys.executable).with_name("tracker")
    if shutil.which("tracker") or not script.is_file():
        return "tracker"
    return os.path.relpath(script) if script.is_relative_to(Path.cwd()) else str(script)


def _database_flag(settings: Settings) -> str:
    """What `tracker device add` needs to reach this demo's database (nothing for the usual one)."""
    from tracker.embedded_db import demo_data_dir

    if settings.database_url:
        return " --database-url <the demo's>"
    if settings.data_dir is not None and settings.data_dir.resolve() != demo_data_dir().resolve():
        return f" --data-dir {settings.data_dir}"
    return ""


def _streets(folder: Path) -> Path:
    """The simulated streets the sample tracks were made on, as a GeoJSON file in `folder`."""
    from tracker.tools.simulate import DEFAULT_SEED
    from tracker.tools.simulate.city import build_city, streets_geojson

    path = folder / "streets.geojson"
    path.write_bytes(orjson.dumps(streets_geojson(build_city(DEFAULT_SEED))))
    return path


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
    if settings.database_url is None and args.data_dir is None:
        # Its own cluster beside `tracker serve`'s (TRACKER_DATA_DIR's): the demo's devices and tokens never
        # mix with those `tracker serve` keeps.
        from tracker.embedded_db import demo_data_dir

        settings = settings.model_copy(update={"data_dir": demo_data_dir()})
    raise_open_files_limit()
    signal.signal(signal.SIGTERM, exit_on_signal)
    with listen(settings.host, settings.port) as sock, database(settings) as url:
        run(settings, url, sock, tracks, args.devices, args.speed)
    return 0


async def _online(base: str, token: str, count: int, within_s: float = 10.0) -> None:
    """Waits until `count` devices are online, or `within_s` (coroutine): the banner then comes after the
    vehicles' connection logs, which would otherwise push it off a terminal's screen."""
    import httpx

    deadline = time.monotonic() + within_s
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}) as http:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError, ValueError, KeyError, TypeError):
                devices = (await http.get("/api/devices", timeout=2)).json()["devices"]
                if sum(bool(d.get("online")) for d in devices) >= count:
                    break
            await asyncio.sleep(0.2)
    await asyncio.sleep(0.2)  # the last connections' log lines


async def _serve(
    server: Any, sock: socket.socket, plan_file: Path, banner: str, online: Callable[[], Awaitable[None]]
) -> BaseException | None:
    """Serve until stopped, with the couriers' process once the server answers; what stopped it
    (SystemExit, KeyboardInterrupt) is returned, to be raised once the event loop is closed."""
    couriers: asyncio.subprocess.Process | None = None
    stop_server = server.handle_exit

    def handle_exit(sig: int, frame: Any) -> None:
        # The couriers go first, so that none of them sees the server close its connection.
        if couriers is not None and couriers.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                couriers.terminate()
        stop_server(sig, frame)

    server.handle_exit = handle_exit  # read by uvicorn when serve() installs its signal handlers

    async def serve() -> BaseException | None:
        try:
            await server.serve(sockets=[sock])
        except (SystemExit, KeyboardInterrupt) as exc:  # uvicorn's exit, or the signal it raises again
            return exc
        return None

    serving = asyncio.create_task(serve())
    while not server.started:  # bounded by uvicorn itself: serve() ends if it cannot start
        if serving.done():
            ended = await serving
            code = ended.code if isinstance(ended, SystemExit) else None
            if isinstance(ended, KeyboardInterrupt) or code in (None, 0) or code == 128 + signal.SIGTERM:
                return ended
            raise TrackerError("the demo's server did not start: its log above says why")
        await asyncio.sleep(0.05)
    couriers = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tracker.tools.couriers", str(plan_file)
    )
    await online()
    print(banner, flush=True)
    try:
        return await serving
    finally:
        if couriers.returncode is None:
            couriers.terminate()
        with contextlib.suppress(ProcessLookupError):
            await asyncio.wait_for(couriers.wait(), 10)
