"""The replay's read (`history.thinned_track`) on real PostGIS: whichever way a part of the window is read
(a probe per slice where it is dense, one pass where it is sparse), it keeps exactly the first stored fix
of each slice and the last of each part, counts every fix, leaves flagged fixes out, and refuses a window over
the limit; the expected fixes are worked out here from the fixes written."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import numpy as np
import pytest
from harness import now_ms, uid

from tracker.store import Database, history

DAY_MS = 86_400_000
SLICES = 100
_INSERT = """
INSERT INTO fixes (device_id, ts, geom, cell, flag)
VALUES ($1, to_timestamp($2 / 1000.0), ST_SetSRID(ST_MakePoint(13.0 + $3 * 1.5e-5, 52.0), 4326), 0, $4)
"""


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Database]:
    db = await Database.connect(database_url, min_size=1, max_size=4)
    yield db
    await db.close()


async def _write(db: Database, device: str, ts: list[int], flagged: frozenset[int] = frozenset()) -> None:
    """Fixes of `device` at `ts` (ms), a metre apart eastwards, those at `flagged` set aside by a filter."""
    await db.ensure_partitions({t // DAY_MS for t in ts})
    await db.pool.executemany(
        _INSERT,
        [(device, t, float(i), "jump" if t in flagged else None) for i, t in enumerate(ts)],
    )


def _firsts(ts: list[int], from_ms: int, to_ms: int, slices: int) -> list[int]:
    """The first of `ts` in each slice of the window, and the last: what the read must keep."""
    step = max((to_ms - from_ms) // slices, 1)
    inside = [t for t in ts if from_ms <= t < to_ms]
    kept = [
        t
        for i, t in enumerate(inside)
        if i == 0 or (t - from_ms) // step != (inside[i - 1] - from_ms) // step
    ]
    return sorted({*kept, inside[-1]})


@pytest.mark.parametrize("per_slice", [1, 5, 30], ids=["sparse", "in-between", "dense"])
async def test_each_slice_keeps_its_first_fix_however_dense(store: Database, per_slice: int) -> None:
    device = uid("thin")
    t0 = (now_ms() - 3_600_000) // 1000 * 1000
    window = 1000 * SLICES * 10  # slices of 10 s
    rng = np.random.default_rng(per_slice)
    # Fixes at random times, per_slice a slice on average: some slices empty, several fixes in others.
    ts = sorted({t0 + int(x) for x in rng.integers(0, window, per_slice * SLICES)})
    await _write(store, device, ts)
    found = await history.thinned_track(store, device, t0, t0 + window, SLICES, 1_000_000)
    assert found is not None
    trail, fixes = found
    assert fixes == len(ts)
    assert trail.ts.tolist() == _firsts(ts, t0, t0 + window, SLICES)
    assert np.allclose(trail.lon, 13.0 + np.searchsorted(ts, trail.ts) * 1.5e-5)
    assert np.isnan(trail.speed).all() and len(trail.heading) == len(trail)


async def test_a_long_window_read_in_halves_keeps_the_same_fixes(store: Database) -> None:
    device = uid("thin")
    t0 = (now_ms() - 3 * DAY_MS) // 1000 * 1000
    # Two days: a dense first hour (a fix a second), then a fix every ten minutes.
    ts = [t0 + s * 1000 for s in range(3600)] + [t0 + 3_600_000 + k * 600_000 for k in range(1, 282)]
    await _write(store, device, ts)
    to_ms = t0 + 2 * DAY_MS
    for slices in (50, 2000):
        found = await history.thinned_track(store, device, t0, to_ms, slices, 1_000_000)
        assert found is not None
        # The halves meet at a slice's start; each keeps its own last fix.
        cut = t0 + slices // 2 * ((to_ms - t0) // slices)
        first_half = _firsts(ts, t0, cut, slices // 2)
        assert found[0].ts.tolist() == sorted({*first_half, *_firsts(ts, t0, to_ms, slices)})
        assert found[1] == len(ts)


async def test_flagged_fixes_are_left_out_unless_asked_for_and_the_limit_holds(store: Database) -> None:
    device = uid("thin")
    t0 = (now_ms() - 3_600_000) // 1000 * 1000
    ts = [t0 + s * 1000 for s in range(2000)]
    flagged = frozenset(ts[::50])  # the first fix of every other 25 s slice
    await _write(store, device, ts, flagged)
    window = (t0, t0 + 2_000_000)
    found = await history.thinned_track(store, device, *window, 80, 1_000_000)
    assert found is not None
    assert found[0].ts.tolist() == [t for t in _firsts(ts, *window, 80) if t not in flagged]
    assert found[1] == 2000 - len(flagged)
    everything = await history.thinned_track(store, device, *window, 80, 1_000_000, include_flagged=True)
    assert everything is not None and everything[0].ts.tolist() == _firsts(ts, *window, 80)
    assert await history.thinned_track(store, device, *window, 80, 1999) is None
    empty = await history.thinned_track(store, device, t0 + 5_000_000, t0 + 6_000_000, 80, 10)
    assert empty is not None and len(empty[0]) == 0 and empty[1] == 0


async def test_a_window_over_the_limit_reads_no_more_flagged_fixes_than_the_limit(
    store: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A parked device whose fixes a filter flags (duplicate_position): the flagged fixes of a window over
    # the limit are read beside the count, and must stop there too, not be read whole into the server.
    device = uid("thin")
    t0 = (now_ms() - 3_600_000) // 1000 * 1000
    ts = [t0 + s * 1000 for s in range(2000)]
    await _write(store, device, ts, frozenset(ts))
    fetched: list[int] = []
    fetch = asyncpg.connection.Connection.fetch

    async def counted(self: asyncpg.Connection, query: str, *args: Any, **kwargs: Any) -> list[Any]:
        rows: list[Any] = await fetch(self, query, *args, **kwargs)
        if "flag IS NOT NULL" in query:
            fetched.append(len(rows))
        return rows

    monkeypatch.setattr(asyncpg.connection.Connection, "fetch", counted)
    assert await history.thinned_track(store, device, t0, t0 + 2_000_000, 80, 100) is None
    assert fetched and max(fetched) <= 101


async def test_slices_of_days_are_cut_in_utc_whatever_the_session_time_zone(database_url: str) -> None:
    """Slices of a day or more are whole days of an interval, which PostgreSQL adds in the session's time
    zone (23 or 25 hours across a DST change) while date_bin counts 24: a probe per slice must still cut
    at the window's UTC slices."""
    sep = "&" if "?" in database_url else "?"
    db = await Database.connect(f"{database_url}{sep}TimeZone=Europe%2FBerlin", min_size=1, max_size=4)
    try:
        device = uid("thin")
        t0 = (now_ms() // DAY_MS + 30) * DAY_MS  # ahead, where no retention drops a partition
        to_ms = t0 + 300 * DAY_MS  # 100 slices of 3 days, across both of the year's DST changes
        ts = [t0 + k * 6 * 3_600_000 - 1_800_000 for k in range(1, 1200)]  # half an hour before each 6 h
        await _write(db, device, ts)
        found = await history.thinned_track(db, device, t0, to_ms, SLICES, 1_000_000)
        assert found is not None
        cut = t0 + SLICES // 2 * ((to_ms - t0) // SLICES)
        want = sorted({*_firsts(ts, t0, cut, SLICES // 2), *_firsts(ts, t0, to_ms, SLICES)})
        assert found[0].ts.tolist() == want
    finally:
        await db.close()
