"""Readings into the report: a measured window's figures from its two ends (frames, script time, page
stats, CPU by process, the source's counters), a run's goals and its ratios to the idle page."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tracker.tools.bench.map.processes import cpu_by_kind
from tracker.tools.bench.probe import Snapshot, ingest_metric_deltas
from tracker.tools.bench.procfs import CLK_TCK
from tracker.tools.bench.report import percentile, rounded

FPS_GOAL = 30.0
SCRIPT_MS_PER_UPDATE_GOAL = 16.0
_CDP_METRICS = ("ScriptDuration", "TaskDuration", "LayoutDuration", "RecalcStyleDuration")


@dataclass
class Reading:
    """One end of a measured window."""

    probe: Snapshot
    browser: dict[int, tuple[str, float]]
    load: dict[str, Any]
    cdp: dict[str, float]
    stats: dict[str, Any] | None
    redis_cpu: float | None = None
    map_view: dict[str, Any] | None = None


def window_figures(
    label: str,
    feed: str,
    active: int,
    rate: float,
    begin: Reading,
    end: Reading,
    frames: dict[str, Any],
    reset: bool,
    pg_kind: dict[int, str],
) -> dict[str, Any]:
    wall = end.probe.t - begin.probe.t
    page_s = float(frames["elapsed"]) / 1000 or wall
    gaps = [float(g) for g in frames["gaps"]]

    def count(name: str) -> float | None:
        after = end.stats.get(name) if end.stats else None
        if not isinstance(after, int | float):
            return None
        before = begin.stats.get(name) if begin.stats and not reset else 0
        return float(after - (before if isinstance(before, int | float) else 0))

    def series(name: str) -> dict[str, Any] | None:
        values = end.stats.get(name) if end.stats else None
        if not isinstance(values, list):
            return None
        return _dist([float(v) for v in values if isinstance(v, int | float)])

    def number(stats: dict[str, Any] | None, name: str) -> float | None:
        value = stats.get(name) if stats else None
        return rounded(float(value)) if isinstance(value, int | float) else None

    updates, positions = count("updates"), count("positions")
    cdp = {
        name: (end.cdp[name] - begin.cdp[name]) * 1000
        for name in _CDP_METRICS
        if name in end.cdp and name in begin.cdp
    }
    script_ms = cdp.get("ScriptDuration")
    task_ms = cdp.get("TaskDuration")
    load0, load1 = begin.load, end.load

    browser = cpu_by_kind(begin.browser, end.browser)
    chromium = sum(v for k, v in browser.items() if k != "driver")
    cpu: dict[str, float | None] = {"server": _delta(begin.probe.server_cpu, end.probe.server_cpu)}
    if feed == "server":
        cpu["load_generator"] = round(load1["cpu_s"] - load0["cpu_s"], 3)
    else:
        cpu["feed"] = round(load1["cpu_s"] - load0["cpu_s"], 3)
        cpu["redis"] = _delta(begin.redis_cpu, end.redis_cpu)
    cpu |= {
        "postgres": _pg_delta(begin.probe, end.probe, pg_kind),
        "chromium": round(chromium, 3),
        "playwright_driver": rounded(browser.get("driver")),
        "bench": round(end.probe.self_cpu - begin.probe.self_cpu, 3),
    }
    machine: dict[str, float | None] = {"busy_cores": None, "steal_cores": None, "other_busy_cores": None}
    if begin.probe.machine and end.probe.machine:
        busy = (end.probe.machine[0] - begin.probe.machine[0]) / CLK_TCK
        ours = sum(v or 0.0 for v in cpu.values())
        machine = {
            "busy_cores": round(busy / wall, 3),
            "steal_cores": round((end.probe.machine[1] - begin.probe.machine[1]) / CLK_TCK / wall, 3),
            "other_busy_cores": round(max(0.0, busy - ours) / wall, 3),
        }
    server_metrics = {}
    if begin.probe.metrics and end.probe.metrics:
        server_metrics = ingest_metric_deltas(begin.probe.metrics, end.probe.metrics, wall)
        events = end.probe.metrics.get("tracker_positions_events_total", 0.0) - begin.probe.metrics.get(
            "tracker_positions_events_total", 0.0
        )
        server_metrics["positions_events_per_s"] = round(events / wall, 2)
    source = (
        {"load": _load_figures(active, rate, load0, load1, wall)}
        if feed == "server"
        else {"feed": _feed_figures(active, rate, load0, load1, wall)}
    )
    return {
        "label": label,
        "feed": feed,
        "sending_devices": active,
        "measured_s": round(wall, 3),
        "page": {
            "fps": round(int(frames["frames"]) / page_s, 2),
            "frames": int(frames["frames"]),
            "frame_gap_ms": _dist(gaps),
            "stats_available": end.stats is not None,
            "updates": updates,
            "updates_per_s": rounded(updates / page_s if updates is not None else None),
            "positions": positions,
            "positions_per_s": rounded(positions / page_s if positions is not None else None),
            "devices": end.stats.get("devices") if end.stats else None,
            "handler_ms": series("handlerMs"),
            "frame_ms": series("frameMs"),
            "draw_every_ms": number(end.stats, "drawEveryMs"),
            "draw_every_ms_at_start": number(begin.stats, "drawEveryMs"),
            "js_heap_mb": rounded(end.cdp.get("JSHeapUsedSize", 0) / 2**20 or None, 1),
            "map_view_at_end": end.map_view,
        },
        "script": {
            "script_ms_per_s": rounded(script_ms / wall if script_ms is not None else None),
            "task_ms_per_s": rounded(task_ms / wall if task_ms is not None else None),
            "layout_ms_per_s": rounded(cdp["LayoutDuration"] / wall if "LayoutDuration" in cdp else None),
            "recalc_style_ms_per_s": rounded(
                cdp["RecalcStyleDuration"] / wall if "RecalcStyleDuration" in cdp else None
            ),
            "script_ms_per_update": rounded(
                script_ms / updates if script_ms is not None and updates else None
            ),
            "task_ms_per_update": rounded(task_ms / updates if task_ms is not None and updates else None),
        },
        **source,
        "cpu_s": {**cpu, "chromium_by_process_type": {k: round(v, 3) for k, v in sorted(browser.items())}},
        "cpu_cores": {k: rounded(v / wall if v is not None else None) for k, v in cpu.items()},
        "machine": machine,
        "server_metrics": server_metrics,
    }


def _load_figures(
    active: int, rate: float, load0: dict[str, Any], load1: dict[str, Any], wall: float
) -> dict[str, Any]:
    """The load generator's part of a window (server feed)."""

    def sent(name: str) -> int:
        return int(load1[name] - load0[name])

    return {
        "offered_fixes_per_s": round(active * rate, 1),
        "sent_per_s": round(sent("sent") / wall, 1),
        "acked_fixes_per_s": round(sent("accepted") / wall, 1),
        "acks": sent("acks"),
        "duplicates": sent("duplicates"),
        "rejected": sent("rejected"),
        "retries": sent("retries"),
        "errors": sent("errors"),
        "skipped_ticks": sent("skipped"),
        "late_cycles": sent("late_cycles"),
        "ticks_of_disconnected_devices": sent("disconnected"),
        "unacked_at_end": load1["in_flight"],
        "connected_at_start": load0["connected"],
        "connected_at_end": load1["connected"],
        "ack_ms": {"p50": load1["ack_ms_p50"], "p95": load1["ack_ms_p95"], "max": load1["ack_ms_max"]},
        "samples": load1["samples"],
    }


