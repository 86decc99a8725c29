"""`tracker bench fleet` end to end, tiny: the real command as a subprocess (the real server on a scratch
database of the test PostgreSQL server, the bare python-socketio server, the Node load generator). It
checks the report's shape, and that at a low rate every fix is acked with no retry, not the speed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from bench_command import run_bench

DEVICES = 20


def _served(result: dict[str, Any], devices: int) -> None:
    assert result["connect"]["connected"] == devices and result["connect"]["failed"] == 0
    assert result["devices_connected_at_end"] == devices
    assert result["drain"]["unanswered_events"] == 0
    assert result["memory"]["rss_connected_mb"] >= result["memory"]["rss_before_connect_mb"] > 0
    assert result["server_log_error_lines"] == 0


@pytest.mark.timeout(300)
def test_bench_fleet_open_closed_and_overload(pg_base: str, tmp_path: Path) -> None:
    report = run_bench("fleet", pg_base, tmp_path, devices=DEVICES, rate=5, seconds=2, warmup=1)
    assert report["settings"]["mode"] == "open" and report["settings"]["devices"] == DEVICES
    for name in ("tracker", "bare"):
        _served(report[name], DEVICES)
        m = report[name]["measure"]
        assert 60 <= m["offered_fixes_per_s"] <= 140  # 20 devices x 5 fixes/s
        assert m["sent_events"] > 0 and m["sent_events_acked"] == m["sent_events"]
        assert m["retries"] == 0 and m["errors"] == 0 and m["rejected"] == 0
        assert m["unanswered_after_drain"] == 0 and m["answered_within_2s"] == 1.0
        assert 0 < m["ack_ms"]["p50"] <= m["ack_ms"]["p99"] <= m["ack_ms"]["max"]
        assert m["server_cpu_cores"] > 0 and m["loadgen_cpu_cores"] > 0
        assert report[name]["memory"]["rss_per_connection_kb"] is not None
    viewer = report["tracker"]["measure"]["fix_to_viewer_ms"]
    assert viewer["count"] > 0 and viewer["p50"] <= viewer["p99"]
    assert report["tracker"]["viewer"]["subscribed"] is True
    assert "fix_to_viewer_ms" not in report["bare"]["measure"]
    assert set(report["tracker_vs_bare"]) == {
        "acked_fixes_per_s",
        "ack_p99_ms",
        "server_cpu_cores",
        "rss_per_connection",
    }
    assert report["goals"]["all_acked"]["met"] is True
    assert report["goals"]["ack_p99_ms"]["goal"] == 100

    closed = run_bench("fleet", pg_base, tmp_path, closed_loop=True, devices=10, batch=5, seconds=2, warmup=1)
    for name in ("tracker", "bare"):
        _served(closed[name], 10)
        m = closed[name]["measure"]
        assert m["acked_events_per_s"] > 0 and m["acked_fixes_per_s"] >= 4 * m["acked_events_per_s"]
    assert closed["tracker_vs_bare"]["acked_fixes_per_s"] > 0
    assert closed["goals"]["fixes_vs_bare"]["goal"] == 0.35

    overload = run_bench(
        "fleet", pg_base, tmp_path, overload=True, devices=10, seconds=2, warmup=1, servers="tracker"
    )
    assert "bare" not in overload and "tracker_vs_bare" not in overload
    tracker = overload["tracker"]
    _served(tracker, 10)
    assert tracker["capacity"]["acked_fixes_per_s"] > 0
    assert 1.5 <= tracker["overload"]["offered_vs_capacity"] <= 2.5
    assert tracker["after"]["offered_vs_capacity"] <= 0.75
    assert set(overload["goals"]) == {
        "overload_acked_vs_capacity",
        "overload_answered_within_2s",
        "after_ack_p99_ms",
        "after_slowest_answer_under_100ms_from_s",
    }
