"""Settings in one place: flags override `TRACKER_*` environment variables, which override defaults.

The CLI builds a `Settings` and hands it to the app factory; nothing else reads the environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tracker import bundle
from tracker.errors import ConfigError


class Settings(BaseSettings):
    """Every knob of the server. Environment variables are the field names upper-cased with `TRACKER_`."""

    model_config = SettingsConfigDict(env_prefix="TRACKER_", extra="ignore", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    database_url: str | None = None
    data_dir: Path | None = None  # the embedded PostGIS cluster's folder when database_url is unset
    redis_url: str | None = None
    # The prefix of this deployment's Redis channels and keys (None: `tracker:` and the database's identity,
    # tracker/store/database.py), so deployments that share one Redis never hear each other.
    redis_namespace: str | None = Field(None, min_length=1, max_length=200)
    # With Redis: a process that stops renewing its devices' presence (killed) has them count offline
    # after this many seconds at most; it renews every third of it (tracker/presence.py).
    presence_expiry_s: float = Field(15.0, ge=1, le=3600)
    # Processes serving one port (uvicorn's supervisor, tracker/supervisor.py); more than one shares rooms
    # through Redis (a private redis-server without `redis_url`) and refuses Engine.IO long-polling.
    workers: int = Field(1, ge=1, le=64)
    # Connections: uvicorn's listen backlog, and the connections (plus tasks) beyond which a worker answers
    # new HTTP requests 503 (None: no limit; a connected socket counts until it closes).
    backlog: int = Field(4096, ge=16)
    limit_concurrency: int | None = Field(None, ge=1)
    geofences: Path = Path("geofences")
    admin_token: str | None = None
    # Failed authentications one client address may make before its failures are answered slowly
    # (tracker/refusals.py), and the seconds in which it earns one more.
    auth_failure_burst: int = Field(20, ge=1)
    auth_failure_refill_s: float = Field(5.0, gt=0, le=3600)
    h3_resolution: int = Field(9, ge=0, le=15)
    broadcast_interval_ms: int = Field(100, ge=5, le=60_000)
    retention_days: int | None = Field(None, ge=1)
    # A UTC day's partition of fixes has its primary key rebuilt (compacted, tracker/store/compaction.py) this
    # many seconds after the day ended; 0: never by the server (`tracker db compact` from cron instead).
    compact_after_s: float = Field(3600.0, ge=0, le=604_800)
    # A trail breaks where its device sent nothing for longer than this (0: never), so that no line is
    # drawn across a silence; above Traccar Client's default 300 s interval, so its trails stay whole.
    trail_gap_s: float = Field(600.0, ge=0, le=31_536_000)
    # Ingest: the bounded queue gives backpressure; a batch is what one transaction writes.
    ingest_queue_max: int = Field(50_000, ge=1)
    ingest_batch_max: int = Field(5_000, ge=1)
    ingest_writers: int = Field(2, ge=1, le=8)  # concurrent write transactions (lanes by device)
    # Per-device admission: a sustained rate, with a burst that always admits one full batch.
    device_rate: float = Field(500.0, gt=0)  # fixes per second
    device_burst: int = Field(5_000, ge=1_000)
    # A device's own messages (`send`): a sustained rate, with a burst that takes an offline app's queue.
    device_message_rate: float = Field(1.0, gt=0)  # messages per second
    device_message_burst: int = Field(60, ge=1)
    # Overload: a fix event is answered `retry` at once while the ingest queue would take longer than
    # `ingest_max_wait_ms` to drain or the event loop lags more than `loop_lag_max_ms`, and while the
    # device already has `device_inflight_max` events waiting for their acks. An answer takes several
    # turns of the loop, so answers run late by several times the lag: measured at twice the capacity
    # (`tracker bench fleet --overload`), 500 ms and 4 events answered 51 % of events within 2 s, 100 ms
    # and 2 events 99.5 %.
    ingest_max_wait_ms: int = Field(1_000, ge=10)
    loop_lag_max_ms: int = Field(100, ge=10)
    device_inflight_max: int = Field(2, ge=1)
    # The garbage collector (tracker/gc_policy.py): survivors frozen every `gc_freeze_interval_s`, and
    # everything thawed and collected once every `gc_full_interval_s` (0: never).
    gc_freeze_interval_s: float = Field(5.0, gt=0)
    gc_full_interval_s: float = Field(600.0, ge=0)
    partition_days_ahead: int = Field(3, ge=1, le=60)
    # Webhooks: each event is POSTed with an HMAC-SHA256 signature (when a secret is set), retried
    # with exponential backoff from `webhook_backoff_s` up to `webhook_backoff_max_s`, and given up
    # (dead) after `webhook_attempts` tries.
    webhook_secret: str | None = None
    webhook_attempts: int = Field(8, ge=1, le=100)
    webhook_backoff_s: float = Field(1.0, gt=0)
    webhook_backoff_max_s: float = Field(600.0, gt=0)
    webhook_timeout_s: float = Field(10.0, gt=0)
    message_body_max_bytes: int = Field(16_384, ge=64, le=1_048_576)  # a message body, as JSON
    # Trips (tracker/trips/): ETA = remaining distance x `trip_detour` / the device's smoothed moving speed;
    # a trip not arrived `trip_ttl_s` after its creation expires; besides each status change, a trip's
    # progress (eta_ts, remaining_m) is stored at most every `trip_progress_s` (0: with every fix).
    trip_detour: float = Field(1.3, ge=1, le=10)
    trip_ttl_s: float = Field(86_400.0, gt=0, le=31_536_000)
    trip_progress_s: float = Field(30.0, ge=0, le=3600)
    # The server's address as customers reach it (`https://track.example.com`), for the `share_url` of trips;
    # unset: the address the POST /api/trips request came to (behind a proxy, with uvicorn's proxy headers).
    public_url: str | None = None
    cors_origins: str = "*"
    # The dispatcher map: the built page (`npm --prefix web run build`), and its base map. `map_style` is the
    # URL of a MapLibre style JSON; without one, raster tiles from `map_tiles` (empty: a plain background).
    web_dir: Path = Field(default_factory=bundle.web_dist)  # the wheel's copy, else the checkout's web/dist
    map_style: str | None = None
    map_tiles: str = "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
    map_attribution: str = (
        '&copy; <a href="https://www.openstreetmap.org/copyright">OpenStreetMap</a> contributors'
    )
    # A GeoJSON file the map draws over its base map, as streets or areas (the demo's simulated streets);
    # served at /map/overlay.geojson.
    map_overlay: Path | None = None
    log_level: str = "info"

    @field_validator("admin_token")
    @classmethod
    def _admin_token_long_enough(cls, v: str | None) -> str | None:
        if v is not None and len(v) < 16:
            raise ValueError("must be at least 16 characters (use a random token)")
        return v or None

    @field_validator("public_url")
    @classmethod
    def _public_url_is_an_origin(cls, v: str | None) -> str | None:
        if v and not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https:// (the address customers open)")
        return v.rstrip("/") if v else None


def load_settings(**overrides: Any) -> Settings:
    """Build settings from the environment plus explicit overrides (flags); None overrides are ignored."""
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        problems = "; ".join(
            f"TRACKER_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from None
