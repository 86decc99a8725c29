"""From a window's raw tallies and CPU readings to the figures of the report, and tracker/bare ratios.

Rates are per second of the window. What was sent in a window (offered fixes, events, the latency of
their answers, answered within 2 s, still unanswered after the drain) is counted by send time; what
arrived (acked fixes, `retry` answers, viewer positions) by arrival time. Latencies are nearest-rank
percentiles of every answer, pooled over the generator processes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tracker.tools.bench.procfs import CLK_TCK
from tracker.tools.bench.report import percentile, rounded


@dataclass(frozen=True)
class Reading:
    """CPU seconds at one instant (perf_counter `t`): the server tree, its PostgreSQL backends, the
    generators, and the whole machine's busy jiffies (None where /proc/stat cannot be read)."""

    t: float
    server_cpu_s: float
    postgres_cpu_s: float
    loadgen_cpu_s: float
    loadgen_cpu_by_process: list[float]
    machine_busy_jiffies: int | None


def latency(values: list[float]) -> dict[str, Any]:
    ordered = sorted(values)
    return {
        "count": len(ordered),
        "p50": rounded(percentile(ordered, 50), 2),
        "p99": rounded(percentile(ordered, 99), 2),
        "max": rounded(ordered[-1] if ordered else None, 2),
    }


def cpu(begin: Reading, end: Reading) -> dict[str, Any]:
    wall = end.t - begin.t
    per_process = [
        round((b - a) / wall, 3)
        for a, b in zip(begin.loadgen_cpu_by_process, end.loadgen_cpu_by_process, strict=True)
    ]
    server = (end.server_cpu_s - begin.server_cpu_s) / wall
    postgres = (end.postgres_cpu_s - begin.postgres_cpu_s) / wall
    loadgen = (end.loadgen_cpu_s - begin.loadgen_cpu_s) / wall
    figures: dict[str, Any] = {
        "server_cpu_cores": round(server, 3),
        "postgres_cpu_cores": round(postgres, 3),
        "loadgen_cpu_cores": round(loadgen, 3),
        "loadgen_cpu_cores_by_process": per_process,
    }
    if begin.machine_busy_jiffies is not None and end.machine_busy_jiffies is not None:
        busy = (end.machine_busy_jiffies - begin.machine_busy_jiffies) / CLK_TCK / wall
        figures["machine_busy_cores"] = round(busy, 3)
        # what else ran on the machine meanwhile (other tenants' work): the noise of this window
        figures["other_busy_cores"] = round(max(0.0, busy - server - postgres - loadgen), 3)
    return figures


def window(w: dict[str, Any], begin: Reading, end: Reading) -> dict[str, Any]:
    """The figures of one window."""
    wall = end.t - begin.t
    events = int(w["events"])
    acked_sent = len(w["ack_ms"])
    offered = w["generated"] / wall
    acked = w["accepted"] / wall
    figures: dict[str, Any] = {
        "measured_s": round(wall, 2),
        "offered_fixes_per_s": round(offered, 1),
        "acked_fixes_per_s": round(acked, 1),
        "acked_of_offered": rounded(acked / offered if offered else None),
        "sent_events_per_s": round(events / wall, 1),
        "acked_events_per_s": round(w["acks"] / wall, 1),
        "ack_ms": latency(w["ack_ms"]),
        "retries": int(w["retries"]),
        "retry_answer_ms": latency(w["retry_ms"]),
        "mean_retry_after_ms": rounded(w["retry_after_ms_sum"] / w["retries"] if w["retries"] else None, 1),
        "errors": int(w["errors"]),
        "rejected": int(w["rejected"]),
        "duplicates": int(w["duplicates"]),
        "sent_events": events,
        "sent_events_acked": acked_sent,
        "answered_within_2s": rounded(w["answered_within_2s"] / events if events else None, 4),
        "unanswered_at_window_end": w["in_flight_at_end"],
        "unanswered_after_drain": int(w["unanswered"]),
        "disconnects": int(w["disconnects"]),
        "generator_late_sends": int(w["late_sends"]),
        # the slowest answer to the events sent in each second: stalls show as a run of high values
        "max_ms_by_second": [round(ms) for ms in w["max_ms_by_second"]],
        **cpu(begin, end),
    }
    # Per CPU second of the server (its PostgreSQL backends not counted): on a machine whose other
    # tenants take cores away at random, what a server does per core is steadier than per second.
    server_cpu = end.server_cpu_s - begin.server_cpu_s
    figures["acked_events_per_server_cpu_s"] = round(w["acks"] / server_cpu, 1) if server_cpu > 0 else None
    figures["acked_fixes_per_server_cpu_s"] = round(w["accepted"] / server_cpu, 1) if server_cpu > 0 else None
    if w["position_events"]:
        figures["fix_to_viewer_ms"] = latency(w["viewer_ms"])
        figures["viewer_positions_per_s"] = round(w["positions"] / wall, 1)
    return figures


