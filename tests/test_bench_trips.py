"""`tracker bench trips` end to end, tiny: the real command as a subprocess on a scratch database. It
checks the report's shape and that the figures are there and consistent, not the speed."""

from __future__ import annotations

from pathlib import Path

from bench_command import run_bench


def test_bench_trips_reports_the_ratio_and_the_eta_error(pg_base: str, tmp_path: Path) -> None:
    report = run_bench("trips", pg_base, tmp_path, devices=200, rounds=2, seeds=1, senders=10, seconds=1)
    ingest = report["ingest"]
    runs = ingest["runs"]
    assert [r["trips"] for r in runs] == [0, 200, 200, 0] * 2
    assert all(r["fixes"] == 400 and r["fixes_per_s"] > 0 and r["cpu_us_per_fix"] > 0 for r in runs)
    assert all(r["trips_held"] == r["trips"] for r in runs)
    assert len(ingest["pair_ratios"]) == 4 and ingest["ratio_to_no_trips"] > 0
    assert ingest["trip_cost_share"] == round(1 - ingest["ratio_to_no_trips"], 3)
    server = report["server"]
    assert server["trips_held"] == 200 and server["senders"] == 10 and server["server_error_lines"] == 0
    assert [r["own_trips"] for r in server["runs"]] == [False, True, True, False] * 2
    assert all(r["acked_fixes"] > 0 and r["server_cpu_us_per_fix"] > 0 for r in server["runs"])
    assert len(server["cpu_pair_ratios"]) == 4
    eta = report["eta"]["1"]
    assert eta["measured"] >= 20 and eta["never_arrived"] == 0
    for basis in ("of_time_to_go", "of_trip_duration"):
        figures = eta[basis]
        assert 0 <= figures["median"] <= figures["p75"] <= figures["p90"]
        assert 0 <= figures["within_20_percent"] <= 1
