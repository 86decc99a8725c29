"""What a long bench watches on the server it runs, as an operator's monitoring would: resident memory
and open file descriptors from /proc, asyncio tasks and connected sockets from its /metrics.

Policy: each reading is one instant, taken from outside the server; a figure that cannot be read (the
process is gone, /metrics does not answer within SCRAPE_TIMEOUT_S) is None. Memory and descriptors
are of the server's whole process tree (one process unless `--workers`); the metrics are those of the
process that answered the scrape. Used by `tracker bench storm` (before a restart and after recovery)
and `tracker bench soak` (every minute).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import httpx

from tracker.tools.bench.probe import parse_metrics
from tracker.tools.bench.procfs import tree_open_fds, tree_rss_bytes
from tracker.tools.bench.report import rounded

SCRAPE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Vitals:
    """One reading of the server: RSS (MiB), open descriptors, and from /metrics its asyncio tasks and
    open device and viewer connections."""

    rss_mb: float | None
    open_fds: int | None
    asyncio_tasks: int | None
    connected_devices: int | None
    connected_viewers: int | None

    def as_report(self) -> dict[str, Any]:
        return {
            "rss_mb": self.rss_mb,
            "open_fds": self.open_fds,
            "asyncio_tasks": self.asyncio_tasks,
            "connected_devices": self.connected_devices,
            "connected_viewers": self.connected_viewers,
        }


async def read_vitals(pid: int, url: str) -> Vitals:
    """The vitals of the server process tree `pid` listening on `url` (a coroutine: it scrapes
    `url`/metrics)."""
    text = await scrape(url)
    metrics = parse_metrics(text) if text is not None else {}
    rss = tree_rss_bytes(pid)
    fds = tree_open_fds(pid)
    return Vitals(
        rounded(rss / 2**20, 1) if rss else None,
        fds or None,
        _count(metrics.get("tracker_asyncio_tasks")),
        _count(metrics.get("tracker_connected_devices")),
        _count(metrics.get("tracker_connected_viewers")),
    )


async def scrape(url: str) -> str | None:
    """The server's /metrics exposition, None when it does not answer 200 within SCRAPE_TIMEOUT_S."""
    try:
        async with httpx.AsyncClient(timeout=SCRAPE_TIMEOUT_S) as http:
            response = await http.get(url + "/metrics")
    except httpx.HTTPError:
        return None
    return response.text if response.status_code == 200 else None


def growth(first: float | None, last: float | None) -> float | None:
    """last / first - 1, rounded; None when either is missing or first is 0."""
    return None if first is None or last is None or not first else rounded(last / first - 1, 4)


def _count(value: float | None) -> int | None:
    return None if value is None or math.isnan(value) else int(value)
