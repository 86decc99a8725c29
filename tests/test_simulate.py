"""`tracker simulate` and the committed `sample_tracks/`: they are the simulator's own output, they look like
phones on vehicles in central Berlin (streets, speeds, stops, noise, gaps, jumps), and they make every rule
of `geofences/berlin.yaml` fire. Pure: no server; the files are read here with gpxpy, csv and json."""

from __future__ import annotations

import collections
import csv
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import gpxpy
import numpy as np
import pytest
import shapely

from tracker.geo import pairwise_distance_m
from tracker.geofence.config import load_folder
from tracker.geofence.dry_run import DryRun
from tracker.geofence.ruleset import RuleSet
from tracker.model import Fix
from tracker.stops import find_stops, stop_item
from tracker.tools.cli import parser
from tracker.tools.simulate import DEFAULT_COURIERS, DEFAULT_SEED, DEFAULT_VANS, FLEETS, simulate
from tracker.tools.simulate.city import build_city, to_xy
from tracker.tools.simulate.output import GPXTPX, write
from tracker.tools.simulate.recorder import GAP_RATE_PER_H, GAP_S, JUMP_ACCURACY_M, JUMP_RATE, SimTrack
from tracker.tools.simulate.vehicles import MOVING_INTERVAL_S
from tracker.trail import Trail

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_tracks"
SUFFIXES = (".gpx", ".csv", ".geojson")
DAY = "2026-03-02"


@dataclass
class Read:
    """A track file as read back: columns (accuracy None for GPX, which has no field for it)."""

    device: str | None  # as the file itself names it (GPX track name, GeoJSON properties.device)
    fleet: str | None
    ts: list[int]
    lat: list[float]
    lon: list[float]
    speed: list[float]
    heading: list[float]
    accuracy: list[float] | None


