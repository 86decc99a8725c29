"""`tracker simulate`: synthetic courier and van shifts on a made-up street grid over central Berlin.

Deterministic: the seed alone decides every byte written (numpy PCG64 generators: one for the city, one
per vehicle). `city` builds the streets, `vehicles` says what moves and how, `shift` plans each
vehicle's shift, `recorder` drives it and records the fixes its phone would, `output` writes
GPX/CSV/GeoJSON and the README. The committed `sample_tracks/` are this output for the defaults.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tracker.errors import InvalidInput
from tracker.tools.simulate.city import build_city
from tracker.tools.simulate.output import write
from tracker.tools.simulate.recorder import SimTrack
from tracker.tools.simulate.shift import simulate_vehicle
from tracker.tools.simulate.vehicles import plan

__all__ = ["DEFAULT_COURIERS", "DEFAULT_SEED", "DEFAULT_VANS", "FLEETS", "command", "run_cli", "simulate"]

DEFAULT_SEED = 20260302
DEFAULT_COURIERS = 16
DEFAULT_VANS = 8
MAX_VEHICLES = 99
FLEETS = {"courier": "couriers", "van": "vans"}  # file-name prefix -> fleet (what the demo relies on)


def simulate(
    seed: int = DEFAULT_SEED, couriers: int = DEFAULT_COURIERS, vans: int = DEFAULT_VANS
) -> list[SimTrack]:
    """Every vehicle's track for `seed` (pure; nothing is written)."""
    for name, count in (("couriers", couriers), ("vans", vans)):
        if not 0 <= count <= MAX_VEHICLES:
            raise InvalidInput(f"--{name} must be between 0 and {MAX_VEHICLES}, not {count}")
    if couriers + vans == 0:
        raise InvalidInput("--couriers and --vans are both 0: nothing to simulate")
    city = build_city(seed)
    return [simulate_vehicle(city, v, seed) for v in plan(couriers, vans)]


def command(seed: int, couriers: int, vans: int) -> str:
    """The command line that makes these tracks (options at their defaults left out), for the README."""
    options = [
        f" --{name} {value}"
        for name, value, default in (
            ("seed", seed, DEFAULT_SEED),
            ("couriers", couriers, DEFAULT_COURIERS),
            ("vans", vans, DEFAULT_VANS),
        )
        if value != default
    ]
    return "tracker simulate" + "".join(options)


def run_cli(args: argparse.Namespace) -> int:
    """`tracker simulate`: write the tracks and a one-line summary; returns the exit status."""
    seed = int(getattr(args, "seed", DEFAULT_SEED))
    couriers = int(getattr(args, "couriers", DEFAULT_COURIERS))
    vans = int(getattr(args, "vans", DEFAULT_VANS))
    out = Path(args.out)
    tracks = simulate(seed, couriers, vans)
    paths = write(tracks, out, command(seed, couriers, vans))
    size = sum(p.stat().st_size for p in paths)
    fixes = sum(len(t.ts) for t in tracks)
    print(f"wrote {len(paths)} tracks ({fixes} fixes, {size / 1e6:.2f} MB) and README.md to {out}")
    return 0
