"""What one run measures (`MapSettings`), the names of its feeds, and when a loaded window may start."""

from __future__ import annotations

from dataclasses import dataclass, field

FEEDS = ("server", "redis")
FEED_LABELS = {"server": "through the server", "redis": "page at target rate"}
SECTIONS = {"server": "through_the_server", "redis": "page_at_target_rate"}
KNOWN_SHARE = 0.95  # a loaded window starts once the page knows this share of the sending devices
MIN_WARMUP_PERIODS = 3  # ... and the devices have sent at least this many fixes each


@dataclass
class MapSettings:
    counts: list[int]
    seconds: float
    warmup: float
    rate: float
    screenshot: str | None
    feeds: list[str] = field(default_factory=lambda: list(FEEDS))
    clusters: bool = (
        False  # also measure each loaded window zoomed out to CLUSTER_ZOOM, where devices cluster
    )
