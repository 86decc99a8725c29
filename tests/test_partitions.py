"""Unit tests of the partition plan: daily for recent days, monthly for old backlogs, never overlapping."""

from __future__ import annotations

from datetime import UTC, date, datetime

from tracker.store.partitions import EPOCH, PartitionMap


def day(y: int, m: int, d: int) -> int:
    return (date(y, m, d) - EPOCH).days


TODAY = day(2026, 11, 26)


def test_recent_and_future_days_get_a_partition_each() -> None:
    plan = PartitionMap().plan({TODAY, TODAY + 1, TODAY - 30}, TODAY)
    assert [p.name for p in plan] == ["fixes_p20261027", "fixes_p20261126", "fixes_p20261127"]
    assert plan[1].start == datetime(2026, 11, 26, tzinfo=UTC)
    assert plan[1].end == datetime(2026, 11, 27, tzinfo=UTC)
    assert "PARTITION OF fixes FOR VALUES FROM ('2026-11-26T00:00:00+00:00')" in plan[1].ddl()


def test_an_old_backlog_gets_one_partition_a_month() -> None:
    m = PartitionMap()
    days = {day(2008, 10, d) for d in range(1, 32)} | {day(2008, 12, 31)}
    plan = m.plan(days, TODAY)
    assert [(p.name, p.start, p.end) for p in plan] == [
        ("fixes_m200810", datetime(2008, 10, 1, tzinfo=UTC), datetime(2008, 11, 1, tzinfo=UTC)),
        ("fixes_m200812", datetime(2008, 12, 1, tzinfo=UTC), datetime(2009, 1, 1, tzinfo=UTC)),
    ]
    assert m.covers(day(2008, 10, 15)) and not m.covers(day(2008, 11, 15))
    assert m.plan({day(2008, 10, 3)}, TODAY) == []


def test_an_old_day_in_a_month_that_has_daily_partitions_gets_a_daily_one() -> None:
    m = PartitionMap()
    m.add_name("fixes_p20261025")  # made when it was recent
    plan = m.plan({day(2026, 10, 2)}, TODAY)
    assert [p.name for p in plan] == ["fixes_p20261002"]


def test_a_month_partition_covers_its_later_recent_days() -> None:
    m = PartitionMap()
    assert [p.name for p in m.plan({day(2026, 10, 1)}, TODAY)] == ["fixes_m202610"]
    assert m.plan({day(2026, 10, 30)}, TODAY) == []  # recent, but already covered: no overlap


def test_names_from_the_catalog_are_understood_and_others_ignored() -> None:
    m = PartitionMap()
    for name in ["fixes_p20261126", "fixes_m200810", "fixes_stage", "fixes_p2026"]:
        m.add_name(name)
    assert m.daily == {TODAY} and m.monthly == {(2008, 10)}
