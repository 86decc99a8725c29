"""`tracker bench report` end to end, tiny: the real command as a subprocess, its scratch database on the
test PostgreSQL server. It checks the report's shape, that the figures are there and that the report agreed
with /stops and /trips on its sample, not the speed."""

from __future__ import annotations

from pathlib import Path

from bench_command import run_bench


def test_bench_report_times_the_report_against_the_baseline_and_agrees(pg_base: str, tmp_path: Path) -> None:
    report = run_bench("report", pg_base, tmp_path, timeout=120, devices=4, interval_s=120, runs=2)
    assert report["machine"]["cpus"] >= 1 and report["machine"]["postgis"]
    settings = report["settings"]
    assert settings["devices"] == 4 and settings["fixes_per_device"] == 720  # a day at one fix per 2 min
    assert report["load"]["fixes"] == 4 * 720
    for name in ("baseline", "report"):
        part = report[name]
        assert len(part["runs"]) == 2 and 0 < part["min_s"] <= part["median_s"], name
        assert all(r["bench_cpu_s"] >= 0 for r in part["runs"]), name
    assert report["result"]["devices"] == 4 and report["result"]["stops"] > 0
    assert report["result"]["distance_km"] > 0
    assert report["agrees_with_stops_and_trips"] == {"devices": 4, "disagree": [], "ok": True}
    assert report["ratio_report_to_baseline"] > 0
    assert report["goal_s"] == 10.0 and isinstance(report["goal_met"], bool)
    # A fresh load is timed as ingest left it, then compacted as the server would, then timed again.
    assert len(report["bloated"]["report"]["runs"]) == 2 and report["bloated"]["ratio"] > 0
    assert report["compacted"] and report["compaction"]["partitions"]
    assert {p["partition"] for p in report["compaction"]["partitions"]} >= {
        f"fixes_p{settings['date'].replace('-', '')}"
    }
