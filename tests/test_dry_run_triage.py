"""The dry-run's triage (`tracker.geofence.triage`) against the detector fed every fix: on the real tracks
of /work/shared/realdata (read from there), with the real districts and campus of their cities and fences
drawn along the tracks so that every kind of rule fires often, the fast path gives exactly the events,
fence states and heads of a run that feeds the detector each fix on its own."""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import pytest
from harness import REALDATA

from tracker.geofence import crossings
from tracker.geofence.dry_run import MAX_CHUNK_PAIRS, DryRun, chunk_target, compile_text
from tracker.geofence.ruleset import RuleSet
from tracker.model import GeofenceEvent
from tracker.store.history_fixes import CHUNK_FIXES, FixColumns, to_fixes
from tracker.tools.trackfile import TrackFileError, read_track

GEOFENCES = REALDATA / "geofences"
SEED = 18
T0 = 1_780_000_000_000  # every track is moved to start within a minute of this, so that chunks mix them
PER_TRACK = 1_200  # fixes of each track: the run fed fix by fix costs about a millisecond a fix

RULES = """
rules:
  - {id: area-in, on: enter, fence_tags: [area]}
  - {id: area-out, on: exit, fence_tags: [area], confirm_fixes: 2}
  - {id: area-fast, on: speeding, fence_tags: [area], max_speed_kmh: 25}
  - {id: stop-in, on: enter, fence_tags: [stop], confirm_fixes: 3}
  - {id: stop-out, on: exit, fence_tags: [stop], confirm_fixes: 2}
  - {id: stop-dwell, on: dwell, fence_tags: [stop], dwell_s: 60}
  - {id: stop-long, on: dwell, fence_tags: [stop], dwell_s: 600}
  - {id: stop-fast, on: speeding, fence_tags: [stop], max_speed_kmh: 12}
  - {id: stop-sure, on: enter, fence_tags: [stop], accuracy: strict}
  - {id: stop-sure-out, on: exit, fence_tags: [stop], accuracy: strict, confirm_fixes: 2}
  - {id: bridge-cross, on: cross, fence_tags: [bridge]}
  - {id: ring-cross, on: cross, fence_tags: [ring]}
  - {id: line-in, on: enter, fence_tags: [line]}
"""


def _tracks() -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """(name, ts, lat, lon, speed m/s) of every readable real track, moved to start near T0."""
    out = []
    for i, path in enumerate(sorted((REALDATA / "tracks").rglob("*"))):
        if path.suffix not in (".gpx", ".plt", ".json", ".csv"):
            continue
        try:
            t = read_track(path)
        except TrackFileError:
            continue
        ts = np.asarray(t.ts, np.int64)[:PER_TRACK]
        lat = np.asarray(t.lat, np.float64)[:PER_TRACK]
        lon = np.asarray(t.lon, np.float64)[:PER_TRACK]
        dt = np.maximum(np.diff(ts), 1) / 1000
        step = np.hypot(np.diff(lat) * 111_000, np.diff(lon) * 111_000 * np.cos(np.radians(lat[1:])))
        speed = np.r_[0.0, step / dt]  # as a device would report it, spikes and all
        out.append((f"{path.stem}-{i}", ts - ts[0] + T0 + i * 1000, lat, lon, speed))
    return out


def _rules_text(tracks: list[tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]) -> str:
    """The cities' real districts and campus, and along each track circles (stops) and short strips
    across it (lines) at seeded places."""
    rng = np.random.default_rng(SEED)
    lines = ["fences:"]
    for name in ("munich_stadtbezirke", "zurich_stadtkreise", "tsinghua_campus_wgs84"):
        lines += [f"  - id: {name}", "    tags: [area]", f"    geojson: {name}.geojson"]
    k = 0
    for _, _, lat, lon, _ in tracks:
        for j in rng.choice(len(lat), size=min(12, len(lat)), replace=False).tolist():
            r = round(float(rng.uniform(30, 250)), 1)
            lines += [
                f"  - id: stop-{k}",
                "    tags: [stop, ring]" if k % 16 == 4 else "    tags: [stop]",
                f"    circle: {{center: [{lon[j]:.6f}, {lat[j]:.6f}], radius_m: {r}}}",
            ]
            x, y, w = lon[j] + rng.uniform(-3e-4, 3e-4), lat[j], 2e-5
            ring = [[x, y - 2e-3], [x + w, y - 2e-3], [x + w, y + 2e-3], [x, y + 2e-3]]
            coords = ", ".join(f"[{a:.6f}, {b:.6f}]" for a, b in ring)
            tags = "[line, bridge]" if k % 8 == 0 else "[line]"  # at most crossings.MAX_BOXED cross fences
            lines += [f"  - id: line-{k}", f"    tags: {tags}", f"    polygon: [{coords}]"]
            k += 1
    return "\n".join(lines) + "\n" + RULES


