"""The bench's devices: their ids and fleets, how they move around central Berlin, and how many of them
move now. The load generator and the feed walk them alike."""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import AsyncIterator
from typing import Any

FLEETS = ("couriers", "vans", "bikes", "trucks")
CENTER = (13.405, 52.52)  # lon, lat: central Berlin
RADIUS_M = 8000.0
M_PER_DEG = 111_320.0
TOP_SPEED = {"couriers": 12.0, "vans": 16.0, "bikes": 7.0, "trucks": 14.0}  # m/s


def device_id(i: int) -> str:
    """The i-th bench device: fleets in turn, as registered for the server feed."""
    fleet = FLEETS[i % len(FLEETS)]
    return f"{fleet}-{i:05d}"


class Walk:
    """Plausible movement around central Berlin: speed and heading drift, the edge turns devices back."""

    def __init__(self, n: int, seed: int) -> None:
        rng = random.Random(seed)
        self.rng = rng
        self.lat: list[float] = []
        self.lon: list[float] = []
        self.heading: list[float] = []
        self.speed: list[float] = []
        self.top = [TOP_SPEED[FLEETS[i % len(FLEETS)]] for i in range(n)]
        for i in range(n):
            r = RADIUS_M * math.sqrt(rng.random())
            a = rng.uniform(0, 2 * math.pi)
            lat = CENTER[1] + r * math.cos(a) / M_PER_DEG
            self.lat.append(lat)
            self.lon.append(CENTER[0] + r * math.sin(a) / (M_PER_DEG * math.cos(math.radians(lat))))
            self.heading.append(rng.uniform(0, 360))
            self.speed.append(rng.uniform(0.2, 0.8) * self.top[i])

    def step(self, i: int, dt: float) -> dict[str, Any]:
        rng = self.rng
        speed = min(self.top[i], max(0.5, self.speed[i] + rng.gauss(0, 0.8)))
        heading = (self.heading[i] + rng.gauss(0, 12)) % 360
        lat, lon = self.lat[i], self.lon[i]
        cos_lat = math.cos(math.radians(lat))
        north = (lat - CENTER[1]) * M_PER_DEG
        east = (lon - CENTER[0]) * M_PER_DEG * cos_lat
        if math.hypot(north, east) > RADIUS_M:  # head back towards the centre
            heading = math.degrees(math.atan2(-east, -north)) % 360
        d = speed * dt
        lat += d * math.cos(math.radians(heading)) / M_PER_DEG
        lon += d * math.sin(math.radians(heading)) / (M_PER_DEG * cos_lat)
        self.lat[i], self.lon[i], self.heading[i], self.speed[i] = lat, lon, heading, speed
        return {
            "lat": round(lat, 6),
            "lon": round(lon, 6),
            "ts": int(time.time() * 1000),
            "speed": round(speed, 2),
            "heading": round(heading, 1),
            "accuracy": 5.0,
        }


class Active:
    """How many of the first devices move now, as the bench's `send` command sets it: `rounds` waits while
    none does and yields the count each time it changes; a round lasts until `changed` is set."""

    def __init__(self, devices: int) -> None:
        self.devices = devices
        self.count = 0
        self.changed = asyncio.Event()

    def set(self, k: int) -> None:
        self.count = max(0, min(k, self.devices))
        self.changed.set()

    async def rounds(self) -> AsyncIterator[int]:
        while True:
            if self.count == 0:
                await self.changed.wait()
                self.changed.clear()
                continue
            yield self.count
            self.changed.clear()
