"""The simulated city of `tracker bench near`: devices over Berlin, each sending a fix every INTERVAL_MS at
its own phase, cut into the batches live ingest forms (one per BATCH_MS).

Policy: devices are spread like a city's, dense in the centre and thin at the edge (a normal distribution
around Mitte, SPREAD_M at 10,000 devices, scaled with the square root of the count so that a small run
has the same density and so the same events per device); a fifth park, the rest walk, cycle or drive,
turning a little at every fix and heading back when they stray; a few of them park or set off at each
fix, so pairs come near and go far over the run. The same seed gives the same fixes, so every measured
configuration sees the very same batches.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tracker.model import Fix

CENTRE_LATLON = (52.5200, 13.4050)  # Berlin Mitte
SPREAD_M = 5_000.0  # standard deviation of the devices' distance from the centre, at 10,000 devices
INTERVAL_MS = 5_000  # each device sends a fix every 5 s
BATCH_MS = 100  # the batches live ingest forms: what arrived in 100 ms
T0_MS = 1_767_225_600_000  # 2026-01-01T00:00Z, the first batch's start
M_PER_DEG_LAT = 111_320.0
GPS_NOISE_M = 3.0  # a parked device's fixes scatter this much (standard deviation per axis)
TURN_SD_DEG = 25.0  # a moving device's heading changes this much per fix (standard deviation)
SWITCH_P = 0.01  # per fix, the chance that a parked device sets off or a moving one parks
# Speeds of a moving device, m/s, by fleet kind: (low, high); others draw a kind at random.
SPEEDS = {"walk": (1.0, 2.0), "cycle": (3.0, 6.0), "drive": (6.0, 14.0)}
PARKED_SHARE = 0.2
SIDE_A, SIDE_B = "vans", "bikes"  # the near rule's two fleets

Floats = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Fleets:
    """Which devices belong to which fleet: the near rule's two sides first, then the rest."""

    names: tuple[str, ...]  # per device

    @classmethod
    def split(cls, devices: int, near_devices: int) -> Fleets:
        """Half of `near_devices` in SIDE_A, the other half in SIDE_B, the rest over four other fleets."""
        vans = near_devices // 2
        others = ("couriers", "cars", "taxis", "scooters")
        names = [SIDE_A if i < vans else SIDE_B for i in range(near_devices)]
        names += [others[i % len(others)] for i in range(devices - near_devices)]
        return cls(tuple(names))


class City:
    """Every device's position and motion; `batches()` moves them and yields the fixes batch by batch."""

    def __init__(self, fleets: Fleets, seed: int) -> None:
        n = len(fleets.names)
        self.fleets = fleets
        self.devices = [f"dev-{i:05d}" for i in range(n)]
        self.rng = np.random.default_rng(seed)
        rng = self.rng
        self.spread_m = SPREAD_M * math.sqrt(n / 10_000)
        north, east = rng.normal(0.0, self.spread_m, n), rng.normal(0.0, self.spread_m, n)
        self.lat0, self.lon0 = CENTRE_LATLON
        self.north, self.east = north, east  # metres from the centre
        self.anchor_n, self.anchor_e = north.copy(), east.copy()  # where a parked device stands
        kinds = np.array([_kind(name) for name in fleets.names])
        mixed = kinds == ""
        kinds[mixed] = rng.choice(list(SPEEDS), int(mixed.sum()))
        low = np.array([SPEEDS[k][0] for k in kinds])
        high = np.array([SPEEDS[k][1] for k in kinds])
        self.cruise = rng.uniform(low, high)  # m/s while moving
        self.parked = rng.random(n) < PARKED_SHARE
        self.heading = rng.uniform(0.0, 2 * math.pi, n)
        phase = rng.integers(0, INTERVAL_MS, n)
        self.order = np.argsort(phase, kind="stable")
        self.phase = phase[self.order]  # sorted, with `order` the device of each

    def __len__(self) -> int:
        return len(self.devices)

    def seed_fixes(self) -> list[Fix]:
        """Every device's position just before the first batch, as the live index holds it at start."""
        lat, lon = self._latlon(np.arange(len(self)))
        return [
            Fix(d, f, T0_MS - INTERVAL_MS, float(y), float(x))
            for d, f, y, x in zip(self.devices, self.fleets.names, lat, lon, strict=True)
        ]

    def batches(self, seconds: float) -> Iterator[list[Fix]]:
        """The batches of `seconds` of simulated time, in order: each device that reports within a batch's
        BATCH_MS moves by its speed over INTERVAL_MS and sends one fix."""
        for b in range(int(seconds * 1000) // BATCH_MS):
            start = b * BATCH_MS
            cycle, offset = divmod(start, INTERVAL_MS)
            lo, hi = np.searchsorted(self.phase, [offset, offset + BATCH_MS])
            who = self.order[lo:hi]
            self._move(who)
            lat, lon = self._latlon(who)
            ts = T0_MS + cycle * INTERVAL_MS + self.phase[lo:hi]
            speed = np.where(self.parked[who], 0.0, self.cruise[who])
            heading = np.degrees(self.heading[who]) % 360
            yield [
                Fix(
                    self.devices[i], self.fleets.names[i], int(t), float(y), float(x), float(s), float(h), 8.0
                )
                for i, t, y, x, s, h in zip(who.tolist(), ts, lat, lon, speed, heading, strict=True)
            ]

    def _move(self, who: npt.NDArray[np.intp]) -> None:
        """Move `who` on by one fix interval: parked ones scatter around their spot, the others turn a little
        and go on (back towards the centre when beyond 2.5 spreads); a few change between the two."""
        rng, k = self.rng, len(who)
        switch = rng.random(k) < SWITCH_P
        now_parked = self.parked[who] ^ switch
        self.parked[who] = now_parked
        setting_off = who[switch & ~now_parked]
        parking = who[switch & now_parked]
        self.anchor_n[parking], self.anchor_e[parking] = self.north[parking], self.east[parking]
        self.north[setting_off], self.east[setting_off] = (
            self.anchor_n[setting_off],
            self.anchor_e[setting_off],
        )
        heading = self.heading[who] + np.radians(rng.normal(0.0, TURN_SD_DEG, k))
        far = np.hypot(self.north[who], self.east[who]) > 2.5 * self.spread_m
        heading[far] = np.arctan2(-self.east[who][far], -self.north[who][far])
        self.heading[who] = heading
        step = self.cruise[who] * INTERVAL_MS / 1000
        moving = who[~now_parked]
        self.north[moving] += (step * np.cos(heading))[~now_parked]
        self.east[moving] += (step * np.sin(heading))[~now_parked]
        still = who[now_parked]
        self.north[still] = self.anchor_n[still] + rng.normal(0.0, GPS_NOISE_M, len(still))
        self.east[still] = self.anchor_e[still] + rng.normal(0.0, GPS_NOISE_M, len(still))

    def _latlon(self, who: npt.NDArray[np.intp]) -> tuple[Floats, Floats]:
        lat = self.lat0 + self.north[who] / M_PER_DEG_LAT
        lon = self.lon0 + self.east[who] / (M_PER_DEG_LAT * math.cos(math.radians(self.lat0)))
        return lat, lon


def _kind(fleet: str) -> str:
    """The motion of a fleet's devices: vans and cars drive, bikes and couriers cycle; "" for a mix."""
    return {"vans": "drive", "cars": "drive", "taxis": "drive", "bikes": "cycle", "couriers": "cycle"}.get(
        fleet, ""
    )
