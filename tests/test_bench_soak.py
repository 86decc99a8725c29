"""`tracker bench soak` end to end, tiny: the real command as a subprocess (the real server on a scratch
database, the Node generator's devices with churn and its lean viewers), sampled every few seconds
instead of every minute. It checks the report's shape and that nothing is left unanswered, not the
speed, and not the goals, which need minutes of load."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench_command import run_bench

from tracker.tools.bench.report import BenchError
from tracker.tools.bench.soak import build_settings

DEVICES = 30
VIEWERS = 3


@pytest.mark.timeout(300)
def test_bench_soak_samples_the_server_while_devices_churn(pg_base: str, tmp_path: Path) -> None:
    report = run_bench(
        "soak",
        pg_base,
        tmp_path,
        timeout=240,
        devices=DEVICES,
        minutes=0.5,
        sample_s=10,
        interval=1,
        viewers=VIEWERS,
        fleets=2,
        churn=50,
        server_setting="GC_FULL_INTERVAL_S=10",
    )
    assert report["settings"]["samples"] == 3 and report["settings"]["warmup_samples"] == 1
    assert report["connect"]["connected"] == DEVICES
    assert report["viewers"] == {
        "viewers": VIEWERS,
        "subscribed": VIEWERS,
        "connect_s": report["viewers"]["connect_s"],
    }
    assert report["viewers_subscribed_at_end"] == VIEWERS
    rows = report["samples"]
    assert [r["sample"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert r["rss_mb"] > 0 and r["open_fds"] > 0 and r["asyncio_tasks"] > 0
        assert r["connected_viewers"] == VIEWERS
        assert r["sent_events"] > 0 and r["ack_ms"]["count"] > 0
        assert r["ack_ms"]["p50"] <= r["ack_ms"]["p99"] <= r["ack_ms"]["max"]
        assert r["unanswered"] == 0 and r["errors"] == 0
        assert r["server_cpu_cores"] > 0 and r["loadgen_cpu_cores"] > 0
        assert r["generator_connected"] <= DEVICES and r["generator_stuck"] == 0
    assert sum(r["viewer_events_per_s"] for r in rows) > 0
    summary = report["summary"]
    assert summary["churned"] > 0 and summary["unanswered"] == 0
    assert len(summary["ack_p99_ms_by_sample"]) == 3
    assert (
        summary["open_fds"]["first"] == rows[0]["open_fds"]
        and summary["open_fds"]["last"] == rows[-1]["open_fds"]
    )
    assert summary["rss"]["after_warmup_mb"] == rows[0]["rss_mb"]
    assert set(summary["goals"]) == {
        "rss_growth_after_warmup",
        "open_fds_no_leak",
        "asyncio_tasks_no_leak",
        "ack_p99_steady",
    }
    assert all(isinstance(g["met"], bool) for g in summary["goals"].values())
    assert report["drain"]["in_flight"] == 0 and report["drain"]["queued"] == 0
    assert report["server_log_error_lines"] == 0
    # the server's log is read before its folder goes: a full collection every 10 s shows in it
    assert summary["server_full_collections"] == len(report["server_full_collections"]) >= 1
    assert "full garbage collection" in report["server_full_collections"][0]


def test_bench_soak_flags_are_checked() -> None:
    with pytest.raises(BenchError, match="at least two samples"):
        build_settings(10, 1, 10, 2, 1, 1, None, 60, {})
    with pytest.raises(BenchError, match="--warmup-minutes must leave"):
        build_settings(10, 3, 10, 2, 1, 1, 3, 60, {})
    settings = build_settings(10_000, 30, 10, 20, 5, 1, None, 60, {})
    assert settings.samples == 30 and settings.warmup_samples == 5
    assert build_settings(500, 2, 10, 20, 5, 1, None, 60, {}).warmup_samples == 1
