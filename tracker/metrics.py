"""Prometheus metrics, one registry per app so that several apps (tests) can live in one process."""

from __future__ import annotations

import os

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
        self.loop_lag_seconds = Histogram(
            "tracker_loop_lag_seconds",
            "How late the event loop ran a timer, sampled every 50 ms (a stalled loop delays every answer)",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "tracker_ingest_queue_fixes", "Fixes waiting for the ingest loop", registry=r
        )
        self.connected_devices = Gauge("tracker_connected_devices", "Open device connections", registry=r)
        self.connected_viewers = Gauge("tracker_connected_viewers", "Open viewer connections", registry=r)
        # Which process answered: with several workers on one port, each scrape reaches one of them.
        self.process_id = Gauge("tracker_process_id", "OS process id of the answering process", registry=r)
        self.process_id.set(os.getpid())
        self.positions_events = Counter(
            "tracker_positions_events", "positions events emitted to viewer rooms", registry=r
        )
        self.webhook_deliveries = Counter(
            "tracker_webhook_deliveries",
            "Webhook POSTs by outcome: delivered, retry (failed, will retry) or dead (failed, gave up)",
            ["result"],
            registry=r,
        )
        self.webhook_seconds = Histogram(
            "tracker_webhook_delivery_seconds",
            "Time of one webhook POST, whatever its outcome",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.webhook_pending = Gauge(
            "tracker_webhook_outbox_pending", "Outbox rows not yet delivered nor dead", registry=r
        )

        self.messages_stored = Counter("tracker_messages_stored", "Messages to devices stored", registry=r)
        self.messages_delivered = Counter(
            "tracker_messages_delivered", "Hand-overs of messages to device connections", registry=r
        )
        self.messages_acked = Counter("tracker_messages_acked", "Messages acked by their device", registry=r)

        self.geofences_loaded = Gauge("tracker_geofences_loaded", "Fences in force", registry=r)
        self.geofence_errors = Gauge(
            "tracker_geofence_file_errors",
            "Problems in the geofence folder (rules in force kept)",
            registry=r,
        )
        self.geofence_seconds = Histogram(
            "tracker_geofence_evaluation_seconds",
            "Time to evaluate one ingest batch against the fences",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.geofence_events = Counter(
            "tracker_geofence_events", "Geofence events stored, by type", ["type"], registry=r
        )

    def render(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)
