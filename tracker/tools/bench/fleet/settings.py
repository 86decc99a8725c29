"""What one `tracker bench fleet` run is asked to do, checked once, before anything starts.

A mode's defaults are the load it exists to measure: the open loop holds a city fleet (10,000 devices,
one fix per 5 s), the closed loop measures capacity (200 devices), overload offers twice the capacity of
2,000 devices. A flag given on the command line wins over the mode's default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tracker.tools.bench.flags import check_range
from tracker.tools.bench.fleet.bare import GC_MODES
from tracker.tools.bench.report import BenchError

MODES = ("open", "closed", "overload")
SERVERS = ("tracker", "bare")
DEFAULT_DEVICES = {"open": 10_000, "closed": 200, "overload": 2_000}
MAX_DEVICES = 20_000
CAPACITY_S = 10.0  # overload: the closed-loop window that measures capacity
OVERLOAD_FACTOR = 2.0
AFTER_FACTOR = 0.5  # overload: the load after the overload, as a share of capacity


@dataclass(frozen=True)
class FleetSettings:
    """One run: the mode and its load, the servers to measure and how the generator connects."""

    mode: str
    devices: int
    rate: float  # open loop: fixes per second per device
    seconds: float  # open and closed: the measured window; overload: the overloaded window
    warmup: float
    batch: int  # closed loop: fixes per event
    workers: int | None
    server_env: dict[str, str] = field(default_factory=dict)
    servers: tuple[str, ...] = SERVERS
    generators: int = 1
    connect_rate: float = 2_000.0  # new sockets per second, all generators together
    connect_concurrency: int = 400  # handshakes open at once, all generators together
    bare_gc: str = "apply"  # the bare server's collector: see tracker.tools.bench.fleet.bare

    @property
    def capacity_seconds(self) -> float:
        """Overload: the closed-loop window that measures capacity (shorter only in very short runs)."""
        return min(CAPACITY_S, self.seconds)

    @property
    def after_seconds(self) -> float:
        """Overload: how long the reduced load runs after the overload."""
        return self.seconds / 2

    def as_report(self) -> dict[str, Any]:
        report: dict[str, Any] = {
            "mode": self.mode,
            "devices": self.devices,
            "seconds": self.seconds,
            "warmup_s": self.warmup,
            "workers": self.workers,
            "server_env": self.server_env,
            "servers": list(self.servers),
            "generators": self.generators,
            "connect_rate_per_s": self.connect_rate,
            "bare_gc": self.bare_gc,
        }
        if self.mode == "open":
            report["rate_per_device"] = self.rate
        if self.mode == "closed":
            report["batch"] = self.batch
        if self.mode == "overload":
            report.update(
                capacity_s=self.capacity_seconds,
                overload_factor=OVERLOAD_FACTOR,
                after_factor=AFTER_FACTOR,
                after_s=self.after_seconds,
            )
        return report


def build_settings(
    mode: str,
    devices: int | None,
    rate: float,
    seconds: float,
    warmup: float,
    batch: int,
    workers: int | None,
    server_env: dict[str, str],
    servers: str = ",".join(SERVERS),
    generators: int = 1,
    bare_gc: str = "apply",
) -> FleetSettings:
    """The checked settings of a run; BenchError names the flag that is out of range."""
    if mode not in MODES:
        raise BenchError(f"the mode must be one of {', '.join(MODES)}; got {mode!r}")
    n = DEFAULT_DEVICES[mode] if devices is None else devices
    check_range("--devices", n, 1, MAX_DEVICES)
    check_range("--rate", rate, 0.001, 100, " fixes/s per device")
    check_range("--seconds", seconds, 1, 600)
    check_range("--warmup", warmup, 0, 600)
    check_range("--batch", batch, 1, 1000, " fixes per event")
    if workers is not None:
        check_range("--workers", workers, 1, 64)
    if not 1 <= generators <= 16 or generators > n:
        raise BenchError(f"--generators must be between 1 and min(16, devices); got {generators}")
    chosen = tuple(s for s in SERVERS if s in {p.strip() for p in servers.split(",") if p.strip()})
    if not chosen or {p.strip() for p in servers.split(",") if p.strip()} - set(SERVERS):
        raise BenchError(f"--servers takes tracker, bare or both, comma-separated; got {servers!r}")
    if bare_gc not in GC_MODES:
        raise BenchError(f"--bare-gc takes one of {', '.join(GC_MODES)}; got {bare_gc!r}")
    return FleetSettings(
        mode, n, rate, seconds, warmup, batch, workers, server_env, chosen, generators, bare_gc=bare_gc
    )
