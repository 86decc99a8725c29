"""Prometheus metrics, one registry per app so that several apps (tests) can live in one process."""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)


class Metrics:
    """Every metric the tracker exports, as attributes; names and help texts are what a scrape shows."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        count, gauge, seconds = self._counter, self._gauge, self._seconds

        self.fixes_accepted = count("tracker_fixes_accepted", "Fixes stored (new)")
        self.fixes_duplicate = count("tracker_fixes_duplicate", "Fixes already stored (retries)")
        self.fixes_rejected = count("tracker_fixes_rejected", "Fixes refused by validation")
        self.fixes_flagged = count("tracker_fixes_flagged", "Fixes stored with a flag by a fix filter")
        self.submissions_busy = count(
            "tracker_submissions_busy", "Fix events answered with retry (busy or storage down)", ["reason"]
        )
        self.batch_size = Histogram(
            "tracker_ingest_batch_fixes",
            "Fixes per ingest transaction",
            buckets=_SIZE_BUCKETS,
            registry=self.registry,
        )
        self.commit_seconds = seconds(
            "tracker_ingest_commit_seconds", "Time to write and commit one ingest batch"
        )
        self.ack_seconds = seconds("tracker_ingest_ack_seconds", "Time from receiving a fix event to its ack")
        self.loop_lag_seconds = seconds(
            "tracker_loop_lag_seconds",
            "How late the event loop ran a timer, sampled every 50 ms (a stalled loop delays every answer)",
        )
        self.queue_depth = gauge("tracker_ingest_queue_fixes", "Fixes waiting for the ingest loop")
        self.connected_devices = gauge("tracker_connected_devices", "Open device connections")
        self.connected_viewers = gauge("tracker_connected_viewers", "Open viewer connections")
        # Which process answered: with several workers on one port, each scrape reaches one of them.
        self.process_id = gauge("tracker_process_id", "OS process id of the answering process")
        self.process_id.set(os.getpid())
        # Counted when scraped: a number that only grows under steady load is a leak (`tracker bench soak`).
        self.asyncio_tasks = gauge("tracker_asyncio_tasks", "asyncio tasks of the process's event loop")
        self.asyncio_tasks.set_function(_asyncio_tasks)
        self.auth_refusals = count(
            "tracker_auth_refusals",
            "Refused authentications by edge and reason (missing, unknown, expired, not_admin, throttled)",
            ["edge", "reason"],
        )
        self.positions_events = count("tracker_positions_events", "positions events emitted to viewer rooms")

        self.webhook_deliveries = count(
            "tracker_webhook_deliveries",
            "Webhook POSTs by outcome: delivered, retry (failed, will retry) or dead (failed, gave up)",
            ["result"],
        )
        self.webhook_seconds = seconds(
            "tracker_webhook_delivery_seconds", "Time of one webhook POST, whatever its outcome"
        )
        self.webhook_pending = gauge(
            "tracker_webhook_outbox_pending", "Outbox rows not yet delivered nor dead"
        )

        self.messages_stored = count("tracker_messages_stored", "Messages to devices stored")
        self.messages_delivered = count(
            "tracker_messages_delivered", "Hand-overs of messages to device connections"
        )
        self.messages_acked = count("tracker_messages_acked", "Messages acked by their device")
        self.messages_received = count("tracker_messages_received", "Messages from devices stored")

        self.geofences_loaded = gauge("tracker_geofences_loaded", "Fences in force")
        self.geofence_errors = gauge(
            "tracker_geofence_file_errors", "Problems in the geofence folder (rules in force kept)"
        )
        self.geofence_seconds = seconds(
            "tracker_geofence_evaluation_seconds", "Time to evaluate one ingest batch against the fences"
        )
        self.geofence_events = count("tracker_geofence_events", "Geofence events stored, by type", ["type"])
        self.trip_events = count("tracker_trip_events", "Trip status changes stored, by status", ["status"])
        self.trips_active = gauge("tracker_trips_active", "Active trips this process evaluates")

    def _counter(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
        return Counter(name, documentation, labels, registry=self.registry)

    def _gauge(self, name: str, documentation: str) -> Gauge:
        return Gauge(name, documentation, registry=self.registry)

    def _seconds(self, name: str, documentation: str) -> Histogram:
        """A latency histogram, with buckets from 1 ms to 10 s."""
        return Histogram(name, documentation, buckets=_LATENCY_BUCKETS, registry=self.registry)

    def render(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)


def _asyncio_tasks() -> float:
    """Tasks not yet done of the event loop running in this thread (a scrape runs in it); NaN outside one."""
    try:
        return float(len(asyncio.all_tasks()))
    except RuntimeError:
        return math.nan