def read(path: Path) -> Read:
    if path.suffix == ".gpx":
        gpx = gpxpy.parse(path.read_text(encoding="utf-8"))
        assert len(gpx.tracks) == 1 and len(gpx.tracks[0].segments) == 1
        points = gpx.tracks[0].segments[0].points
        ext = [{child.tag: float(child.text or "nan") for child in p.extensions[0]} for p in points]
        return Read(
            gpx.tracks[0].name,
            None,
            [round(p.time.timestamp() * 1000) for p in points if p.time is not None],
            [p.latitude for p in points],
            [p.longitude for p in points],
            [e[f"{{{GPXTPX}}}speed"] for e in ext],
            [e[f"{{{GPXTPX}}}course"] for e in ext],
            None,
        )
    if path.suffix == ".csv":
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        assert rows and list(rows[0]) == ["ts", "lat", "lon", "speed", "heading", "accuracy"]
        col = {k: [float(r[k]) for r in rows] for k in rows[0]}
        return Read(
            None,
            None,
            [int(r["ts"]) for r in rows],
            col["lat"],
            col["lon"],
            col["speed"],
            col["heading"],
            col["accuracy"],
        )
    feature = json.loads(path.read_text(encoding="utf-8"))
    assert feature["type"] == "Feature" and feature["geometry"]["type"] == "LineString"
    props = feature["properties"]
    coords = feature["geometry"]["coordinates"]
    assert len(props["times"]) == len(props["speeds"]) == len(props["headings"]) == len(coords)
    assert props["points"] == len(coords) and props["from"] == props["times"][0]
    return Read(
        props["device"],
        props["fleet"],
        props["times"],
        [c[1] for c in coords],
        [c[0] for c in coords],
        props["speeds"],
        props["headings"],
        props["accuracies"],
    )


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`tracker simulate` run as a user would, with the defaults, into a fresh folder."""
    out = tmp_path_factory.mktemp("simulate") / "tracks"
    done = subprocess.run(
        [sys.executable, "-m", "tracker", "simulate", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert f"to {out}" in done.stdout
    return out


@pytest.fixture(scope="module")
def tracks() -> list[SimTrack]:
    return simulate()


@pytest.fixture(scope="module")
def files() -> list[Path]:
    return sorted(p for p in SAMPLES.iterdir() if p.suffix in SUFFIXES)


def test_committed_sample_tracks_are_exactly_the_simulators_output(generated: Path) -> None:
    committed = sorted(p.name for p in SAMPLES.iterdir())
    assert committed == sorted(p.name for p in generated.iterdir())
    for name in committed:
        assert (SAMPLES / name).read_bytes() == (generated / name).read_bytes(), (
            f"sample_tracks/{name} is not what `tracker simulate` writes: regenerate it"
        )


def test_same_seed_same_bytes_and_another_seed_differs(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    write(simulate(7, 3, 2), a, "x")
    write(simulate(7, 3, 2), b, "x")
    write(simulate(8, 3, 2), c, "x")
    names = sorted(p.name for p in a.iterdir())
    assert names == [
        "README.md",
        "courier-01.gpx",
        "courier-02.gpx",
        "courier-03.gpx",
        "van-01.csv",
        "van-02.csv",
    ]
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes()
        if name != "README.md":
            assert (a / name).read_bytes() != (c / name).read_bytes()
    # Vehicles have generators of their own: a larger fleet leaves the others as they were.
    write(simulate(7, 4, 3), c, "x")
    for name in names[1:]:
        assert (a / name).read_bytes() == (c / name).read_bytes()


def test_rewriting_a_folder_removes_stale_tracks_only(tmp_path: Path) -> None:
    write(simulate(7, 3, 1), tmp_path, "x")
    (tmp_path / "notes.txt").write_text("mine")
    write(simulate(7, 1, 1), tmp_path, "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "README.md",
        "courier-01.gpx",
        "notes.txt",
        "van-01.csv",
    ]


def test_cli_defaults_are_the_simulators() -> None:
    args = parser().parse_args(["simulate"])
    assert (args.out, args.seed, args.couriers, args.vans) == (
        Path("sample_tracks"),
        DEFAULT_SEED,
        DEFAULT_COURIERS,
        DEFAULT_VANS,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--vans", "-1"], "--vans must be between 0 and 99, not -1"),
        (["--couriers", "0", "--vans", "0"], "nothing to simulate"),
    ],
)
def test_bad_counts_are_refused_by_name(tmp_path: Path, args: list[str], message: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tracker", "simulate", "--out", str(tmp_path / "x"), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert message in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "x").exists()


def test_files_hold_the_simulated_fixes_under_their_fleet(files: list[Path], tracks: list[SimTrack]) -> None:
    by_name = {t.vehicle.filename: t for t in tracks}
    assert [p.name for p in files] == sorted(by_name)
    for path in files:
        t, got = by_name[path.name], read(path)
        prefix = path.stem.split("-")[0]
        assert FLEETS[prefix] == t.vehicle.fleet
        assert got.device in (None, path.stem) and got.fleet in (None, t.vehicle.fleet)
        assert got.ts == t.ts.tolist()
        assert got.lat == t.lat.tolist() and got.lon == t.lon.tolist()
        assert got.speed == t.speed.tolist() and got.heading == t.heading.astype(float).tolist()
        if got.accuracy is not None:
            assert got.accuracy == t.accuracy.tolist()
    formats = collections.Counter(p.suffix for p in files)
    assert formats[".gpx"] >= 10 and formats[".csv"] >= 5 and 1 <= formats[".geojson"] <= 2


def test_size_and_readme(files: list[Path]) -> None:
    total = sum(p.stat().st_size for p in SAMPLES.iterdir())
    print(f"sample_tracks: {len(files)} tracks, {total / 1e6:.2f} MB")
    assert total < 2_000_000
    assert 20 <= len(files) <= 30
    assert sum(p.name.startswith("van-") for p in files) == 8
    text = (SAMPLES / "README.md").read_text(encoding="utf-8")
    for path in files:
        assert f"`{path.name}`" in text
    for needle in (
        "`courier-NN.*` belongs to fleet `couriers`",
        "`van-NN.*` to fleet `vans`",
        "tracker simulate",
    ):
        assert needle in text
    assert "synthetic" in text.lower() or "Synthetic" in text


def test_everything_is_in_central_berlin_on_one_day(tracks: list[SimTrack]) -> None:
    for t in tracks:
        assert ((t.lon > 13.35) & (t.lon < 13.45) & (t.lat > 52.49) & (t.lat < 52.55)).all(), t.vehicle.device
        days = {str(np.datetime64(int(ms), "ms"))[:10] for ms in (t.ts[0], t.ts[-1])}
        assert days == {DAY}
        minutes = (t.ts[-1] - t.ts[0]) / 60_000
        assert 30 <= minutes <= 120, (t.vehicle.device, minutes)


def test_fixes_lie_on_streets_within_their_noise(tracks: list[SimTrack]) -> None:
    tree = shapely.STRtree(build_city(DEFAULT_SEED).street_lines())
    distances = []
    for t in tracks:
        clean = t.accuracy < JUMP_ACCURACY_M[0]
        x, y = to_xy(t.lon[clean], t.lat[clean])
        _, d = tree.query_nearest(shapely.points(x, y), return_distance=True, all_matches=False)
        # accuracy is the 68 % radius (1.5 sigma): off the street by more than 4x that is a 6-sigma error.
        worst = int(np.argmax(d / t.accuracy[clean]))
        assert d[worst] <= 4 * t.accuracy[clean][worst], (
            t.vehicle.device,
            d[worst],
            t.accuracy[clean][worst],
        )
        distances.append(d)
    d = np.concatenate(distances)
    print(f"distance to the nearest street: median {np.median(d):.1f} m, p95 {np.percentile(d, 95):.1f} m")
    assert np.median(d) < 6.0 and np.percentile(d, 95) < 15.0


def _heading_error(t: SimTrack) -> np.ndarray:
    """Degrees between each moving fix's heading and the direction from the fix before to the one after."""
    clean = (t.accuracy < JUMP_ACCURACY_M[0]) & (t.speed > 1.0)
    i = np.arange(1, len(t.ts) - 1)
    dt = np.diff(t.ts)
    i = i[clean[i - 1] & clean[i] & clean[i + 1] & (dt[i - 1] < GAP_S[0] * 1000) & (dt[i] < GAP_S[0] * 1000)]
    x, y = to_xy(t.lon, t.lat)
    dx, dy = x[i + 1] - x[i - 1], y[i + 1] - y[i - 1]
    far = np.hypot(dx, dy) > 15  # noise would swamp the direction of a shorter step
    bearing = np.degrees(np.arctan2(dx[far], dy[far])) % 360
    error: np.ndarray = np.abs((bearing - t.heading[i][far] + 180) % 360 - 180)
    return error