def _feed_figures(
    active: int, rate: float, feed0: dict[str, Any], feed1: dict[str, Any], wall: float
) -> dict[str, Any]:
    """The feed's part of a window (redis feed): what it emitted, how late, at what cost."""

    def delta(name: str) -> int:
        return int(feed1[name] - feed0[name])

    cpu = feed1["cpu_s"] - feed0["cpu_s"]
    return {
        "offered_positions_per_s": round(active * rate, 1),
        "emitted_positions_per_s": round(delta("positions") / wall, 1),
        "events_per_s": round(delta("events") / wall, 2),
        "positions": delta("positions"),
        "events": delta("events"),
        "mb_per_s": round(delta("bytes") / wall / 2**20, 3),
        "positions_per_event": feed1["positions_per_event"],
        "tick_lateness_ms": feed1["lateness_ms"],
        "emit_ms": feed1["emit_ms"],
        "late_ticks": delta("late_ticks"),
        "skipped_positions": delta("skipped"),
        "errors": delta("errors"),
        "cpu_cores": round(cpu / wall, 3),
        "cpu_us_per_position": round(cpu / delta("positions") * 1e6, 2) if delta("positions") else None,
        "rss_mb": feed1["rss_mb"],
        "samples": feed1["samples"],
    }


def _delta(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(b - a, 3)


def _pg_delta(begin: Snapshot, end: Snapshot, kinds: dict[int, str]) -> float | None:
    """CPU s of this database's backends and the shared background processes of PostgreSQL."""
    deltas = [
        after - before
        for pid, before in begin.pg_cpu.items()
        if pid in kinds and before is not None and (after := end.pg_cpu.get(pid)) is not None
    ]
    return round(sum(deltas), 3) if deltas else None


def goals(loaded: dict[str, Any]) -> dict[str, Any]:
    fps = loaded["page"]["fps"]
    per_update = loaded["script"]["script_ms_per_update"]
    return {
        "fps_goal": FPS_GOAL,
        "fps": fps,
        "fps_met": fps >= FPS_GOAL,
        "script_ms_per_update_goal": SCRIPT_MS_PER_UPDATE_GOAL,
        "script_ms_per_update": per_update,
        "script_ms_per_update_met": None if per_update is None else per_update < SCRIPT_MS_PER_UPDATE_GOAL,
        "handler_ms_p95": (loaded["page"]["handler_ms"] or {}).get("p95"),
    }


def ratios(loaded: dict[str, Any], idle: dict[str, Any]) -> dict[str, Any]:
    """Loaded over idle, same page, same devices shown."""
    return {
        "fps": ratio(loaded["page"]["fps"], idle["page"]["fps"]),
        "script_ms_per_s": ratio(loaded["script"]["script_ms_per_s"], idle["script"]["script_ms_per_s"]),
        "task_ms_per_s": ratio(loaded["script"]["task_ms_per_s"], idle["script"]["task_ms_per_s"]),
        "chromium_cpu": ratio(loaded["cpu_s"]["chromium"], idle["cpu_s"]["chromium"]),
        "server_cpu": ratio(loaded["cpu_s"]["server"], idle["cpu_s"]["server"]),
        "machine_busy": ratio(loaded["machine"]["busy_cores"], idle["machine"]["busy_cores"]),
    }


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 3)


def _dist(values: Sequence[float]) -> dict[str, Any]:
    ordered = sorted(values)
    return {
        "count": len(ordered),
        "p50": rounded(percentile(ordered, 50)),
        "p95": rounded(percentile(ordered, 95)),
        "max": rounded(ordered[-1] if ordered else None),
    }
