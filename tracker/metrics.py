"""Prometheus metrics, one registry per app so that several apps (tests) can live in one process."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)


class Metrics:
    """Every metric the tracker exports, as attributes."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.fixes_accepted = Counter("tracker_fixes_accepted", "Fixes stored (new)", registry=r)
        self.fixes_duplicate = Counter(
            "tracker_fixes_duplicate", "Fixes already stored (retries)", registry=r
        )
        self.fixes_rejected = Counter("tracker_fixes_rejected", "Fixes refused by validation", registry=r)
        self.submissions_busy = Counter(
            "tracker_submissions_busy",
            "Fix events answered with retry (busy or storage down)",
            ["reason"],
            registry=r,
        )
        self.batch_size = Histogram(
            "tracker_ingest_batch_fixes",
            "Fixes per ingest transaction",
            buckets=_SIZE_BUCKETS,
            registry=r,
        )
        self.commit_seconds = Histogram(
            "tracker_ingest_commit_seconds",
            "Time to write and commit one ingest batch",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ack_seconds = Histogram(
            "tracker_ingest_ack_seconds",
            "Time from receiving a fix event to its ack",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "tracker_ingest_queue_fixes", "Fixes waiting for the ingest loop", registry=r
        )
        self.connected_devices = Gauge("tracker_connected_devices", "Open device connections", registry=r)
        self.connected_viewers = Gauge("tracker_connected_viewers", "Open viewer connections", registry=r)
        self.positions_events = Counter(
            "tracker_positions_events", "positions events emitted to viewer rooms", registry=r
        )

    def render(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)
