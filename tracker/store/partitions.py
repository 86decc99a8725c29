"""Time partitions of the `fixes` table: which exist, and which to create for a batch.

Policy: one partition per UTC day (`fixes_pYYYYMMDD`) for the recent past and the days ahead, so that
retention drops a day at a time and queries over recent trails touch few, small tables. A fix older
than RECENT_DAYS whose month has no daily partition goes into one partition for that whole month
(`fixes_mYYYYMM`): a device replaying years of backlog, or a buggy clock, then adds at most one table a
month (at most ~320 since 2000) instead of one a day. Coverage is checked before either is created, so
ranges never overlap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

EPOCH = date(1970, 1, 1)
RECENT_DAYS = 31


def day_date(day: int) -> date:
    """The calendar date of `day` (days since the epoch, UTC)."""
    return EPOCH + timedelta(days=day)


def _month_key(d: date) -> tuple[int, int]:
    return d.year, d.month


@dataclass(frozen=True, slots=True)
class Partition:
    """One partition to create: its table name and its [start, end) range."""

    name: str
    start: datetime
    end: datetime

    def ddl(self) -> str:
        """The CREATE TABLE statement that attaches it to `fixes`."""
        return (
            f"CREATE TABLE IF NOT EXISTS {self.name} PARTITION OF fixes "
            f"FOR VALUES FROM ('{self.start.isoformat()}') TO ('{self.end.isoformat()}')"
        )


@dataclass
class PartitionMap:
    """The daily and monthly partitions known to exist."""

    daily: set[int] = field(default_factory=set)  # days since the epoch
    monthly: set[tuple[int, int]] = field(default_factory=set)  # (year, month)

    def add_name(self, name: str) -> None:
        """Record an existing partition by its table name; other names are ignored."""
        if name.startswith("fixes_p") and len(name) == 15:
            d = datetime.strptime(name[7:], "%Y%m%d").date()
            self.daily.add((d - EPOCH).days)
        elif name.startswith("fixes_m") and len(name) == 13:
            d = datetime.strptime(name[7:], "%Y%m").date()
            self.monthly.add(_month_key(d))

    def covers(self, day: int) -> bool:
        """True when a partition already holds `day`."""
        return day in self.daily or _month_key(day_date(day)) in self.monthly

    def expired(self, cutoff_day: int) -> list[str]:
        """Partitions whose whole range ends on or before `cutoff_day` (days since the epoch)."""
        cutoff = day_date(cutoff_day)
        names = [f"fixes_p{day_date(d):%Y%m%d}" for d in sorted(self.daily) if d < cutoff_day]
        for year, month in sorted(self.monthly):
            end = date(year + month // 12, month % 12 + 1, 1)
            if end <= cutoff:
                names.append(f"fixes_m{year:04d}{month:02d}")
        return names

    def forget(self, name: str) -> None:
        """Drop a partition from the map (it was dropped from the database)."""
        if name.startswith("fixes_p"):
            self.daily.discard((datetime.strptime(name[7:], "%Y%m%d").date() - EPOCH).days)
        elif name.startswith("fixes_m"):
            self.monthly.discard(_month_key(datetime.strptime(name[7:], "%Y%m").date()))

    def plan(self, days: set[int], today: int) -> list[Partition]:
        """The partitions to create so that every day of `days` is covered; records them as existing."""
        out: list[Partition] = []
        for day in sorted(days):
            if self.covers(day):
                continue
            d = day_date(day)
            month_has_days = any(_month_key(day_date(x)) == _month_key(d) for x in self.daily)
            if day >= today - RECENT_DAYS or month_has_days:
                start = datetime(d.year, d.month, d.day, tzinfo=UTC)
                out.append(Partition(f"fixes_p{d:%Y%m%d}", start, start + timedelta(days=1)))
                self.daily.add(day)
            else:
                start = datetime(d.year, d.month, 1, tzinfo=UTC)
                end = datetime(d.year + d.month // 12, d.month % 12 + 1, 1, tzinfo=UTC)
                out.append(Partition(f"fixes_m{d:%Y%m}", start, end))
                self.monthly.add(_month_key(d))
        return out
