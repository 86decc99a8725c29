"""What one `tracker bench storm` run is asked to do, checked once, before anything starts.

The defaults are the case the bench exists for: a city fleet of 10,000 phones, each sending a fix every
5 s, through a graceful restart (SIGTERM) and a crash (`kill -9`) of the server, each given up to
3 minutes to recover (the goal is 60 s). A device crosses the run's fence every 6 fixes (30 s), so that
fence events fire around each restart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tracker.tools.bench.flags import check_range
from tracker.tools.bench.report import BenchError

RESTARTS = ("sigterm", "kill")  # the signal each restart sends: SIGTERM (graceful), SIGKILL (a crash)
DEFAULT_DEVICES = 10_000
MAX_DEVICES = 20_000
RECOVERY_GOAL_S = 60.0
RSS_GOAL = 1.1  # after recovery, at most this times the RSS before the restart: memory back to its level


@dataclass(frozen=True)
class StormSettings:
    """One run: the fleet and its load, the restarts and how long each may take."""

    devices: int
    interval: float  # seconds between two fixes of a device
    warmup: float  # seconds of load before the first restart
    settle: float  # seconds of load after a recovery, before memory is read (and the next restart)
    recovery_timeout: float  # seconds after the signal before the devices still out are given up
    cross_every: int  # fixes between two fence crossings of a device (0: no fence)
    restarts: tuple[str, ...]
    server_env: dict[str, str] = field(default_factory=dict)
    generators: int = 1
    connect_rate: float = 2_000.0  # first connections per second, all generators together
    connect_concurrency: int = 400  # first handshakes open at once, all generators together

    def as_report(self) -> dict[str, Any]:
        return {
            "devices": self.devices,
            "fix_interval_s": self.interval,
            "warmup_s": self.warmup,
            "settle_s": self.settle,
            "recovery_timeout_s": self.recovery_timeout,
            "cross_every_fixes": self.cross_every,
            "restarts": list(self.restarts),
            "server_env": self.server_env,
            "generators": self.generators,
            "connect_rate_per_s": self.connect_rate,
            "reconnect_backoff": "socket.io-client's: 1 s doubling to 5 s, +-50 % jitter; unacked fixes "
            "and those taken offline sent again in one batch on reconnect",
        }


def build_settings(
    devices: int,
    interval: float,
    warmup: float,
    settle: float,
    recovery_timeout: float,
    cross_every: int,
    restarts: str,
    server_env: dict[str, str],
    generators: int = 1,
) -> StormSettings:
    """The checked settings of a run; BenchError names the flag that is out of range."""
    check_range("--devices", devices, 1, MAX_DEVICES)
    check_range("--interval", interval, 0.1, 600, " seconds")
    check_range("--warmup", warmup, 0, 600, " seconds")
    check_range("--settle", settle, 0, 600, " seconds")
    check_range("--recovery-timeout", recovery_timeout, 5, 1800, " seconds")
    check_range("--cross-every", cross_every, 0, 10_000, " fixes")
    if not 1 <= generators <= 16 or generators > devices:
        raise BenchError(f"--generators must be between 1 and min(16, devices); got {generators}")
    kinds = tuple(p.strip() for p in restarts.split(",") if p.strip())
    if not kinds or set(kinds) - set(RESTARTS) or len(set(kinds)) < len(kinds):
        raise BenchError(
            f"--restarts takes sigterm and kill, comma-separated, in any order; got {restarts!r}"
        )
    return StormSettings(
        devices, interval, warmup, settle, recovery_timeout, cross_every, kinds, server_env, generators
    )
