"""Trip evaluation, pure: status changes in fix order, late fixes and GPS jumps, the smoothed speed, the
vectorised common case against the per-fix walk, and the ETA accuracy on the simulated shifts."""

from __future__ import annotations

import math
import random

import pytest

from tracker.model import Fix, Head
from tracker.tools.bench.trips.accuracy import measure
from tracker.trips import eta
from tracker.trips.book import TripBook
from tracker.trips.detect import evaluate
from tracker.trips.model import Destination, Trip

M_PER_DEG_LAT = 111_277.0  # at 52.52 N
DEST = Destination(52.52, 13.40, 60.0)


def trip(trip_id: str = "1", device: str = "dev", **more: object) -> Trip:
    fields: dict[str, object] = {"approach_m": 510.0, "ref": None, "notify": (), "created_ts": 0}
    fields.update(more)
    fields.setdefault("saved_ts", fields.get("progress_ts"))  # as read from the store
    return Trip(trip_id, device, "fleet", "started", DEST, expires_ts=10**13, **fields)  # type: ignore[arg-type]


def south(metres: float, ts: int, device: str = "dev") -> Fix:
    return Fix(device, "fleet", ts, DEST.lat - metres / M_PER_DEG_LAT, 13.40)  # type: ignore[operator]


def run(
    trips: list[Trip], fixes: list[Fix], head: Head | None = None, speed: eta.Speed | None = None
) -> tuple[dict[str, Trip], list[tuple[str, str, int]], eta.Speed | None]:
    """Evaluate `fixes` of one device batch by batch (one fix each), as the ingest path would."""
    book = TripBook()
    for t in trips:
        book.put(t)
    if speed is not None:
        book.speeds["dev"] = speed
    events: list[tuple[str, str, int]] = []
    for f in fixes:
        if "dev" not in book.active:
            break
        out = evaluate(
            {"dev": dict(book.active["dev"])},
            dict(book.speeds),
            {"dev": [f]},
            {"dev": head} if head else {},
            lambda _: None,
            detour=1.3,
            progress_ms=30_000,
        )
        book.apply(out)
        for t in out.trips.values():
            if t.status not in ("started", "approaching"):
                book.remove(t.id)
        events += [(e.trip, e.status, e.ts) for e in out.events]
        head = Head(f.ts, f.lat, f.lon)
    return {t.id: t for ts in book.active.values() for t in ts.values()}, events, book.speeds.get("dev")


def test_status_changes_fire_once_in_fix_order() -> None:
    fixes = [south(2000 - 50 * k, 1_000_000 + 5000 * k) for k in range(41)]  # 10 m/s, to 0 m
    left, events, _ = run([trip()], fixes)
    near = next(f.ts for k, f in enumerate(fixes) if 2000 - 50 * k <= 510)
    inside = next(f.ts for k, f in enumerate(fixes) if 2000 - 50 * k <= 60)
    assert events == [("1", "approaching", near), ("1", "arrived", inside)]
    assert left == {}  # arrived: no longer evaluated


def test_one_fix_inside_fires_approaching_then_arrived() -> None:
    _, events, _ = run([trip()], [south(3000, 1000), south(0, 2_000_000)])
    assert [e[1] for e in events] == ["approaching", "arrived"] and {e[2] for e in events} == {2_000_000}


def test_a_gps_jump_and_the_fix_after_it_move_nothing() -> None:
    fixes = [south(5000, 0), south(0, 5000), south(4950, 10_000), south(4900, 15_000)]
    left, events, speed = run([trip()], fixes)
    assert events == []  # the jump into the destination did not arrive
    assert left["1"].progress_ts == 15_000 and left["1"].remaining_m == pytest.approx(4900, abs=1)
    assert speed is not None and speed.moving_s == pytest.approx(5.0)  # only 10 -> 15 s counts


def test_eta_is_null_until_the_speed_is_known_then_follows_it() -> None:
    fixes = [south(3000 - 10 * k, 1000 * k) for k in range(60)]  # 10 m/s, a fix a second
    book_trip = trip()
    left, _, speed = run([book_trip], fixes[:20])
    assert left["1"].eta_ts is None and speed is not None and speed.mps is not None  # 19 s of movement
    left, _, speed = run([book_trip], fixes)
    assert speed is not None and speed.mps == pytest.approx(10.0, rel=1e-3)
    last = fixes[-1]
    to_go = 3000 - 10 * 59 - 60
    assert left["1"].eta_ts == pytest.approx(last.ts + to_go * 1.3 / 10 * 1000, abs=200)


def test_one_noisy_fix_moves_the_speed_a_little() -> None:
    steady = eta.Speed(10.0, 600.0)
    after = eta.advance(steady, 5.0, 300.0)  # 60 m/s for one segment: plausible, but noise
    assert 10.0 < after.mps <= 10.0 + (20.0 - 10.0) * (1 - math.exp(-5 / eta.TAU_S)) + 1e-9  # type: ignore[operator]
    assert eta.advance(steady, 30.0, 3.0) == steady  # standing: not movement
    assert eta.advance(steady, 600.0, 6000.0) == steady  # a gap


