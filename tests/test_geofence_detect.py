"""The pure geofence state machine and the spatial index, one rule of the contract at a time."""

from __future__ import annotations

import json

import numpy as np
import pytest
import shapely
from harness import REALDATA
from shapely.geometry import shape

from tracker.geo import distances_from_m
from tracker.geofence.detect import detect
from tracker.geofence.grid import FenceIndex
from tracker.geofence.ruleset import PRESENCE, RuleSet
from tracker.model import Fence, FenceState, Fix, Head, Rule, StateKey

SQUARE = Fence("sq", None, ("depot",), shapely.box(10.0, 50.0, 10.01, 50.01))
HOLED = Fence(
    "ring",
    None,
    (),
    shapely.Polygon(
        [(11.0, 50.0), (11.02, 50.0), (11.02, 50.02), (11.0, 50.02)],
        [[(11.005, 50.005), (11.015, 50.005), (11.015, 50.015), (11.005, 50.015)]],
    ),
)
CIRCLE = Fence("hub", None, (), center_lonlat=(12.0, 50.0), radius_m=100.0)
IN = (10.005, 50.005)
OUT = (10.02, 50.005)


def fix(
    ts: int, at: tuple[float, float], speed: float | None = None, device: str = "d1", fleet: str = "f"
) -> Fix:
    return Fix(device, fleet, ts, at[1], at[0], speed=speed)


class Machine:
    """Feeds batches through `detect` and applies the result, as the ingest loop does after COMMIT."""

    def __init__(self, fences: list[Fence], rules: list[Rule]) -> None:
        self.rules = RuleSet(fences, rules)
        self.states: dict[str, dict[StateKey, FenceState]] = {}
        self.heads: dict[str, Head] = {}

    def feed(self, *fixes: Fix) -> list[tuple[str, str, str, int]]:
        d = detect(self.rules, self.states, self.heads, list(fixes))
        d.apply_to(self.states)
        for device, head in d.heads.items():
            self.heads[device] = head
        return [(e.type, e.rule, e.fence, e.ts) for e in d.events]


def rule(on: str, fences: tuple[str, ...] = ("sq",), **kw: object) -> Rule:
    return Rule(f"r-{on}", on, fences, **kw)  # type: ignore[arg-type]


def test_enter_and_exit_including_first_fix_inside() -> None:
    m = Machine([SQUARE], [rule("enter"), rule("exit")])
    assert m.feed(fix(1, IN)) == [("enter", "r-enter", "sq", 1)]
    assert m.feed(fix(2, IN)) == []
    assert m.feed(fix(3, OUT)) == [("exit", "r-exit", "sq", 3)]
    assert m.feed(fix(4, OUT)) == []
    assert m.feed(fix(5, IN), fix(6, OUT)) == [("enter", "r-enter", "sq", 5), ("exit", "r-exit", "sq", 6)]


def test_first_fix_outside_fires_nothing() -> None:
    m = Machine([SQUARE], [rule("enter"), rule("exit")])
    assert m.feed(fix(1, OUT)) == []
    assert m.feed(fix(2, IN)) == [("enter", "r-enter", "sq", 2)]


def test_boundary_counts_as_inside() -> None:
    m = Machine([SQUARE], [rule("enter")])
    assert m.feed(fix(1, (10.01, 50.005))) == [("enter", "r-enter", "sq", 1)]  # on the east edge
    corner = Machine([SQUARE], [rule("enter")])
    assert corner.feed(fix(1, (10.0, 50.0))) == [("enter", "r-enter", "sq", 1)]  # on a vertex


def test_hole_is_outside() -> None:
    m = Machine([HOLED], [rule("enter", ("ring",)), rule("exit", ("ring",))])
    assert m.feed(fix(1, (11.001, 50.001))) == [("enter", "r-enter", "ring", 1)]
    assert m.feed(fix(2, (11.01, 50.01))) == [("exit", "r-exit", "ring", 2)]  # in the hole
    assert m.feed(fix(3, (11.005, 50.01))) == [("enter", "r-enter", "ring", 3)]  # on the hole's edge


