"""What one `tracker bench soak` run is asked to do, checked once, before anything starts.

The defaults are the case the bench exists for: 10,000 phones at one fix per 10 s over 5 fleets, 20
viewers each subscribed to one of them, 1 % of the devices losing their connection each minute, for 30
minutes, sampled every minute. Memory growth is measured from the end of the warm-up (default: the
first sixth of the run, at most 5 minutes, at least one sample) to the last sample.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tracker.tools.bench.flags import check_range
from tracker.tools.bench.report import BenchError

DEFAULT_DEVICES = 10_000
MAX_DEVICES = 20_000
RSS_GROWTH_GOAL = 0.05  # after the warm-up, at most 5 % more resident memory at the end
LEAK_SLACK = 0.02  # descriptors and tasks: the last sample at most 2 % (+ LEAK_SLACK_COUNT) over the first
LEAK_SLACK_COUNT = 10
STEADY_P99_GOAL = 2.0  # the worst sample's ack p99 at most this times the median sample's


@dataclass(frozen=True)
class SoakSettings:
    """One run: the fleet, its viewers and churn, how long, how often it is sampled."""

    devices: int
    minutes: float
    interval: float  # seconds between two fixes of a device
    viewers: int
    fleets: int
    churn_percent: float  # of the devices, dropped (and reconnecting) per minute
    warmup_samples: int  # samples before the baseline of RSS growth (the baseline is this sample)
    sample_s: float
    server_env: dict[str, str] = field(default_factory=dict)
    generators: int = 1
    connect_rate: float = 2_000.0  # first connections per second, all generators together
    connect_concurrency: int = 400
    parse_every: int = 10  # viewers parse one positions event in this many (lean)

    @property
    def samples(self) -> int:
        return int(self.minutes * 60 // self.sample_s)

    def as_report(self) -> dict[str, Any]:
        return {
            "devices": self.devices,
            "minutes": self.minutes,
            "fix_interval_s": self.interval,
            "viewers": self.viewers,
            "fleets": self.fleets,
            "churn_percent_per_minute": self.churn_percent,
            "sample_s": self.sample_s,
            "samples": self.samples,
            "warmup_samples": self.warmup_samples,
            "server_env": self.server_env,
            "generators": self.generators,
            "viewer_parses_one_event_in": self.parse_every,
            "reconnect_backoff": "socket.io-client's: 1 s doubling to 5 s, +-50 % jitter",
        }


def build_settings(
    devices: int,
    minutes: float,
    interval: float,
    viewers: int,
    fleets: int,
    churn_percent: float,
    warmup_minutes: float | None,
    sample_s: float,
    server_env: dict[str, str],
    generators: int = 1,
) -> SoakSettings:
    """The checked settings of a run; BenchError names the flag that is out of range."""
    check_range("--devices", devices, 1, MAX_DEVICES)
    check_range("--minutes", minutes, 0.1, 24 * 60)
    check_range("--interval", interval, 0.1, 600, " seconds")
    check_range("--viewers", viewers, 0, 200)
    check_range("--fleets", fleets, 1, min(100, devices))
    check_range("--churn", churn_percent, 0, 100, " percent per minute")
    check_range("--sample-s", sample_s, 2, 600, " seconds")
    if not 1 <= generators <= 16 or generators > devices:
        raise BenchError(f"--generators must be between 1 and min(16, devices); got {generators}")
    samples = int(minutes * 60 // sample_s)
    if samples < 2:
        raise BenchError(
            f"--minutes must last at least two samples of --sample-s {sample_s:g} s; got {minutes:g} minutes"
        )
    warmup = min(5.0, minutes / 6) if warmup_minutes is None else warmup_minutes
    warmup_samples = max(1, round(warmup * 60 / sample_s))
    if warmup_minutes is not None:
        check_range("--warmup-minutes", warmup_minutes, 0, minutes)
    if warmup_samples >= samples:
        raise BenchError(
            f"--warmup-minutes must leave at least one sample after it; got {warmup:g} minutes "
            f"of a {minutes:g}-minute run sampled every {sample_s:g} s"
        )
    return SoakSettings(
        devices,
        minutes,
        interval,
        viewers,
        fleets,
        churn_percent,
        warmup_samples,
        sample_s,
        server_env,
        generators,
    )