def test_the_vectorised_case_agrees_with_the_per_fix_walk() -> None:
    """The same fixes, once one per batch (the vectorised case) and once with a second trip on the
    device (the per-fix walk): the first trip ends the same, to the metre and the millisecond."""
    rnd = random.Random(7)
    fixes = []
    metres, ts = 4000.0, 0
    for _ in range(300):
        metres -= rnd.uniform(-5, 30)
        ts += rnd.choice([1000, 2000, 5000, 30_000])
        fixes.append(south(max(metres, 100), ts))
    alone, events_alone, speed_alone = run([trip()], fixes)
    pair, events_pair, speed_pair = run([trip(), trip("2", approach_m=10.0)], fixes)
    for name in ("status", "eta_ts", "remaining_m", "progress_ts", "approaching_ts"):
        assert getattr(alone["1"], name) == pytest.approx(getattr(pair["1"], name)), name
    assert events_alone == [e for e in events_pair if e[0] == "1"]
    assert speed_alone == speed_pair


def test_eta_accuracy_on_the_simulated_shifts() -> None:
    """The project's simulated shifts (tracker bench trips reports the same for more seeds): 5 minutes
    into a leg, the ETA is within 20 % of the leg's duration for most legs."""
    report = measure(seed=1, couriers=30, vans=15)
    print(report)
    assert report["measured"] >= 20
    assert report["of_trip_duration"]["median"] <= 0.20
    assert report["of_time_to_go"]["median"] <= 0.35


def test_the_arrays_and_the_scalars_give_the_same_results() -> None:
    """`batch` takes a few fixes one by one and many as arrays: both give the same trips and speeds."""
    from tracker.trips import batch
    from tracker.trips.changes import TripDetection

    rnd = random.Random(3)
    n = batch.VECTOR_MIN * 2
    trips = [
        trip(
            str(i), f"d{i}", progress_ts=rnd.choice([None, 0, 50_000]), approach_m=rnd.choice([100.0, 5000.0])
        )
        for i in range(n)
    ]
    heads = {f"d{i}": Head(55_000, DEST.lat - rnd.uniform(0, 0.05), 13.40) for i in range(n)}  # type: ignore[operator]
    heads.pop("d0")
    speeds = {f"d{i}": eta.Speed(rnd.uniform(2, 15), rnd.choice([10.0, 100.0])) for i in range(0, n, 2)}
    fixes = [
        Fix(
            f"d{i}",
            "fleet",
            60_000,
            heads[f"d{i}"].lat + rnd.choice([0.0001, 0.0003, 0.01]),
            13.40,
            accuracy=5.0,
        )
        if f"d{i}" in heads
        else south(10, 60_000, f"d{i}")  # d0: no head, inside at once
        for i in range(n)
    ]
    arrays, scalars = TripDetection(), TripDetection()
    batch.evaluate_simple(trips, fixes, heads, speeds, detour=1.3, progress_ms=30_000, out=arrays)
    batch._one_by_one(trips, fixes, heads, speeds, detour=1.3, progress_ms=30_000, out=scalars)
    assert (
        arrays.writes == scalars.writes and arrays.trips == scalars.trips and arrays.before == scalars.before
    )
    assert [(e.trip, e.status, e.ts) for e in arrays.events] == [
        (e.trip, e.status, e.ts) for e in scalars.events
    ]
    assert arrays.speeds.keys() == scalars.speeds.keys()
    for device, speed in arrays.speeds.items():
        assert (
            speed.mps == pytest.approx(scalars.speeds[device].mps)
            and speed.moving_s == scalars.speeds[device].moving_s
        )
    assert len(arrays.progress) == len(scalars.progress) > 0
    for a, s in zip(arrays.progress, scalars.progress, strict=True):
        assert a[0] is s[0] and a[1:4] == pytest.approx(s[1:4]) and (a[4] or 0) == pytest.approx(s[4] or 0)
    assert {e.status for e in arrays.events} >= {"approaching"} and any(
        t.status == "arrived" for t in arrays.trips.values()
    )


@pytest.mark.parametrize("trips", [1, 2])  # one trip takes the whole-batch path, two the per-fix walk
def test_progress_is_stored_every_progress_interval_while_fixes_come_faster(trips: int) -> None:
    """Each fix moves the in-memory progress; a progress write still comes due every `progress_ms`
    after the last one stored, so other processes and a restart read an ETA at most that old."""
    book = TripBook()
    for n in range(trips):
        dest = Destination(52.6 + n, 13.4, 50.0)
        book.put(Trip(str(n), "d", "f", "started", dest, 200.0, None, (), 0, 10**12))
    heads = {"d": Head(0, 52.0, 13.4)}
    writes = 0
    for i in range(1, 301):  # one fix a second for 5 minutes, 10 m/s north: no status change
        f = Fix("d", "f", i * 1000, 52.0 + i * 10 / 111_320, 13.4)
        out = evaluate(
            book.active, book.speeds, {"d": [f]}, heads, lambda _: None, detour=1.3, progress_ms=30_000
        )
        writes += len(out.writes)
        book.apply(out)
        heads["d"] = Head(f.ts, f.lat, f.lon)
    assert writes == 10 * trips  # the first fix, then every 30 s
