"""The report in a few lines and one table on stderr: setup, idle page, each run against its goals."""

from __future__ import annotations

from typing import Any

from tracker.tools.bench.map.figures import FPS_GOAL, SCRIPT_MS_PER_UPDATE_GOAL
from tracker.tools.bench.map.settings import FEEDS, SECTIONS
from tracker.tools.bench.report import progress


def print_summary(report: dict[str, Any]) -> None:
    """The report's lines and its table of windows, on stderr."""
    rows = []
    for feed in FEEDS:
        section = report.get(SECTIONS[feed])
        if section is None:
            continue
        if feed == "server":
            reg, conn, prime = section["registration"], section["connect"], section["priming"]
            progress(
                f"{section['label']}: registered {reg['devices']} devices in {reg['seconds']} s; connected "
                f"{conn['connected']} in {conn['connect_s']} s ({conn['rss_mb']} MB load generator); "
                f"placed {prime['devices_with_a_stored_fix']} in {prime['seconds']} s"
            )
        else:
            place = section["placement"]
            progress(
                f"{section['label']}: {place['devices']} devices emitted once in {place['emit_s']} s, the "
                f"page knew {place['page_devices']} after {place['seconds']} s, map zoom "
                f"{_fmt((place['map_view'] or {}).get('zoom'))}"
            )
        idle = section["idle_before"]
        progress(
            f"{section['label']}: idle page {_fmt(idle['page']['fps'])} fps, "
            f"{_fmt(idle['script']['script_ms_per_s'])} ms script/s"
        )
        for run in section["runs"]:
            loaded, goals, ratios = run["loaded"], run["goals"], run["ratios_to_idle"]
            page, cores = loaded["page"], loaded["cpu_cores"]
            source = (
                f"load generator {_fmt(cores['load_generator'])}"
                if feed == "server"
                else f"feed {_fmt(cores['feed'])}, redis {_fmt(cores['redis'])}"
            )
            progress(
                f"{run['label']}: page {_fmt(run['received_positions_per_s'])} positions/s of "
                f"{_fmt(run['offered_positions_per_s'])} offered in {_fmt(page['updates_per_s'])} updates/s; "
                f"{_fmt(goals['fps'])} fps (goal {FPS_GOAL:g}: {_met(goals['fps_met'])}, idle ratio "
                f"{_fmt(ratios['fps'])}), {_fmt(goals['script_ms_per_update'])} ms script/update (goal "
                f"{SCRIPT_MS_PER_UPDATE_GOAL:g}: {_met(goals['script_ms_per_update_met'])}); cores: server "
                f"{_fmt(cores['server'])}, {source}, postgres {_fmt(cores['postgres'])}, chromium "
                f"{_fmt(cores['chromium'])}, machine {_fmt(loaded['machine']['busy_cores'])}"
            )
            if feed == "server":
                lost = section["connect"]["connected"] - min(
                    loaded["load"]["connected_at_end"], run["idle"]["load"]["connected_at_end"]
                )
                if lost:
                    progress(f"warning: {lost} device connections were lost by the end of {run['label']}")
            windows = [("loaded", loaded), ("idle", run["idle"])]
            if "clustered" in run:  # --clusters: the same load, zoomed out
                windows.insert(1, ("zoomed", run["clustered"]))
            for name, window in windows:
                rows.append(_row(run, name, window))
    if rows:
        progress("feed    devices window   fps  script ms/upd  handler p95  drawEvery  pos/s recv/offered")
        for row in rows:
            progress(row)


def _row(run: dict[str, Any], name: str, window: dict[str, Any]) -> str:
    page, script = window["page"], window["script"]
    offered = run["offered_positions_per_s"] if name != "idle" else 0
    return (
        f"{run['feed']:<7} {run['devices']:>7} {name:<6} {_fmt(page['fps']):>6} "
        f"{_fmt(script['script_ms_per_update']):>14} {_fmt((page['handler_ms'] or {}).get('p95')):>12} "
        f"{_fmt(page['draw_every_ms']):>10}  {_fmt(page['positions_per_s'])}/{_fmt(offered)}"
    )


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}" if abs(x) < 100 else f"{x:.0f}"


def _met(x: bool | None) -> str:
    return "n/a" if x is None else "met" if x else "NOT met"
