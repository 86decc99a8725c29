"""Durable webhook delivery from the `webhook_outbox` table: at least once, in event order per URL.

Rows carry a geofence event or a trip event (`trip_event_id`; both kinds share one id sequence, so one
order covers them). Rows are written in the same transaction as the events that caused them; this worker
claims due rows a batch at a time with `FOR UPDATE SKIP LOCKED`, leasing them by moving `next_at`
forward, so several processes share one outbox and a crash mid-POST only delays a row until its lease
ends. The lease value is also a fencing token: a worker records an outcome only while the row still
carries its lease.

Each claimed URL gets its rows sequentially, by event id; different URLs are POSTed concurrently. A 2xx
answer delivers the row; anything else (other status, redirect, timeout, refused connection) counts an
attempt and retries after an exponential, jittered backoff, until the row is 'dead'. When a row fails,
the later rows of its URL in the same batch wait until its retry, so a flapping receiver still sees
events in order. Receivers should dedupe on `X-Tracker-Delivery` (a crash may repeat a POST).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import random
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

import httpx
import orjson

from tracker.metrics import Metrics
from tracker.model import GeofenceEvent
from tracker.store import Database
from tracker.trips.model import TripEvent

log = logging.getLogger("tracker.webhooks")

USER_AGENT = "tracker-webhooks"
MAX_IDLE_S = 30.0  # the longest sleep without looking: notices rows that another process inserted
_LEASE_MARGIN_S = 2.0  # time kept at the end of a lease for recording an outcome
_ERROR_MAX = 200  # characters of `last_error`

# Claim: due rows, oldest event first, skipping rows another worker is claiming right now. The CTE is
# MATERIALIZED so the LIMIT holds: as an `IN (subquery)` the planner may rescan it and claim every due row.
# The outer conditions are checked again after the row lock, so a row can never be claimed twice.
_CLAIM_SQL = """
WITH due AS MATERIALIZED (
    SELECT id, event_id, trip_event_id FROM webhook_outbox
    WHERE state = 'pending' AND next_at <= now()
    ORDER BY coalesce(event_id, trip_event_id), id
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE webhook_outbox AS o
SET next_at = now() + make_interval(secs => $2)
FROM due LEFT JOIN events AS e ON e.id = due.event_id LEFT JOIN trip_events AS t ON t.id = due.trip_event_id
WHERE o.id = due.id AND o.state = 'pending' AND o.next_at <= now()
RETURNING o.id, o.url, o.attempts, o.next_at AS lease,
    e.id AS event_id, e.type, e.rule_id, e.fence_id, e.device_id, e.fleet, e.ts, e.lat, e.lon,
    e.other_device,
    t.id AS trip_event_id, t.trip_id, t.device_id AS trip_device, t.fleet AS trip_fleet, t.status,
    t.ts AS trip_ts, t.eta_ts, t.remaining_m, t.ref
"""

_DELIVERED_SQL = """
UPDATE webhook_outbox SET state = 'delivered', delivered = now(), attempts = attempts + 1
WHERE id = $1 AND state = 'pending' AND next_at = $2
"""

_FAILED_SQL = """
UPDATE webhook_outbox
SET attempts = attempts + 1, last_error = $3,
    state = CASE WHEN attempts + 1 >= $4 THEN 'dead' ELSE 'pending' END,
    next_at = CASE WHEN attempts + 1 >= $4 THEN next_at ELSE now() + make_interval(secs => $5) END
WHERE id = $1 AND state = 'pending' AND next_at = $2
RETURNING state, next_at
"""

# Rows not POSTed this round: due again at $3 (the failed row's retry) or now (NULL).
_RELEASE_SQL = """
UPDATE webhook_outbox SET next_at = coalesce($3, now())
WHERE id = ANY($1::bigint[]) AND state = 'pending' AND next_at = $2
"""

_IDLE_SQL = """
SELECT count(*), extract(epoch FROM min(next_at) - now())::float8
FROM webhook_outbox WHERE state = 'pending'
"""


@dataclass(slots=True, frozen=True)
class _Row:
    """One claimed outbox row with its event."""

    id: int
    url: str
    attempts: int  # before this delivery
    lease: datetime  # the row's next_at while we hold it
    event: GeofenceEvent | TripEvent


@dataclass(slots=True, frozen=True)
class _Outcome:
    ok: bool
    error: str | None = None


class WebhookWorker:
    """Delivers the outbox's due rows until cancelled; `wake()` says new rows are due now."""

    def __init__(
        self,
        db: Database,
        metrics: Metrics,
        *,
        secret: str | None,
        attempts: int,
        backoff_s: float,
        backoff_max_s: float,
        timeout_s: float,
        concurrency: int = 8,
        batch_size: int = 100,
        lease_s: float | None = None,
        db_retry_s: float = 5.0,
    ) -> None:
        if attempts < 1 or concurrency < 1 or batch_size < 1:
            raise ValueError("attempts, concurrency and batch_size must be at least 1")
        # The lease must outlast one POST plus recording it; by default it outlasts two.
        self._lease_s = lease_s if lease_s is not None else 2 * timeout_s + 30
        if self._lease_s < timeout_s + 2 * _LEASE_MARGIN_S:
            raise ValueError(f"lease_s {self._lease_s} must exceed timeout_s {timeout_s} by 4 s or more")
        self._db = db
        self._metrics = metrics
        self._secret = secret.encode() if secret else None
        self._attempts = attempts
        self._backoff_s = backoff_s
        self._backoff_max_s = backoff_max_s
        self._timeout_s = timeout_s
        self._batch_size = batch_size
        self._db_retry_s = db_retry_s
        self._slots = asyncio.Semaphore(concurrency)
        self._wake = asyncio.Event()
        self._http = httpx.AsyncClient(
            timeout=timeout_s, follow_redirects=False, headers={"User-Agent": USER_AGENT}
        )

    def wake(self) -> None:
        """Say that new rows are due now (call from the event loop's thread)."""
        self._wake.set()

    async def close(self) -> None:
        """Close the HTTP client (coroutine); call after cancelling `run`."""
        await self._http.aclose()

    async def run(self) -> None:
        """Deliver due rows until cancelled (coroutine). Database errors are logged and retried."""
        while True:
            self._wake.clear()  # a wake() during the round below makes the sleep after it return at once
            try:
                claimed = await self.deliver_due()
                delay = await self._idle_seconds()
            except Exception:  # the loop must outlive a database restart; HTTP errors never get here
                log.exception("webhook round failed; retrying in %.1f s", self._db_retry_s)
                await asyncio.sleep(self._db_retry_s)
                continue
            if claimed >= self._batch_size or delay <= 0:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), min(delay, MAX_IDLE_S))

    async def deliver_due(self) -> int:
        """Claim one batch of due rows and deliver it; return how many rows were claimed (coroutine)."""
        deadline = time.monotonic() + self._lease_s - self._timeout_s - _LEASE_MARGIN_S
        async with self._db.pool.acquire() as conn:
            records = await conn.fetch(_CLAIM_SQL, self._batch_size, self._lease_s)
        by_url: dict[str, list[_Row]] = defaultdict(list)
        for r in records:
            event: GeofenceEvent | TripEvent
            if r["event_id"] is None:
                event = TripEvent(
                    trip=str(r["trip_id"]),
                    device=r["trip_device"],
                    fleet=r["trip_fleet"],
                    status=r["status"],
                    ts=r["trip_ts"],
                    eta_ts=r["eta_ts"],
                    remaining_m=r["remaining_m"],
                    ref=r["ref"],
                    id=str(r["trip_event_id"]),
                )
            else:
                event = GeofenceEvent(
                    type=r["type"],
                    rule=r["rule_id"],
                    fence=r["fence_id"],
                    device=r["device_id"],
                    fleet=r["fleet"],
                    ts=r["ts"],
                    lat=r["lat"],
                    lon=r["lon"],
                    id=str(r["event_id"]),
                    other=r["other_device"],
                )
            by_url[r["url"]].append(_Row(r["id"], r["url"], r["attempts"], r["lease"], event))
        async with asyncio.TaskGroup() as tg:
            for url, rows in by_url.items():
                rows.sort(key=lambda row: (int(row.event.id), row.id))
                tg.create_task(self._deliver_url(url, rows, deadline))
        return len(records)

    async def _deliver_url(self, url: str, rows: list[_Row], deadline: float) -> None:
        """POST one URL's rows in order; stop at the first failure, or when the lease runs short."""
        for i, row in enumerate(rows):
            async with self._slots:
                if time.monotonic() > deadline:  # another worker may claim these soon: leave them
                    await self._release(rows[i:], None)
                    return
                outcome = await self._post(row)
            retry_at = await self._record(row, outcome)
            if not outcome.ok:
                await self._release(rows[i + 1 :], retry_at)
                return

    async def _post(self, row: _Row) -> _Outcome:
        """One POST of one row; any failure to get a 2xx answer is an outcome, not an exception."""
        body = orjson.dumps(row.event.to_json())
        headers = {
            "Content-Type": "application/json",
            "X-Tracker-Event": row.event.id,
            "X-Tracker-Kind": "trip" if isinstance(row.event, TripEvent) else "geofence",
            "X-Tracker-Delivery": str(row.id),
        }
        if self._secret is not None:
            headers["X-Tracker-Signature"] = sign(self._secret, body, int(time.time()))
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout_s):  # httpx's timeout is per phase, this is in total
                response = await self._http.post(row.url, content=body, headers=headers)
        except Exception as exc:  # a bad URL, refused connection or timeout: the receiver's problem
            return _Outcome(False, _describe(exc))
        finally:
            self._metrics.webhook_seconds.observe(time.perf_counter() - started)
        if 200 <= response.status_code < 300:
            return _Outcome(True)
        return _Outcome(False, f"HTTP {response.status_code}")

    async def _record(self, row: _Row, outcome: _Outcome) -> datetime | None:
        """Store the outcome of one POST; return when a failed row is due again (None otherwise)."""
        attempt = row.attempts + 1
        async with self._db.pool.acquire() as conn:
            if outcome.ok:
                done = await conn.execute(_DELIVERED_SQL, row.id, row.lease)
                self._metrics.webhook_deliveries.labels(result="delivered").inc()
                if done.endswith(" 0"):
                    log.warning(
                        "webhook %s event %s delivered after its lease ended", _safe(row.url), row.event.id
                    )
                return None
            delay = min(self._backoff_max_s, self._backoff_s * 2.0 ** min(attempt - 1, 60))
            delay *= random.uniform(0.9, 1.1)
            after = await conn.fetchrow(_FAILED_SQL, row.id, row.lease, outcome.error, self._attempts, delay)
        if after is None:
            log.warning(
                "webhook %s event %s failed after its lease ended: %s",
                _safe(row.url),
                row.event.id,
                outcome.error,
            )
            return None
        if after["state"] == "dead":
            self._metrics.webhook_deliveries.labels(result="dead").inc()
            log.error(
                "webhook %s event %s dead after %d attempts: %s",
                _safe(row.url),
                row.event.id,
                attempt,
                outcome.error,
            )
            return None
        self._metrics.webhook_deliveries.labels(result="retry").inc()
        log.warning(
            "webhook %s event %s failed (attempt %d of %d), retry in %.2f s: %s",
            _safe(row.url),
            row.event.id,
            attempt,
            self._attempts,
            delay,
            outcome.error,
        )
        next_at: datetime = after["next_at"]
        return next_at

    async def _release(self, rows: list[_Row], due: datetime | None) -> None:
        """Hand back rows not POSTed this round, due at `due` (now when None), without counting attempts."""
        if not rows:
            return
        async with self._db.pool.acquire() as conn:
            await conn.execute(_RELEASE_SQL, [r.id for r in rows], rows[0].lease, due)

    async def _idle_seconds(self) -> float:
        """Seconds until the next pending row is due (inf when none); updates the pending gauge."""
        async with self._db.pool.acquire() as conn:
            count, wait = await conn.fetchrow(_IDLE_SQL)
        self._metrics.webhook_pending.set(count)
        return float("inf") if wait is None else float(wait)


def sign(secret: bytes, body: bytes, t: int) -> str:
    """The `X-Tracker-Signature` value: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + body>`."""
    mac = hmac.new(secret, f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


async def outbox_summary(db: Database) -> dict[str, int]:
    """Outbox rows by state: {'pending': n, 'delivered': n, 'dead': n} (coroutine)."""
    summary = {"pending": 0, "delivered": 0, "dead": 0}
    async with db.pool.acquire() as conn:
        for state, count in await conn.fetch("SELECT state, count(*) FROM webhook_outbox GROUP BY state"):
            summary[state] = count
    return summary


def _describe(exc: BaseException) -> str:
    """A short `last_error` for an exception: its class and message."""
    text = str(exc)
    return (f"{type(exc).__name__}: {text}" if text else type(exc).__name__)[:_ERROR_MAX]


def _safe(url: str) -> str:
    """The URL for logs, without credentials and query (where receivers often put tokens)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<invalid url>"
    return f"{parts.scheme}://{host}{port}{parts.path}"
