"""`tracker bench map` end to end, tiny: the real command as a subprocess (server, load generator, feed
through a private redis-server, headless Chromium on the built page), its scratch database on the test
PostgreSQL server. It checks the report's shape and that positions flowed to the page by both feeds (the
redis feed near its offered rate), not the speed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from bench_command import run_bench

DEVICES = 200


def _goals_and_ratios(run: dict[str, Any]) -> None:
    goals = run["goals"]
    assert goals["fps_goal"] == 30 and goals["script_ms_per_update_goal"] == 16
    assert isinstance(goals["fps_met"], bool) and isinstance(goals["script_ms_per_update_met"], bool)
    assert run["ratios_to_idle"]["fps"] > 0


def _page_fed(loaded: dict[str, Any]) -> None:
    page = loaded["page"]
    assert page["stats_available"] is True
    assert page["fps"] > 0 and page["updates"] > 0 and page["positions"] > 0 and page["devices"] >= DEVICES
    assert page["handler_ms"]["count"] > 0 and loaded["script"]["script_ms_per_s"] > 0
    assert loaded["script"]["script_ms_per_update"] > 0
    assert "draw_every_ms" in page
    assert loaded["cpu_s"]["chromium"] > 0 and loaded["cpu_s"]["server"] > 0


@pytest.mark.timeout(300)  # two feeds, each with a page, and a clustered window per feed
def test_bench_map_measures_the_page_under_load(pg_base: str, tmp_path: Path) -> None:
    shot = tmp_path / "page.png"
    report = run_bench(
        "map",
        pg_base,
        tmp_path,
        timeout=280,
        devices=DEVICES,
        seconds=2,
        warmup=4,
        feed="server,redis",
        screenshot=shot,
        clusters=True,
    )
    assert shot.read_bytes().startswith(b"\x89PNG")
    assert report["settings"]["feeds"] == ["server", "redis"]

    # Through the server: real devices, real ingest and broadcast.
    server = report["through_the_server"]
    assert server["label"] == "through the server"
    assert server["registration"]["devices"] == DEVICES and server["connect"]["connected"] == DEVICES
    assert server["idle_before"]["page"]["fps"] > 0
    (run,) = server["runs"]
    loaded, idle = run["loaded"], run["idle"]
    assert run["devices"] == DEVICES and loaded["sending_devices"] == DEVICES and idle["sending_devices"] == 0
    load = loaded["load"]
    assert load["acks"] > 0 and load["acked_fixes_per_s"] > 0 and load["errors"] == 0
    assert idle["load"]["acks"] == 0
    _page_fed(loaded)
    assert loaded["cpu_s"]["load_generator"] > 0
    _goals_and_ratios(run)
    assert "127.0.0.1" not in server["blocked_requests"]["by_host"]
    assert server["server_log_error_lines"] == 0

    # The page at the target rate: synthetic positions events through Redis, the real server relays them.
    target = report["page_at_target_rate"]
    assert target["label"] == "page at target rate"
    assert target["placement"]["page_devices"] >= 0.95 * DEVICES
    assert target["placement"]["redis_subscribers"] >= 1
    (run,) = target["runs"]
    loaded, idle = run["loaded"], run["idle"]
    assert run["feed"] == "redis" and run["offered_positions_per_s"] == DEVICES
    feed = loaded["feed"]
    assert feed["errors"] == 0 and feed["emitted_positions_per_s"] >= 0.5 * DEVICES
    assert 0 < feed["events_per_s"] <= 11
    _page_fed(loaded)
    assert loaded["page"]["positions_per_s"] >= 0.5 * run["offered_positions_per_s"]
    assert run["received_share"] >= 0.5
    assert loaded["cpu_s"]["feed"] > 0 and loaded["cpu_s"]["redis"] is not None
    assert idle["feed"]["positions"] == 0 and idle["page"]["positions"] == 0
    _goals_and_ratios(run)
    # Zoomed out with the same devices sending: clusters, and their ratios to the exact view.
    clustered = run["clustered"]
    assert clustered["clusters"]["markers"] > 0 and clustered["clusters"]["devices_in_clusters"] > 0
    assert clustered["page"]["fps"] > 0 and run["ratios_clustered_to_exact"]["fps"] > 0
    assert "127.0.0.1" not in target["blocked_requests"]["by_host"]
    assert target["server_log_error_lines"] == 0
