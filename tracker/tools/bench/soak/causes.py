"""Why a soak sample was slow: what the server and its database did during it, beside what the load saw.

An ack p99 that drifts up over half an hour has a cause on one side or the other: the event loop ran
late (GC, a long batch), the commits got slower (a bigger table and indexes, a checkpoint's full-page
writes, autovacuum on the same two cores), or the server refused more (`retry` answers, by reason). Each
sample reads, at its end, the server's own counters from /metrics and PostgreSQL's statistics views,
and the row reports their growth over the sample:

- `retry_by_reason`: `tracker_submissions_busy` by reason (overloaded, inflight, queue_wait, ...);
- `commits` and `commit_ms_mean`: ingest transactions and their mean time (`tracker_ingest_commit_seconds`);
- `loop_late_100ms` / `loop_late_250ms`: 50 ms probes of the loop that ran that much late;
- `checkpoints`, `checkpoint_write_s`, `wal_mb`: the checkpointer's work (pg_stat_bgwriter, pg_stat_wal);
- `autovacuums` / `autoanalyzes` of the database's tables, and `fixes_mb`, the size of the fixes table
  with its indexes at the sample's end.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from tracker.tools.bench.vitals import scrape

_SAMPLE = re.compile(r"^(tracker_[a-z_]+)(?:\{([^}]*)\})? ([0-9.eE+-]+|NaN)$")

PG_STATS = """
SELECT
  (SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter) AS checkpoints,
  (SELECT checkpoint_write_time + checkpoint_sync_time FROM pg_stat_bgwriter) / 1000.0 AS checkpoint_s,
  (SELECT wal_bytes FROM pg_stat_wal)::float8 AS wal_bytes,
  (SELECT coalesce(sum(autovacuum_count), 0) FROM pg_stat_user_tables)::int AS autovacuums,
  (SELECT coalesce(sum(autoanalyze_count), 0) FROM pg_stat_user_tables)::int AS autoanalyzes,
  (SELECT coalesce(sum(pg_total_relation_size(relid)), 0) FROM pg_stat_user_tables
    WHERE relname LIKE 'fixes%')::float8 AS fixes_bytes
"""


@dataclass(frozen=True)
class Counters:
    """The cumulative counters at one instant; `server` keyed by sample name with its labels."""

    server: dict[str, float] = field(default_factory=dict)
    database: dict[str, float] = field(default_factory=dict)


async def read_counters(url: str, database_url: str) -> Counters:
    """The server's counters (scraped from `url`/metrics) and the database's (a coroutine). A side
    that cannot be read gives an empty dict."""
    text = await scrape(url)
    server = parse_samples(text) if text is not None else {}
    database: dict[str, float] = {}
    try:
        conn = await asyncpg.connect(database_url, timeout=10)
        try:
            row = await conn.fetchrow(PG_STATS)
        finally:
            await conn.close()
        database = {k: float(v) for k, v in dict(row or {}).items() if v is not None}
    except (OSError, asyncpg.PostgresError):
        pass
    return Counters(server, database)


def parse_samples(text: str) -> dict[str, float]:
    """The tracker_* samples of a Prometheus exposition, keyed `name{labels}` (or `name` unlabelled)."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match:
            name, labels, value = match.groups()
            found[f"{name}{{{labels}}}" if labels else name] = float(value)
    return found


def growth(before: Counters, after: Counters) -> dict[str, Any]:
    """What happened between two readings, for a sample's row."""
    s0, s1, d0, d1 = before.server, after.server, before.database, after.database

    def server(key: str) -> float:
        return s1.get(key, 0.0) - s0.get(key, 0.0)

    def database(key: str) -> float | None:
        return d1[key] - d0[key] if key in d1 and key in d0 else None

    busy = {}
    for key in s1:
        if key.startswith("tracker_submissions_busy_total{"):
            reason = key.split('"')[1]
            if n := int(server(key)):
                busy[reason] = n
    commits = server("tracker_ingest_commit_seconds_count")
    commit_s = server("tracker_ingest_commit_seconds_sum")
    probes = server("tracker_loop_lag_seconds_count")

    def late(le: str) -> int:
        return int(probes - server(f'tracker_loop_lag_seconds_bucket{{le="{le}"}}'))

    checkpoint_s, wal, fixes = database("checkpoint_s"), database("wal_bytes"), d1.get("fixes_bytes")
    return {
        "retry_by_reason": busy,
        "commits": int(commits),
        "commit_ms_mean": round(1000 * commit_s / commits, 2) if commits else None,
        "loop_late_100ms": late("0.1"),
        "loop_late_250ms": late("0.25"),
        "checkpoints": _int(database("checkpoints")),
        "checkpoint_write_s": None if checkpoint_s is None else round(checkpoint_s, 1),
        "wal_mb": None if wal is None else round(wal / 2**20, 1),
        "autovacuums": _int(database("autovacuums")),
        "autoanalyzes": _int(database("autoanalyzes")),
        "fixes_mb": None if fixes is None else round(fixes / 2**20, 1),
    }


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)
