"""`tracker bench map` end to end, tiny: the real command as a subprocess (server, load generator, headless
Chromium on the built page), its scratch database on the test PostgreSQL server. It checks the report's
shape and that fixes flowed from the devices to the page, not the speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from harness import ROOT


def test_bench_map_measures_the_page_under_load(pg_base: str, tmp_path: Path) -> None:
    out, shot = tmp_path / "report.json", tmp_path / "page.png"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tracker",
            "bench",
            "map",
            "--devices",
            "50",
            "--seconds",
            "2",
            "--warmup",
            "4",
        ]
        + ["--database-url", pg_base, "--out", str(out), "--screenshot", str(shot)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert report == json.loads(out.read_text())
    assert shot.read_bytes().startswith(b"\x89PNG")
    assert report["registration"]["devices"] == 50 and report["connect"]["connected"] == 50
    assert report["idle_before"]["page"]["fps"] > 0
    (run,) = report["runs"]
    loaded, idle = run["loaded"], run["idle"]
    assert run["devices"] == 50 and loaded["sending_devices"] == 50 and idle["sending_devices"] == 0
    load = loaded["load"]
    assert load["acks"] > 0 and load["acked_fixes_per_s"] > 0 and load["errors"] == 0
    assert idle["load"]["acks"] == 0
    page = loaded["page"]
    assert page["stats_available"] is True
    assert page["fps"] > 0 and page["updates"] > 0 and page["positions"] > 0 and page["devices"] >= 50
    assert page["handler_ms"]["count"] > 0 and loaded["script"]["script_ms_per_s"] > 0
    assert loaded["script"]["script_ms_per_update"] > 0
    assert loaded["cpu_s"]["chromium"] > 0 and loaded["cpu_s"]["server"] > 0
    assert loaded["cpu_s"]["load_generator"] > 0
    goals = run["goals"]
    assert goals["fps_goal"] == 30 and goals["script_ms_per_update_goal"] == 16
    assert isinstance(goals["fps_met"], bool) and isinstance(goals["script_ms_per_update_met"], bool)
    assert run["ratios_to_idle"]["fps"] > 0
    assert "127.0.0.1" not in report["blocked_requests"]["by_host"]
    assert report["server_log_error_lines"] == 0
