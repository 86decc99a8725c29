"""The same queries timed in this process, to say where an HTTP request's time goes: the store function
the route calls (SQL plus its row conversion), its bare SQL through asyncpg, and the trail route's
steps one by one; the server's start-up read (`latest_positions`) on its own.

Policy: the bare SQL is captured from the store function (a connection that raises with the statement
it is sent), so it is the route's SQL, not a copy. A query whose HTTP p95 is over SLOW_MS gets
`EXPLAIN (ANALYZE, BUFFERS)` in the report.
"""

from __future__ import annotations

import contextlib
import re
import statistics
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import asyncpg
import numpy as np

from tracker.api.responses import JSONResponse
from tracker.auth import Authenticator
from tracker.geo import path_length_m
from tracker.index import LiveIndex
from tracker.model import Position
from tracker.store import accounts
from tracker.store.database import Database
from tracker.store.fixes import latest_positions
from tracker.tools.bench.history.dataset import FLEETS, H3_RESOLUTION, SEED, Plan
from tracker.tools.bench.history.queries import NEARBY_RADIUS_M, Kind, Sample, StoreCall, latency_summary
from tracker.tools.bench.report import BenchError, progress
from tracker.trail import Trail, to_geojson

SLOW_MS = 50.0  # above this HTTP p95, a query's plan goes into the report
LATEST_RUNS = 3


class _Captured(Exception):
    """Raised by the capturing connection with the statement a store function sent."""

    def __init__(self, sql: str, args: tuple[Any, ...]) -> None:
        super().__init__(sql)
        self.sql = sql
        self.args = args


class _CapturingConnection:
    async def fetch(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        raise _Captured(sql, args)

    fetchrow = fetch


class _CapturingPool:
    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[_CapturingConnection]:
        yield _CapturingConnection()


async def _capture(store: StoreCall, sample: Sample) -> tuple[str, tuple[Any, ...]]:
    """The SQL and arguments the store function sends for `sample`, without running it."""
    try:
        await store(Database(cast(asyncpg.Pool, _CapturingPool())), sample)
    except _Captured as sent:
        return sent.sql, sent.args
    raise BenchError("the store function sent no query")


_WKB = re.compile(r"'([0-9A-F]{200,})'")


async def _explain(conn: asyncpg.Connection, sql: str, args: Sequence[Any]) -> list[str]:
    """The plan's lines, a district's WKB literal (thousands of hex digits) shortened to its size."""
    rows = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + sql, *args)
    return [_WKB.sub(lambda m: f"'<WKB, {len(m[1]) // 2} bytes>'", str(r[0])) for r in rows]