def test_times_speeds_and_headings_are_plausible_per_vehicle(tracks: list[SimTrack]) -> None:
    limits_kmh = {"cargo bike": (12, 25), "scooter": (12, 45), "van": (20, 55)}
    for t in tracks:
        name = t.vehicle.device
        dt = np.diff(t.ts)
        assert (dt > 0).all(), name
        assert (t.ts % 1000 == 0).all()  # GNSS fixes fall on whole seconds
        assert dt.max() <= GAP_S[1] * 1000, name
        assert ((t.heading >= 0) & (t.heading < 360)).all() and (t.speed >= 0).all()
        lo, hi = limits_kmh[t.vehicle.kind.name]
        moving = t.speed[t.speed > 1.0] * 3.6
        assert moving.max() <= hi, (name, moving.max())
        assert lo <= np.median(moving) <= hi, (name, np.median(moving))
        clean = t.accuracy < JUMP_ACCURACY_M[0]
        ok = clean[:-1] & clean[1:] & (t.speed[:-1] > 1.0) & (t.speed[1:] > 1.0)
        step = dt[ok] / 1000
        regular = step[step < GAP_S[0]]
        assert MOVING_INTERVAL_S[0] <= regular.min() and regular.max() <= MOVING_INTERVAL_S[1], name
        # The reported speed and heading agree with the motion between fixes (noise aside).
        implied = pairwise_distance_m(t.lat[:-1][ok], t.lon[:-1][ok], t.lat[1:][ok], t.lon[1:][ok]) / step
        reported = (t.speed[:-1] + t.speed[1:])[ok] / 2
        assert np.median(np.abs(implied - reported)) < 1.5, name
        assert np.median(_heading_error(t)) < 10, name
    vans = [t for t in tracks if t.vehicle.fleet == "vans"]
    assert all(t.speed.max() * 3.6 > 40 for t in vans)


