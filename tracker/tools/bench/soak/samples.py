"""From the soak's samples to its report: one row per sample, then growth, leaks and steadiness.

A row joins what the server looked like at the sample's end (`Vitals`: RSS, descriptors, asyncio
tasks, connections) with what the load saw during the sample: fixes offered and acked, ack latency of
the events sent in it (answered within the next sample, since a window is taken one sample late),
`retry` answers, events dropped with a connection or left unanswered, churn, viewer traffic, and the
CPU of the server, its PostgreSQL backends and the generators. The summary compares the last sample
with the end of the warm-up (RSS) and with the first (descriptors, tasks), and the worst sample's ack
p99 with the median sample's.
"""

from __future__ import annotations

import statistics
from typing import Any

from tracker.tools.bench.fleet.figures import Reading, cpu, latency
from tracker.tools.bench.report import rounded
from tracker.tools.bench.soak.settings import (
    LEAK_SLACK,
    LEAK_SLACK_COUNT,
    RSS_GROWTH_GOAL,
    STEADY_P99_GOAL,
    SoakSettings,
)
from tracker.tools.bench.vitals import Vitals, growth


def row(
    index: int, at_s: float, vitals: Vitals, w: dict[str, Any], begin: Reading, end: Reading
) -> dict[str, Any]:
    """The figures of sample `index` (ending `at_s` seconds into the load): vitals, window `w` (rates
    per second of the window as the generators timed it), and the CPU from `begin` to `end`."""
    wall = float(w["seconds"]) or end.t - begin.t
    events = int(w["events"])
    figures: dict[str, Any] = {
        "sample": index,
        "at_min": round(at_s / 60, 2),
        **vitals.as_report(),
        "offered_fixes_per_s": round(w["generated"] / wall, 1),
        "acked_fixes_per_s": round(w["accepted"] / wall, 1),
        "acked_of_offered": rounded(w["accepted"] / w["generated"] if w["generated"] else None),
        "ack_ms": latency(w["ack_ms"]),
        "sent_events": events,
        "answered_retry": len(w["retry_ms"]),
        "dropped_with_connection": int(w["dropped"]),
        "unanswered": int(w["unanswered"]),
        "answered_within_2s": rounded(w["answered_within_2s"] / events if events else None, 4),
        "errors": int(w["errors"]),
        "churned": int(w["churned"]),
        "reconnects": int(w["reconnects"]),
        "failed_connect_attempts": int(w["connect_failures"]),
        "viewer_events_per_s": round(w["position_events"] / wall, 1),
        "viewer_kib_per_s": round(w["viewer_bytes"] / 1024 / wall, 1),
        "fix_to_viewer_ms_sampled": latency(w["viewer_ms"]),
        **cpu(begin, end),
    }
    return figures


def _counts(rows: list[dict[str, Any]], key: str, baseline: int) -> dict[str, Any]:
    values = [r[key] for r in rows if r[key] is not None]
    first, last = rows[0][key], rows[-1][key]
    return {
        "first": first,
        "after_warmup": rows[baseline][key],
        "last": last,
        "max": max(values) if values else None,
        "growth": growth(first, last),
    }


def summary(rows: list[dict[str, Any]], settings: SoakSettings) -> dict[str, Any]:
    """RSS growth after the warm-up, descriptors and tasks first vs last, ack p99 per sample; goals."""
    baseline = settings.warmup_samples - 1  # rows[0] is sample 1
    rss = {
        "after_warmup_mb": rows[baseline]["rss_mb"],
        "last_mb": rows[-1]["rss_mb"],
        "max_mb": max((r["rss_mb"] for r in rows if r["rss_mb"] is not None), default=None),
        "growth_after_warmup": growth(rows[baseline]["rss_mb"], rows[-1]["rss_mb"]),
    }
    fds = _counts(rows, "open_fds", baseline)
    tasks = _counts(rows, "asyncio_tasks", baseline)
    p99s = [r["ack_ms"]["p99"] for r in rows]
    known = [p for p in p99s if p is not None]
    median = statistics.median(known) if known else None
    worst_vs_median = rounded(max(known) / median if known and median else None)
    offered = sum(r["offered_fixes_per_s"] for r in rows)
    return {
        "rss": rss,
        "open_fds": fds,
        "asyncio_tasks": tasks,
        "ack_p99_ms_by_sample": p99s,
        "ack_p99_ms_median": median,
        "ack_p99_worst_vs_median": worst_vs_median,
        "acked_of_offered": rounded(sum(r["acked_fixes_per_s"] for r in rows) / offered if offered else None),
        "answered_retry": sum(r["answered_retry"] for r in rows),
        "dropped_with_connection": sum(r["dropped_with_connection"] for r in rows),
        "unanswered": sum(r["unanswered"] for r in rows),
        "churned": sum(r["churned"] for r in rows),
        "goals": {
            "rss_growth_after_warmup": _at_most(rss["growth_after_warmup"], RSS_GROWTH_GOAL),
            "open_fds_no_leak": _no_leak(fds),
            "asyncio_tasks_no_leak": _no_leak(tasks),
            "ack_p99_steady": _at_most(worst_vs_median, STEADY_P99_GOAL),
        },
    }


def _at_most(value: float | None, goal: float) -> dict[str, Any]:
    return {"value": value, "goal": goal, "met": value is not None and value <= goal}


def _no_leak(counts: dict[str, Any]) -> dict[str, Any]:
    first, last = counts["first"], counts["last"]
    limit = None if first is None else int(first * (1 + LEAK_SLACK)) + LEAK_SLACK_COUNT
    return {
        "value": {"first": first, "last": last},
        "goal": f"last <= first + {LEAK_SLACK:.0%} + {LEAK_SLACK_COUNT}",
        "met": limit is not None and last is not None and last <= limit,
    }
