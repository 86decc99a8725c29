"""The simulated fleet: how each kind of vehicle moves, what each fleet's shift is like, and which
vehicles there are (`plan`). Plain data, no randomness: the shift draws from these ranges per vehicle."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

DAY_START = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Kind:
    """How a kind of vehicle moves: cruise speeds (m/s, per vehicle within a range), turns, lights."""

    name: str
    main_speed: tuple[float, float]
    side_speed: tuple[float, float]
    turn_speed: float
    accel: float  # m/s²
    decel: float
    red_light: float  # probability of waiting at a crossing
    by_time: bool  # route by travel time (else by distance)
    interval_s: tuple[int, ...]  # the phone's fix interval while moving, one per vehicle


BIKE = Kind("cargo bike", (5.0, 6.4), (4.2, 5.6), 3.5, 0.6, 1.2, 0.12, False, (3, 4))
SCOOTER = Kind("scooter", (10.3, 12.0), (7.0, 8.3), 4.0, 1.2, 2.0, 0.15, True, (3, 4))
VAN = Kind("van", (12.5, 13.9), (7.5, 8.9), 4.5, 1.3, 2.0, 0.2, True, (2, 3, 4))
MOVING_INTERVAL_S = (2, 5)  # the kinds' intervals, and one second more now and then


@dataclass(frozen=True, slots=True)
class Duty:
    """What a fleet's shift is like: start, loading, customers and stops (minutes), its district."""

    start_within_min: int  # shifts start this long after DAY_START at most
    load_min: tuple[float, float]  # loading at the start (vehicles marked long_load: LONG_LOAD_MIN)
    customers: tuple[int, int]
    stop_min: tuple[float, float]
    shift_min: tuple[float, float]  # customers are added while the shift fits this (at least the minimum)
    district_m: float  # radius of the delivery district
    addresses: int  # candidate addresses drawn in it


COURIER_DUTY = Duty(60, (3.0, 12.0), (6, 9), (2.0, 6.0), (40.0, 65.0), 1100.0, 14)
VAN_DUTY = Duty(40, (5.0, 12.0), (8, 13), (2.0, 8.0), (75.0, 100.0), 1600.0, 25)
DUTIES = {"couriers": COURIER_DUTY, "vans": VAN_DUTY}
LONG_LOAD_MIN = (16.0, 24.0)  # more than the 15 minutes of the depot dwell rule
RETURN_STOP_MIN = (2.0, 6.0)


@dataclass(frozen=True, slots=True)
class Vehicle:
    """One simulated vehicle: its device id (the file name), fleet, kind, file format, and its role."""

    device: str
    fleet: str
    number: int  # within its fleet, from 1: with the seed, it picks the vehicle's random generator
    kind: Kind
    fmt: str  # gpx | csv | geojson
    base: str  # the depot or hub it starts and ends at
    long_load: bool  # loads for more than 15 minutes at the start
    special: str  # "" | "quarter" (drives through the government quarter) | "tunnel" (under it)

    @property
    def filename(self) -> str:
        return f"{self.device}.{self.fmt}"


def plan(couriers: int, vans: int) -> list[Vehicle]:
    """The fleet: couriers (GPX, some on scooters) and vans (CSV); the last of each as GeoJSON."""
    out: list[Vehicle] = []
    bases = ("depot-wedding", "depot-kreuzberg", "hub-alexanderplatz")
    for i in range(1, couriers + 1):
        kind = SCOOTER if i % 6 in (3, 5) else BIKE
        fmt = "geojson" if i == couriers and couriers >= 4 else "gpx"
        base = bases[(i - 1) % 3]
        out.append(Vehicle(f"courier-{i:02d}", "couriers", i, kind, fmt, base, i % 4 == 1, ""))
    for i in range(1, vans + 1):
        fmt = "geojson" if i == vans and vans >= 4 else "csv"
        special = {1: "quarter", 2: "tunnel"}.get(i, "")
        out.append(Vehicle(f"van-{i:02d}", "vans", i, VAN, fmt, bases[i % 2], i % 2 == 1, special))
    return out