def test_gaps_and_jumps_occur_at_the_chosen_rates(tracks: list[SimTrack]) -> None:
    gaps = jumps = moving = 0
    hours = 0.0
    for t in tracks:
        dt = np.diff(t.ts) / 1000
        rolling = (t.speed[:-1] > 1.0) & (t.speed[1:] > 1.0)
        found = int(((dt >= GAP_S[0]) & rolling).sum())
        jump = t.accuracy >= JUMP_ACCURACY_M[0]
        assert found >= t.gaps and int(jump.sum()) == t.jumps, t.vehicle.device  # the README's counts
        for i in np.flatnonzero(jump).tolist():  # far off the way between its neighbours (a few metres)
            assert 0 < i < len(t.ts) - 1 and not jump[i - 1] and not jump[i + 1]
            lat, lon = t.lat[[i - 1, i + 1]].mean(), t.lon[[i - 1, i + 1]].mean()
            off = float(pairwise_distance_m(np.array([lat]), np.array([lon]), t.lat[[i]], t.lon[[i]])[0])
            assert 50 <= off <= 450, (t.vehicle.device, i, off)
        gaps += found
        jumps += int(jump.sum())
        moving += int((t.speed > 0).sum())
        hours += t.driving_s / 3600
    print(f"{gaps} gaps in {hours:.1f} h of driving, {jumps} jumps in {moving} fixes while moving")
    assert 0.5 * GAP_RATE_PER_H <= gaps / hours <= 1.5 * GAP_RATE_PER_H
    assert 0.5 * JUMP_RATE <= jumps / moving <= 1.5 * JUMP_RATE


def test_shifts_start_and_end_with_stops_at_depots(tracks: list[SimTrack]) -> None:
    result = load_folder(ROOT / "geofences")
    depots = RuleSet([f for f in result.fences if "depot" in f.tags], [])
    long_stops: collections.Counter[str] = collections.Counter()
    for t in tracks:
        track = Trail.from_columns(t.ts.tolist(), t.lat.tolist(), t.lon.tolist(), t.speed.tolist())
        stops = [stop_item(track, s) for s in find_stops(track, 60.0, 120_000)]
        assert len(stops) >= t.customers, t.vehicle.device  # every customer is a stop of 2 minutes or more
        lat = np.array([stops[0]["lat"], stops[-1]["lat"]])
        lon = np.array([stops[0]["lon"], stops[-1]["lon"]])
        point, fence = depots.index.inside(lon, lat)
        assert sorted(point.tolist()) == [0, 1], (t.vehicle.device, stops[0], stops[-1])
        assert stops[0]["start_ts"] == int(t.ts[0])
        assert len(depots.index.inside(t.lon[-1:], t.lat[-1:])[0]) == 1  # the shift ends in the yard
        if stops[0]["duration_s"] >= 900:
            long_stops[t.vehicle.fleet] += 1
    print(f"loading for 15 minutes or more: {dict(long_stops)}")
    assert long_stops["couriers"] >= 2 and long_stops["vans"] >= 2


def test_the_sample_set_makes_every_berlin_rule_fire(files: list[Path]) -> None:
    result = load_folder(ROOT / "geofences")
    assert not result.errors
    # The whole shift day through the detector in time order, every device at once (as the dry-run runs
    # history), so that devices meet each other for the `near` rule.
    run = DryRun(RuleSet(result.fences, result.rules))
    fixes = []
    for path in files:
        got = read(path)
        fleet = FLEETS[path.stem.split("-")[0]]
        fixes += [
            Fix(path.stem, fleet, ts, lat, lon, speed=speed, heading=heading)
            for ts, lat, lon, speed, heading in zip(
                got.ts, got.lat, got.lon, got.speed, got.heading, strict=True
            )
        ]
    fixes.sort(key=lambda f: f.ts)
    events: collections.Counter[tuple[str, str, str]] = collections.Counter()
    for e in run.feed(fixes):
        events[(e.rule, e.type, e.fleet)] += 1
    for (rule, kind, fleet), n in sorted(events.items()):
        print(f"{rule:22} {kind:9} {fleet:9} {n}")
    by_type: collections.Counter[str] = collections.Counter()
    for (_, kind, _), n in events.items():
        by_type[kind] += n
    print(dict(by_type))
    fired = {rule for rule, _, _ in events}
    assert fired == {r.id for r in result.rules}
    assert events[("centre-speeding", "speeding", "couriers")] >= 1  # scooters, not only vans
    assert events[("centre-speeding", "speeding", "vans")] >= 3
    assert events[("restricted-entry", "enter", "vans")] >= 1
    assert events[("restricted-crossing", "cross", "vans")] >= 1
    assert events[("long-stop-at-depot", "dwell", "couriers")] >= 1
    assert events[("long-stop-at-depot", "dwell", "vans")] >= 1
    assert (
        events[("courier-meets-van", "near", "couriers")] + events[("courier-meets-van", "near", "vans")] >= 1
    )
    arrivals = events[("depot-arrival", "enter", "couriers")] + events[("depot-arrival", "enter", "vans")]
    assert arrivals >= 2 * len(files)  # every shift starts and ends at a depot or the hub
