"""`tracker bench history` end to end, tiny: the real command as a subprocess, its scratch database on the
test PostgreSQL server. It checks the report's shape and that the figures are there, not the speed."""

from __future__ import annotations

from pathlib import Path

from bench_command import run_bench
from harness import REALDATA

QUERIES = {
    "trail_24h",
    "positions_first_page",
    "positions_cursor_page",
    "area_bbox_1h",
    "area_district_1h",
    "nearby_live",
}


def test_bench_history_reports_positive_figures(pg_base: str, tmp_path: Path) -> None:
    report = run_bench(
        "history",
        pg_base,
        tmp_path,
        timeout=60,
        devices=20,
        fixes_per_device=500,
        live_devices=100,
        requests=10,
        warmup=2,
    )
    assert report["machine"]["cpus"] >= 1 and report["machine"]["postgis"]
    load = report["load"]
    assert load["history_fixes"]["fixes"] == load["history_fixes"]["stored"] == 20 * 500
    assert load["live_only_fixes"]["stored"] == 80
    assert load["history_fixes"]["fixes_per_s"] > 0
    assert report["startup"]["latest_fixes_rows"] == 100
    assert report["startup"]["server_ready_s"] > 0
    assert all(s > 0 for s in report["startup"]["latest_fixes_s"])
    assert report["server_log_error_lines"] == 0
    by_name = {q["name"]: q for q in report["queries"]}
    expected = (
        QUERIES
        if (REALDATA / "geofences" / "munich_stadtbezirke.geojson").is_file()
        else (QUERIES - {"area_district_1h"})
    )
    assert set(by_name) == expected
    for name, q in by_name.items():
        http = q["http"]
        assert http["n"] == 10, name
        assert 0 < http["p50_ms"] <= http["p95_ms"] <= http["p99_ms"] <= http["max_ms"], name
        assert q["response_bytes"]["min"] > 0, name
        inner = q["in_process"]["live_index_nearby"] if name == "nearby_live" else q["sql_only"]
        assert inner["p50_ms"] > 0, name
    trail = by_name["trail_24h"]
    assert trail["items"]["min"] == trail["items"]["max"] == 500  # a whole day of one device
    assert by_name["positions_first_page"]["items"]["min"] == 500  # the day fits one page of 1000
    assert trail["goal_p95_ms"] == 50.0 and isinstance(trail["goal_met"], bool)
    assert trail["store_function"]["p50_ms"] > 0
    assert trail["breakdown"]["steps"]["sql_fetch"]["p50_ms"] > 0
    assert report["goals"]["trail_24h_met"] == trail["goal_met"]
    assert report["total_s"] > 0
