"""Unit tests of the live index: forward-only per device, with fleet and cell maps kept in step."""

from __future__ import annotations

import h3.api.basic_int as h3i

from tracker.index import LiveIndex, assign_cells
from tracker.model import Fix


def fixes(*items: tuple[str, str, int, float, float]) -> list[Fix]:
    out = [Fix(device, fleet, ts, lat, lon) for device, fleet, ts, lat, lon in items]
    assign_cells(out, 9)
    return out


def test_only_newer_fixes_move_a_device_and_each_moves_once_per_batch() -> None:
    index = LiveIndex()
    moved = index.advance(fixes(("a", "f", 10, 1.0, 1.0), ("a", "f", 30, 1.1, 1.0), ("a", "f", 20, 1.2, 1.0)))
    assert [(p.device, p.ts, p.lat) for p in moved] == [("a", 30, 1.1)]
    assert index.advance(fixes(("a", "f", 25, 5.0, 5.0))) == []  # late: stored elsewhere, not live
    assert index.get("a") is not None and index.get("a").ts == 30  # type: ignore[union-attr]


def test_fleet_and_cell_maps_follow_moves() -> None:
    index = LiveIndex()
    index.advance(fixes(("a", "f1", 1, 48.0, 11.0), ("b", "f2", 1, 48.0, 11.0)))
    here = h3i.latlng_to_cell(48.0, 11.0, 9)
    assert {p.device for p in index.in_cells([here])} == {"a", "b"}
    index.advance(fixes(("a", "f1", 2, 52.0, 13.0)))
    there = h3i.latlng_to_cell(52.0, 13.0, 9)
    assert [p.device for p in index.in_cells([here])] == ["b"]
    assert [p.device for p in index.in_cells([there])] == ["a"]
    assert [p.device for p in index.in_fleets(["f1"])] == ["a"]
    assert sorted(index.fleets()) == ["f1", "f2"]
    assert index.get("a").cell == format(there, "x")  # type: ignore[union-attr]


def test_load_seeds_without_moving_back() -> None:
    index = LiveIndex()
    (newer,) = index.advance(fixes(("a", "f", 50, 1.0, 1.0)))
    (older,) = LiveIndex().advance(fixes(("a", "f", 40, 2.0, 2.0)))
    index.load([(older, int(older.cell, 16))])
    assert index.get("a") == newer
    assert len(index) == 1
