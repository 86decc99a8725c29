"""`tracker bench storm` end to end, tiny: the real command as a subprocess (the real server on a scratch
database of the test PostgreSQL server, restarted with SIGTERM and with SIGKILL on its port, the Node
generator's devices reconnecting). It checks the report's shape and what a restart must never do (lose
an acked fix, store a fence event twice, leave an event unanswered on an open connection), not the
speed."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench_command import run_bench

from tracker.tools.bench.report import BenchError
from tracker.tools.bench.storm import build_settings

DEVICES = 20


@pytest.mark.timeout(300)
def test_bench_storm_recovers_every_device_and_loses_no_acked_fix(pg_base: str, tmp_path: Path) -> None:
    report = run_bench(
        "storm",
        pg_base,
        tmp_path,
        timeout=240,
        devices=DEVICES,
        interval=1,
        warmup=2,
        settle=2,
        cross_every=3,
    )
    assert report["settings"]["restarts"] == ["sigterm", "kill"]
    assert report["connect"]["connected"] == DEVICES
    assert report["warmup"]["answered_ok"] > 0
    assert set(report["restarts"]) == {"sigterm", "kill"}
    for kind, exit_code in (("sigterm", 143), ("kill", -9)):
        restart = report["restarts"][kind]
        assert restart["old_server_exit_code"] == exit_code
        assert restart["devices"] == restart["devices_recovered"] == DEVICES
        assert restart["all_recovered_s"] == restart["recovered_s"]["max"] > 0
        assert restart["new_server_ready_s"] >= restart["old_server_exited_s"]
        for vitals in (restart["vitals_before"], restart["vitals_after_recovery"]):
            assert vitals["rss_mb"] > 0 and vitals["open_fds"] > 0 and vitals["asyncio_tasks"] > 0
        w = restart["window"]
        assert w["sent_events"] == (
            w["answered_ok"]
            + w["answered_retry"]
            + w["answered_error"]
            + w["dropped_with_connection"]
            + w["unanswered_on_open_connection"]
        )
        assert w["reconnects"] >= DEVICES and w["server_cpu_cores"] > 0 and w["loadgen_cpu_cores"] > 0
        assert restart["acked_before_signal"]["acked"] > 0
        assert set(restart["goals"]) == {
            "all_recovered_s",
            "acked_fixes_lost",
            "fence_events_twice",
            "unanswered_on_open_connection",
            "rss_after_vs_before",
        }
        for name in ("acked_fixes_lost", "fence_events_twice", "unanswered_on_open_connection"):
            assert restart["goals"][name]["met"] is True, (kind, name, restart["goals"][name])
    acked = report["acked_fixes"]
    assert (
        acked["acked_fixes"] > 0 and acked["missing_acked_fixes"] == 0 and acked["acked_more_than_once"] == 0
    )
    assert acked["stored_fixes"] >= acked["acked_fixes"]
    events = report["fence_events"]
    assert events["events"] > 0 and events["duplicated_keys"] == 0
    assert report["drain"]["in_flight"] == 0 and report["drain"]["queued"] == 0
    assert [s["log_error_lines"] for s in report["servers"]] == [0, 0, 0]
    assert [s["exit_code"] for s in report["servers"]] == [143, -9, 143]


def test_bench_storm_flags_are_checked() -> None:
    with pytest.raises(BenchError, match="--restarts"):
        build_settings(10, 5, 1, 1, 60, 6, "kill,kill", {})
    with pytest.raises(BenchError, match="--interval must be between"):
        build_settings(10, 0, 1, 1, 60, 6, "kill", {})
    assert build_settings(10, 5, 1, 1, 60, 0, "kill", {}).restarts == ("kill",)
