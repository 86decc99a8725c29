"""`tracker bench dry-run` end to end, tiny: the real command as a subprocess, its scratch database on the
test PostgreSQL server. It checks the report's shape and that the figures are there, not the speed."""

from __future__ import annotations

from pathlib import Path

from bench_command import run_bench


def test_bench_dry_run_reports_positive_figures(pg_base: str, tmp_path: Path) -> None:
    report = run_bench("dry-run", pg_base, tmp_path, timeout=120, devices=10, fixes_per_device=400)
    assert report["machine"]["cpus"] >= 1
    assert report["load"]["history_fixes"]["stored"] == 10 * 400
    assert report["settings"]["fixes"] == 10 * 400
    run = report["dry_run"]
    assert run["fixes"] == 10 * 400 and run["fixes_per_s"] > 0 and run["seconds"] > 0
    assert run["events"] == sum(run["events_by_type"].values()) > 0
    assert run["server_cpu_s"] is not None and run["server_peak_rss_mb"] > 0
    assert run["server_cpu_us_per_fix"] > 0
    baselines = report["baselines"]
    assert baselines["copy_only"]["fixes"] == 10 * 400 and baselines["copy_only"]["fixes_per_s"] > 0
    assert baselines["postgis_covers"]["fixes"] > 0 and baselines["postgis_covers"]["seconds"] >= 0
    assert baselines["dry_run_vs_copy_only"] > 0
    breakdown = report["in_process_breakdown"]
    assert breakdown["fixes"] == baselines["postgis_covers"]["fixes"]  # the same sub-window
    assert all(v >= 0 for v in breakdown["cpu_us_per_fix"].values())
    assert breakdown["same_events_as_every_fix_detected"] is True
    assert 0 < breakdown["fixes_detected"] <= breakdown["fixes"]
    assert report["goal"]["fixes_per_s"] == 200_000 and isinstance(report["goal"]["met"], bool)