def ratio(a: float | None, b: float | None) -> float | None:
    return rounded(a / b) if a is not None and b else None


def get(figures: dict[str, Any] | None, *path: str) -> Any:
    """figures[path[0]][path[1]]..., None where any step is missing."""
    value: Any = figures
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def ratios(mode: str, tracker: dict[str, Any], bare: dict[str, Any]) -> dict[str, Any]:
    """tracker / bare for the figures a mode is about."""
    if mode == "open":
        t, b = tracker["measure"], bare["measure"]
        return {
            "acked_fixes_per_s": ratio(t["acked_fixes_per_s"], b["acked_fixes_per_s"]),
            "ack_p99_ms": ratio(get(t, "ack_ms", "p99"), get(b, "ack_ms", "p99")),
            "server_cpu_cores": ratio(t["server_cpu_cores"], b["server_cpu_cores"]),
            "rss_per_connection": ratio(
                get(tracker, "memory", "rss_per_connection_kb"), get(bare, "memory", "rss_per_connection_kb")
            ),
        }
    if mode == "closed":
        t, b = tracker["measure"], bare["measure"]
        return {
            "acked_events_per_s": ratio(t["acked_events_per_s"], b["acked_events_per_s"]),
            "acked_fixes_per_s": ratio(t["acked_fixes_per_s"], b["acked_fixes_per_s"]),
            "server_cpu_cores": ratio(t["server_cpu_cores"], b["server_cpu_cores"]),
            "acked_events_per_server_cpu_s": ratio(
                t["acked_events_per_server_cpu_s"], b["acked_events_per_server_cpu_s"]
            ),
            "acked_fixes_per_server_cpu_s": ratio(
                t["acked_fixes_per_server_cpu_s"], b["acked_fixes_per_server_cpu_s"]
            ),
        }
    return {
        "capacity_fixes_per_s": ratio(
            get(tracker, "capacity", "acked_fixes_per_s"), get(bare, "capacity", "acked_fixes_per_s")
        ),
        "overload_acked_fixes_per_s": ratio(
            get(tracker, "overload", "acked_fixes_per_s"), get(bare, "overload", "acked_fixes_per_s")
        ),
    }


def goals(
    mode: str, batch: int, tracker: dict[str, Any], ratio_figures: dict[str, Any] | None
) -> dict[str, Any]:
    """The issue's goals for this mode, each with the measured figure and whether it is met."""

    def goal(value: Any, target: float, at_most: bool) -> dict[str, Any]:
        met = None if value is None else (value <= target if at_most else value >= target)
        return {"value": value, "goal": target, "met": met}

    if mode == "open":
        m = tracker["measure"]
        sent, acked = m["sent_events"], m["sent_events_acked"]
        return {
            "all_acked": {
                "value": f"{acked} of {sent}",
                "met": sent > 0 and acked == sent and not m["retries"],
            },
            "ack_p99_ms": goal(get(m, "ack_ms", "p99"), 100, True),
            "fix_to_viewer_p99_ms": goal(get(m, "fix_to_viewer_ms", "p99"), 250, True),
            "rss_per_connection_vs_bare": goal(get(ratio_figures, "rss_per_connection"), 1.1, True),
        }
    if mode == "closed":
        what, target = ("events", 0.7) if batch == 1 else ("fixes", 0.35)
        return {
            f"{what}_vs_bare": goal(get(ratio_figures, f"acked_{what}_per_s"), target, False),
            # the same per server CPU second: what the goal means when other tenants steal cores
            f"{what}_per_server_cpu_s_vs_bare": goal(
                get(ratio_figures, f"acked_{what}_per_server_cpu_s"), target, False
            ),
        }
    return {
        "overload_acked_vs_capacity": goal(get(tracker, "overload", "acked_vs_capacity"), 0.8, False),
        "overload_answered_within_2s": goal(get(tracker, "overload", "answered_within_2s"), 1.0, False),
        "after_ack_p99_ms": goal(get(tracker, "after", "ack_ms", "p99"), 100, True),
        # phones flush what piled up during their back-off first: how long that takes
        "after_slowest_answer_under_100ms_from_s": {"value": settled_after_s(tracker["after"], 100)},
    }


def settled_after_s(window: dict[str, Any], limit_ms: float) -> int | None:
    """Seconds into a window after which every second's slowest answer stays within `limit_ms`."""
    slowest = window.get("max_ms_by_second") or []
    for second in range(len(slowest)):
        if all(ms <= limit_ms for ms in slowest[second:]):
            return second
    return None