def test_circle_by_geodesic_distance() -> None:
    m = Machine([CIRCLE], [rule("enter", ("hub",)), rule("exit", ("hub",))])
    # 0.0013° of longitude at 50°N is about 93.5 m; 0.0014° about 100.6 m.
    assert distances_from_m(50.0, 12.0, np.array([50.0]), np.array([12.0013]))[0] < 100
    assert m.feed(fix(1, (12.0013, 50.0))) == [("enter", "r-enter", "hub", 1)]
    assert m.feed(fix(2, (12.0014, 50.0))) == [("exit", "r-exit", "hub", 2)]


def test_dwell_once_per_visit_across_batches() -> None:
    m = Machine([SQUARE], [rule("dwell", dwell_s=60)])
    assert m.feed(fix(0, OUT), fix(1_000, IN)) == []
    assert m.feed(fix(30_000, IN)) == []
    assert m.feed(fix(61_000, IN)) == [("dwell", "r-dwell", "sq", 61_000)]
    assert m.feed(fix(200_000, IN)) == []  # once per visit
    assert m.feed(fix(201_000, OUT), fix(202_000, IN)) == []
    assert m.feed(fix(262_000, IN)) == [("dwell", "r-dwell", "sq", 262_000)]  # a new visit


def test_speeding_once_per_visit_and_only_inside() -> None:
    m = Machine([SQUARE], [rule("speeding", max_speed_kmh=36)])  # 10 m/s
    assert m.feed(fix(1, OUT, speed=30)) == []
    assert m.feed(fix(2, IN, speed=10)) == []  # not above
    assert m.feed(fix(3, IN, speed=None)) == []
    assert m.feed(fix(4, IN, speed=10.5)) == [("speeding", "r-speeding", "sq", 4)]
    assert m.feed(fix(5, IN, speed=20)) == []
    assert m.feed(fix(6, OUT), fix(7, IN, speed=11)) == [("speeding", "r-speeding", "sq", 7)]


def test_cross_between_sparse_fixes() -> None:
    m = Machine([SQUARE], [rule("cross"), rule("enter")])
    west, east = (9.99, 50.005), (10.02, 50.005)
    assert m.feed(fix(1, west)) == []
    assert m.feed(fix(2, east)) == [("cross", "r-cross", "sq", 2)]  # segment from the head
    assert m.feed(fix(3, (10.02, 50.02)), fix(4, (9.99, 50.02))) == []  # passes north of it
    assert m.feed(fix(5, west), fix(6, east)) == [("cross", "r-cross", "sq", 6)]  # within a batch
    # An end inside is an enter, not a crossing.
    assert m.feed(fix(7, IN), fix(8, west)) == [("enter", "r-enter", "sq", 7)]


def test_cross_a_circle() -> None:
    m = Machine([CIRCLE], [rule("cross", ("hub",))])
    assert m.feed(fix(1, (11.99, 50.0005)), fix(2, (12.01, 50.0005))) == [
        ("cross", "r-cross", "hub", 2)
    ]  # 56 m
    assert m.feed(fix(3, (12.01, 50.0010)), fix(4, (11.99, 50.0010))) == []  # 111 m from the centre


def test_confirm_fixes_debounces_and_reports_the_nth() -> None:
    m = Machine([SQUARE], [rule("enter", confirm_fixes=3), rule("exit", confirm_fixes=3)])
    assert m.feed(fix(1, IN), fix(2, IN)) == []
    assert m.feed(fix(3, OUT)) == []  # the run is broken
    assert m.feed(fix(4, IN), fix(5, IN)) == []
    assert m.feed(fix(6, IN)) == [("enter", "r-enter", "sq", 6)]
    assert m.feed(fix(7, OUT), fix(8, OUT), fix(9, IN)) == []  # a two-fix excursion is ignored
    assert m.feed(fix(10, OUT), fix(11, OUT), fix(12, OUT)) == [("exit", "r-exit", "sq", 12)]


