"""`tracker bench ingest-log` end to end, tiny: the real command as a subprocess, with its own nats-server
(Debian's `nats-server`) and a scratch database. It checks the report's shape and that every side wrote
the fixes it says, not the speed."""

from __future__ import annotations

from pathlib import Path

from bench_command import run_bench

SIDES = ("postgres", "postgres_async_commit", "log_publish", "log_drain")


def test_bench_ingest_log_reports_each_side_against_postgres(pg_base: str, tmp_path: Path) -> None:
    report = run_bench(
        "ingest-log", pg_base, tmp_path, seconds=0.5, devices=20, batch="10,300", partitions=2, timeout=60
    )
    assert report["machine"]["nats"].startswith("nats-server: v")
    assert [r["batch"] for r in report["results"]] == [10, 300]
    for result in report["results"]:
        for side in SIDES:
            figures = result[side]
            assert figures["fixes"] > 0 and figures["fixes_per_s"] > 0, side
            assert figures.get("stored", figures["fixes"]) == figures["fixes"], side  # none a duplicate
            assert 0 < figures["write_p50_ms"] <= figures["write_p99_ms"] <= figures["write_max_ms"], side
            assert figures["total_cpu_us_per_fix"] > 0, side
        # the log carries exactly what the direct write wrote, and the drain stores all of it
        assert result["log_publish"]["fixes"] == result["postgres"]["fixes"] == result["log_drain"]["fixes"]
        assert result["log_publish"]["messages"] >= result["log_publish"]["writes"]
        assert result["log_publish"]["stream_bytes_per_fix"] > 0
        for ratio in ("log_publish_vs_postgres", "log_drain_vs_postgres", "log_cpu_per_fix_vs_postgres"):
            assert result[ratio] > 0, ratio