@dataclass
class _Timer:
    laps: dict[str, list[float]] = field(default_factory=dict)

    @contextlib.contextmanager
    def lap(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        yield
        self.laps.setdefault(name, []).append((time.perf_counter() - t0) * 1000)


async def inprocess_series(
    db_url: str,
    kinds: Sequence[Kind],
    results: dict[str, dict[str, Any]],
    plan: Plan,
    token: str,
) -> None:
    """Add, per query, the store function's and the bare SQL's latency (and plans, and the trail's steps)."""
    rng = np.random.default_rng(SEED + 2)
    n, warmup = plan.settings.requests, plan.settings.warmup
    db = await Database.connect(db_url, min_size=1, max_size=1)
    try:
        for kind in kinds:
            result = results[kind.name]
            if kind.store is None:
                result["in_process"] = await _nearby_in_process(db, kind, plan, rng)
                continue
            store = kind.store
            timer = _Timer()
            for i in range(warmup + n):
                sample = kind.draw(rng)
                t0 = time.perf_counter()
                await store(db, sample)
                if i >= warmup:
                    timer.laps.setdefault("store", []).append((time.perf_counter() - t0) * 1000)
            for i in range(warmup + n):
                sample = kind.draw(rng)
                sql, args = await _capture(store, sample)
                async with db.pool.acquire() as conn:
                    t0 = time.perf_counter()
                    await conn.fetch(sql, *args)
                    if i >= warmup:
                        timer.laps.setdefault("sql", []).append((time.perf_counter() - t0) * 1000)
            result["store_function"] = latency_summary(timer.laps["store"])
            result["sql_only"] = latency_summary(timer.laps["sql"])
            progress(
                f"{kind.name} in-process: store p50 {result['store_function']['p50_ms']:.1f} ms, "
                f"SQL p50 {result['sql_only']['p50_ms']:.1f} ms"
            )
            if result["http"]["p95_ms"] > SLOW_MS:
                sql, args = await _capture(store, kind.draw(rng))
                async with db.pool.acquire() as conn:
                    result["explain_analyze"] = await _explain(conn, sql, args)
            if kind.name == "trail_24h":
                result["breakdown"] = await _trail_steps(db, kind, plan, rng, token, result["http"])
    finally:
        await db.close()


async def _trail_steps(
    db: Database, kind: Kind, plan: Plan, rng: np.random.Generator, token: str, http: dict[str, Any]
) -> dict[str, Any]:
    """The trail route's steps, timed one by one in this process on the same random devices.

    The steps are the route's: token and device look-ups, the SQL (its row of arrays decoded by asyncpg),
    Trail.from_columns, the geodesic length, the GeoJSON dict, orjson encoding. The server runs the last
    three in a worker thread.
    """
    auth = Authenticator(db, None)
    timer = _Timer()
    for i in range(plan.settings.warmup + plan.settings.requests):
        if i == plan.settings.warmup:
            timer.laps.clear()
        sample = kind.draw(rng)
        with timer.lap("token_and_device_lookups"):
            await auth.viewer(token)
            await accounts.get_device(db, sample.device)
        assert kind.store is not None
        sql, args = await _capture(kind.store, sample)
        async with db.pool.acquire() as conn:
            with timer.lap("sql_fetch"):
                row = await conn.fetchrow(sql, *args)
        assert row is not None
        with timer.lap("numpy_columns"):
            track = Trail.from_columns(row[1], row[2], row[3], row[4], row[5])
        with timer.lap("geodesic_length"):
            distance = path_length_m(track.lat, track.lon)
        with timer.lap("geojson_dict"):
            feature = to_geojson(sample.device, sample.from_ms, sample.to_ms, track, distance)
        with timer.lap("json_encode"):
            body = JSONResponse(feature, media_type="application/geo+json").body
    steps = {name: latency_summary(values) for name, values in timer.laps.items()}
    medians = sum(statistics.median(v) for v in timer.laps.values())
    return {
        "steps": steps,
        "sum_of_step_p50_ms": round(medians, 3),
        "http_p50_ms": http["p50_ms"],
        "http_minus_steps_p50_ms": round(http["p50_ms"] - medians, 3),
        "body_bytes_last": len(body),
        "note": "http_minus_steps is what the HTTP round trip, Starlette, the worker-thread hop and the "
        "client add (on 2 cores shared by client, server and PostgreSQL)",
    }


async def _nearby_in_process(
    db: Database, kind: Kind, plan: Plan, rng: np.random.Generator
) -> dict[str, Any]:
    """LiveIndex.nearby on an index loaded as the server loads it: the route's work minus HTTP/JSON."""
    index = LiveIndex(H3_RESOLUTION)
    index.load(await latest_positions(db))
    fleets = frozenset(FLEETS)
    times = []
    for i in range(plan.settings.warmup + plan.settings.requests):
        s = kind.draw(rng)
        t0 = time.perf_counter()
        index.nearby(s.lat, s.lon, NEARBY_RADIUS_M, fleets, 100)
        if i >= plan.settings.warmup:
            times.append((time.perf_counter() - t0) * 1000)
    return {"live_index_devices": len(index), "live_index_nearby": latency_summary(times)}


async def startup_parts(db_url: str) -> dict[str, Any]:
    """`latest_positions` (the server's start-up read) timed on its own, its plan, and the index load."""
    db = await Database.connect(db_url, min_size=1, max_size=1)
    try:
        runs = []
        rows: list[tuple[Position, int]] = []
        for _ in range(LATEST_RUNS):
            t0 = time.perf_counter()
            rows = await latest_positions(db)
            runs.append(round(time.perf_counter() - t0, 6))
        t0 = time.perf_counter()
        LiveIndex(H3_RESOLUTION).load(rows)
        index_s = time.perf_counter() - t0
        sql, args = await _capture(lambda d, _: latest_positions(d), Sample())
        async with db.pool.acquire() as conn:
            plan = await _explain(conn, sql, args)
    finally:
        await db.close()
    progress(f"latest_positions: {len(rows)} rows in {runs} s")
    return {
        "latest_fixes_rows": len(rows),
        "latest_fixes_s": runs,
        "live_index_load_s": round(index_s, 3),
        "latest_fixes_explain": plan,
    }
