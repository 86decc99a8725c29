"""`tracker bench near` end to end, tiny: the real command as a subprocess (it needs no database: the
detector is measured in process). It checks the report's shape, that the near rule's configurations
are compared with their baselines, and that pairs did come near and go far; not the speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from harness import ROOT


def test_bench_near_reports_the_rule_against_its_baseline(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    argv = [sys.executable, "-m", "tracker", "bench", "near", "--devices", "400", "--near-devices", "100"]
    argv += ["--minutes", "0.5", "--distances", "100,500", "--out", str(out)]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert report == json.loads(out.read_text())
    assert report["machine"]["cpus"] >= 1
    assert report["settings"]["offered_fixes_per_s"] == 80
    results = report["results"]
    assert set(results) == {
        f"{fences}{near}" for fences in ("none", "geofences") for near in ("", "+near-100m", "+near-500m")
    }
    for name, r in results.items():
        assert r["batches"] == 300 and r["fixes"] > 0, name
        assert r["batch_ms"]["p50"] > 0 and r["batch_ms"]["p99"] >= r["batch_ms"]["p50"], name
        assert r["fixes_per_s"] > 0, name
        if r["near_distance_m"] is None:
            assert "near" not in r["events"] and r["index_lookups"] == 0, name
            continue
        assert r["index_lookups"] > 0, name
        assert r["events"].get("near", 0) > 0 and r["events"].get("far", 0) > 0, name
        versus = r["vs_baseline"]
        assert versus["p50_ratio"] > 0 and versus["p99_ratio"] > 0 and versus["cpu_mean_ratio"] > 0, name
    assert results["geofences"]["events"], "the project's fences fire nothing in the city"
    assert report["process"]["cpu_s"] > 0
