"""`tracker bench replay` end to end, tiny: the real command as a subprocess (a few minutes of 1 Hz fixes
through the bulk path, the real server, headless Chromium on the built page), its scratch database on the
test PostgreSQL server. It checks the report's shape, that the replay opened on every fix of the window
and played, and its ratios, not the speed."""

from __future__ import annotations

from pathlib import Path

from bench_command import run_bench


def test_bench_replay_opens_and_plays_a_replay(pg_base: str, tmp_path: Path) -> None:
    shot = tmp_path / "replay.png"
    report = run_bench(
        "replay", pg_base, tmp_path, timeout=240, days=0.01, devices=2, repeats=1, seconds=1, screenshot=shot
    )
    assert shot.read_bytes().startswith(b"\x89PNG")
    fixes = report["dataset"]["fixes_per_device"]
    assert fixes == 864 and report["dataset"]["load"]["fixes"] == 2 * fixes
    http = report["http"]
    assert http["fixes"] == fixes and 0 < http["points"] <= report["settings"]["max_points"]
    assert http["replay_ms"]["median"] > 0 and http["csv_ms"]["median"] > 0 and http["csv_bytes"] > 0
    page = report["page"]
    assert [t["fixes"] for t in page["tracks"]] == [fixes, fixes]
    assert page["open_ms"] > 0 and page["baseline_open_ms"] > 0 and page["page_errors"] == []
    assert page["idle"]["fps"] > 0 and page["playing"]["fps"] > 0
    assert page["playing"]["clock_advance_s"] > 0
    assert set(report["ratios"]) == {"server_replay_to_csv", "page_open_week_to_hour", "fps_playing_to_idle"}
    assert all(v is not None and v > 0 for v in report["ratios"].values())
    assert isinstance(report["goals"]["open_ms_met"], bool) and report["server_log_error_lines"] == 0
