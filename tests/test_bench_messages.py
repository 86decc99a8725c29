"""`tracker bench messages` end to end, tiny: the real command as a subprocess on a scratch database.
It checks the report's shape and that the figures are there and consistent, not the speed."""

from __future__ import annotations

from pathlib import Path

from bench_command import run_bench


def test_bench_messages_reports_latencies_and_an_ordered_backlog(pg_base: str, tmp_path: Path) -> None:
    report = run_bench("messages", pg_base, tmp_path, messages=20, backlog=300)
    connected = report["connected"]
    for name in ("send_to_device", "send_ack", "baseline_fix_round_trip"):
        figures = connected[name]
        assert figures["count"] == 20
        assert 0 < figures["p50_ms"] <= figures["p95_ms"] <= figures["p99_ms"]
    assert connected["ratio_p50_to_baseline"] > 0
    backlog = report["offline_backlog"]
    assert backlog["messages"] == 300 and backlog["in_order"] is True
    assert 0 < backlog["connect_to_all_received_s"] <= backlog["connect_to_all_acked_s"]
    assert report["cpu"]["server_s"] > 0 and report["server_error_lines"] == 0