@pytest.fixture(scope="module", params=["strict", "plain"])
def world(request: pytest.FixtureRequest) -> tuple[RuleSet, list[str], list[str], FixColumns]:
    """The tracks as one chunk's columns and the rules, with strict rules or without (the triage's
    confirm window is one fix shorter without)."""
    tracks = _tracks()
    text = _rules_text(tracks)
    if request.param == "plain":
        text = "\n".join(line for line in text.splitlines() if "accuracy: strict" not in line)
    compiled = compile_text(text, (), GEOFENCES)
    assert compiled.rules is not None, compiled.errors[:3]
    rng = np.random.default_rng(SEED)
    devices = [name for name, *_ in tracks]
    fleets = [("vans", "bikes")[i % 2] for i in range(len(devices))]
    n = [len(ts) for _, ts, *_ in tracks]
    columns = FixColumns(
        device=np.repeat(np.arange(len(tracks), dtype=np.int64), n),
        ts=np.concatenate([ts for _, ts, *_ in tracks]),
        lon=np.concatenate([lon for *_, lon, _ in tracks]),
        lat=np.concatenate([lat for _, _, lat, _, _ in tracks]),
        speed=np.concatenate([speed for *_, speed in tracks]),
        accuracy=rng.choice([np.nan, 5.0, 20.0, 80.0], size=sum(n)),  # the real files have little
    )
    return compiled.rules, devices, fleets, columns


def _chunks(columns: FixColumns, span_ms: int) -> list[FixColumns]:
    """The fixes cut by time into chunks of span_ms, each shuffled (a chunk comes in no order)."""
    rng = np.random.default_rng(SEED)
    slot = (columns.ts - T0) // span_ms
    out = []
    for s in np.unique(slot).tolist():
        idx = rng.permutation(np.flatnonzero(slot == s))
        out.append(
            FixColumns(
                columns.device[idx],
                columns.ts[idx],
                columns.lon[idx],
                columns.lat[idx],
                columns.speed[idx],
                columns.accuracy[idx],
            )
        )
    return out


@pytest.fixture(scope="module")
def fix_by_fix(world: tuple[RuleSet, list[str], list[str], FixColumns]) -> tuple[DryRun, list[GeofenceEvent]]:
    """The detector fed each fix on its own, in time order, and its events in the order a batch gives
    them (by time, then device), as a chunk's events come out."""
    rules, devices, fleets, columns = world
    run = DryRun(rules, triage=False)
    fired = [e for f in to_fixes(columns, devices, fleets) for e in run.feed([f])]
    return run, sorted(fired, key=lambda e: (e.ts, e.device))


@pytest.mark.parametrize("span_ms", [60_000, 3_600_000])
def test_the_triage_gives_the_events_of_a_run_fed_fix_by_fix(
    world: tuple[RuleSet, list[str], list[str], FixColumns],
    fix_by_fix: tuple[DryRun, list[GeofenceEvent]],
    span_ms: int,
) -> None:
    rules, devices, fleets, columns = world
    reference, want = fix_by_fix
    kinds = collections.Counter(e.type for e in want)
    assert all(kinds[k] >= 20 for k in ("enter", "exit", "dwell", "speeding", "cross")), kinds
    fast, whole = DryRun(rules), DryRun(rules, triage=False)
    chunks = _chunks(columns, span_ms)
    assert [e for chunk in chunks for e in whole.feed_columns(chunk, devices, fleets)] == want
    assert [e for chunk in chunks for e in fast.feed_columns(chunk, devices, fleets)] == want
    assert fast.states == reference.states and fast.heads == reference.heads
    assert fast.fixes == len(columns)


def test_every_track_file_was_read() -> None:
    """The comparison above ran on the real tracks, not on an empty folder."""
    names = [p for p in (REALDATA / "tracks").rglob("*") if p.suffix in (".gpx", ".plt", ".json", ".csv")]
    assert len(names) >= 20 and len(_tracks()) >= 20
    assert all(
        Path(GEOFENCES / f"{n}.geojson").is_file() for n in ("munich_stadtbezirke", "zurich_stadtkreise")
    )


def test_crossings_tested_against_boxes_first_are_the_same(
    world: tuple[RuleSet, list[str], list[str], FixColumns],
    fix_by_fix: tuple[DryRun, list[GeofenceEvent]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The crossings' numpy test of segments against the cross fences' boxes drops no crossing: the
    detector gives the same events with every segment made a line."""
    rules, devices, fleets, columns = world
    assert 0 < int(rules.cross_mask.sum()) <= crossings.MAX_BOXED  # the boxes are used above
    monkeypatch.setattr(crossings, "MAX_BOXED", -1)
    run = DryRun(rules, triage=False)
    chunks = _chunks(columns, 600_000)
    assert [e for chunk in chunks for e in run.feed_columns(chunk, devices, fleets)] == fix_by_fix[1]


def test_chunks_shrink_where_fences_overlap_deeply() -> None:
    """A chunk's fence lookup gives a (fix, fence) pair per fence covering a fix: 400 posted circles over
    one spot would make a 250k-fix chunk 1e8 pairs, so such a run reads smaller chunks."""

    def rules(count: int) -> RuleSet:
        fences = "".join(
            f"  - {{id: c{i}, tags: [t], circle: {{center: [13.4, 52.5], radius_m: {100 + i}}}}}\n"
            for i in range(count)
        )
        compiled = compile_text(
            f"fences:\n{fences}rules:\n  - {{id: in, on: enter, fence_tags: [t]}}\n", (), None
        )
        assert compiled.rules is not None, compiled.errors
        return compiled.rules

    deep = rules(400)
    assert deep.index.max_overlap >= 400
    assert chunk_target(deep) == MAX_CHUNK_PAIRS // deep.index.max_overlap < CHUNK_FIXES
    assert chunk_target(rules(1)) == CHUNK_FIXES