def test_fleets_filter() -> None:
    m = Machine([SQUARE], [rule("enter", fleets=frozenset({"vans"}))])
    assert m.feed(fix(1, IN, fleet="bikes")) == []
    assert m.feed(fix(1, IN, device="d2", fleet="vans")) == [("enter", "r-enter", "sq", 1)]


def test_old_and_repeated_fixes_fire_nothing() -> None:
    m = Machine([SQUARE], [rule("enter"), rule("exit")])
    assert m.feed(fix(10, OUT)) == []
    assert m.feed(fix(5, IN)) == []  # older than the newest processed
    assert m.feed(fix(10, IN)) == []  # same time as the newest
    # Within a batch fixes are taken in time order: 11 (outside), then 12 (inside).
    assert m.feed(fix(12, IN), fix(11, OUT)) == [("enter", "r-enter", "sq", 12)]


def test_devices_are_independent_within_a_batch() -> None:
    m = Machine([SQUARE], [rule("enter")])
    got = m.feed(fix(1, IN, device="a"), fix(1, OUT, device="b"), fix(2, IN, device="b"))
    assert sorted(got) == [("enter", "r-enter", "sq", 1), ("enter", "r-enter", "sq", 2)]


def test_presence_state_knows_who_is_inside() -> None:
    m = Machine([SQUARE], [])
    m.feed(fix(7, IN))
    assert m.states["d1"][(PRESENCE, "sq")] == FenceState(True, 7)
    m.feed(fix(8, OUT))
    assert "d1" not in m.states


def test_detect_does_not_mutate_its_inputs() -> None:
    m = Machine([SQUARE], [rule("enter")])
    m.feed(fix(1, OUT))
    before = (dict(m.heads), {d: dict(s) for d, s in m.states.items()})
    detect(m.rules, m.states, m.heads, [fix(2, IN)])
    assert (m.heads, m.states) == before


@pytest.mark.parametrize("name", ["munich_stadtbezirke", "zurich_stadtkreise"])
def test_index_agrees_with_shapely_on_real_districts(name: str) -> None:
    features = json.loads((REALDATA / "geofences" / f"{name}.geojson").read_text())["features"]
    fences = [
        Fence(f"{name}:{i}", None, (), shapely.make_valid(shape(f["geometry"])))
        for i, f in enumerate(features)
    ]
    fences.append(
        Fence("c", None, (), center_lonlat=tuple(fences[0].geometry.centroid.coords[0]), radius_m=700.0)
    )
    index = FenceIndex(fences)
    xmin, ymin, xmax, ymax = shapely.union_all([f.geometry for f in fences[:-1]]).bounds
    rng = np.random.default_rng(7)
    lon = rng.uniform(xmin, xmax, 50_000)
    lat = rng.uniform(ymin, ymax, 50_000)
    # Points on vertices of the districts: the boundary is inside.
    verts = np.concatenate([shapely.get_coordinates(f.geometry)[::50] for f in fences[:-1]])
    lon, lat = np.concatenate([lon, verts[:, 0]]), np.concatenate([lat, verts[:, 1]])
    point, fence = index.inside(lon, lat)
    got = set(zip(point.tolist(), fence.tolist(), strict=True))
    pts = shapely.points(lon, lat)
    expected = {
        (p, i)
        for i, f in enumerate(fences[:-1])
        for p in np.flatnonzero(shapely.covers(f.geometry, pts)).tolist()
    }
    centre = fences[-1].center_lonlat
    assert centre is not None
    near = np.flatnonzero(distances_from_m(centre[1], centre[0], lat, lon) <= 700.0)
    expected |= {(p, len(fences) - 1) for p in near.tolist()}
    assert len(expected) > 20_000
    assert got == expected
