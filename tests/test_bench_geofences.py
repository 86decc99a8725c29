"""`tracker bench geofences` end to end, tiny: the real command as a subprocess, its scratch database on
the test PostgreSQL server. It checks the report's shape and that every answer agrees, not the speed."""

from __future__ import annotations

from pathlib import Path

from bench_command import run_bench

from tracker.tools.bench.geofences import build_fences


def test_bench_geofences_reports_agreeing_figures(pg_base: str, tmp_path: Path) -> None:
    report = run_bench("geofences", pg_base, tmp_path, timeout=60, fences=50, points=20000)
    assert report["agree"] is True
    assert report["machine"]["cpus"] >= 1
    assert report["machine"]["postgis"]
    (result,) = report["results"]
    assert result["fences"] == 50 and result["polygons"] + result["circles"] == 50
    assert result["fences_source"].startswith(("real:", "generated:"))
    assert 0 < result["inside_fraction"] < 1
    assert result["correctness"]["agree"] is True
    assert result["correctness"]["polygon_pairs"]["ours"] > 0
    for phase, key in [
        ("ours", "points_per_s"),
        ("strtree", "points_per_s"),
        ("strtree_points_tree", "points_per_s"),
        ("naive", "points_per_s"),
        ("postgis", "points_per_s"),
        ("detect", "fixes_per_s"),
    ]:
        assert result[phase][key] > 0, phase
    assert result["ours"]["batches"]["points_per_s"] > 0
    assert result["ours"]["cpu_s"] > 0
    assert result["postgis"]["load_s"] >= 0
    assert sum(result["detect"]["events"].values()) > 0
    assert all(v is not None and v > 0 for v in result["ratios"].values())


def test_generated_fences_without_the_real_data(tmp_path: Path) -> None:
    fences, source = build_fences(20, realdata=tmp_path / "missing")
    assert source.startswith("generated:")
    assert len(fences) == 20
    polygons = [f.geometry for f in fences if f.geometry is not None]
    assert all(g.is_valid and 64 <= len(g.exterior.coords) - 1 <= 512 for g in polygons)
    assert sum(f.center_lonlat is not None for f in fences) == 1
