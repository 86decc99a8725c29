"""The `tracker` console script and `python -m tracker`: the server's commands from `tracker.cli`, and
the tools' own on the same parser: demo, replay, simulate and bench.

Policy: argparse flags are defined here (the benches' in `tracker.tools.bench.cli`); a tool module is
imported only when its command runs, so that `tracker serve` loads none. Domain errors become a
one-line message and exit status 1 through the wiring's `guarded`, as the server's commands do.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tracker import cli as wiring
from tracker.tools.bench.cli import add_bench
from tracker.tools.bench.commands import run_bench


def parser() -> argparse.ArgumentParser:
    """Every command of `tracker`, in the order of its help."""
    p, sub = wiring.new_parser()
    wiring.add_serve(sub)
    _add_demo(sub)
    wiring.add_accounts(sub)
    wiring.add_geofences(sub)
    wiring.add_report(sub)
    wiring.add_db(sub)
    _add_replay(sub)
    _add_simulate(sub)
    add_bench(sub)
    return p


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the console script."""
    args = parser().parse_args(argv)
    if args.command in wiring.COMMANDS:
        sys.exit(wiring.guarded(lambda: wiring.run(args)))
    sys.exit(wiring.guarded(lambda: _run_tool(args)))


def _run_tool(args: argparse.Namespace) -> int:
    if args.command == "demo":
        from tracker.tools.demo import run_cli as demo_cli

        return demo_cli(args)
    if args.command == "replay":
        from tracker.tools.replay import run_cli as replay_cli

        return replay_cli(args)
    if args.command == "simulate":
        from tracker.tools.simulate import run_cli as simulate_cli

        return simulate_cli(args)
    return run_bench(args)


def _add_demo(sub: Any) -> None:
    demo = sub.add_parser(
        "demo", help="serve with simulated couriers replaying sample_tracks/ (prints the map URL)"
    )
    demo.add_argument("--host", help="address to listen on (default: TRACKER_HOST, else 127.0.0.1)")
    demo.add_argument("--port", type=int, help="port to listen on (default: TRACKER_PORT, else 8000)")
    demo.add_argument("--geofences", help="folder of fleet rules (default: geofences/)")
    demo.add_argument("--tracks", type=Path, help="folder of track files to replay (default: sample_tracks/)")
    demo.add_argument("--devices", type=int, default=30, help="simulated devices (default 30)")
    demo.add_argument("--speed", type=float, default=1.0, help="time factor of the replay (default 1)")
    wiring.db_flags(demo, "'demo' beside TRACKER_DATA_DIR's or the default cluster's folder")


def _add_replay(sub: Any) -> None:
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


def _add_simulate(sub: Any) -> None:
    simulate = sub.add_parser(
        "simulate", help="generate courier and van tracks on a city street grid (sample_tracks/)"
    )
    simulate.add_argument("--out", type=Path, default=Path("sample_tracks"), help="folder to write")
    simulate.add_argument("--seed", type=int, default=20260302, help="same seed, same files (byte for byte)")
    simulate.add_argument(
        "--couriers", type=int, default=16, help="courier shifts (GPX; the last as GeoJSON)"
    )
    simulate.add_argument("--vans", type=int, default=8, help="van shifts (CSV; the last as GeoJSON)")
