"""The active trips this process evaluates, by device, and each such device's moving speed.

Only `started` and `approaching` trips live here: an arrived or ended trip moves with no fix. The book
follows the fence state: a device taken by this process (`GeofenceEngine.take`) gets exactly its stored
active trips (`replace`); a trip created, completed or cancelled anywhere is announced (NOTIFY) and
merged in (`merge`), never moving a trip backwards; a committed batch is applied (`apply`), except to
trips that ended meanwhile.
"""

from __future__ import annotations

from collections.abc import Iterable

from tracker.trips.changes import TripDetection
from tracker.trips.eta import WARMUP_S, Speed
from tracker.trips.model import ACTIVE, STATUSES, Trip


class TripBook:
    """Active trips by device (`active[device][trip id]`, each device's dict copied on write) and the
    speeds of their devices."""

    def __init__(self) -> None:
        self.active: dict[str, dict[str, Trip]] = {}
        self.speeds: dict[str, Speed] = {}
        self._device_of: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._device_of)

    def get(self, trip_id: str) -> Trip | None:
        """The trip as this process last evaluated it, None when it is not active here."""
        device = self._device_of.get(trip_id)
        return None if device is None else self.active[device].get(trip_id)

    def put(self, trip: Trip) -> None:
        """Hold `trip` (or drop it, when it is no longer active)."""
        if trip.status not in ACTIVE:
            self.remove(trip.id)
            return
        # Copy on write: a device's dict is never changed once made, so an evaluation in a worker
        # thread may hold it while the event loop puts or removes trips.
        self.active[trip.device] = {**self.active.get(trip.device, {}), trip.id: trip}
        self._device_of[trip.id] = trip.device
        if trip.device not in self.speeds and trip.speed_mps is not None:
            self.speeds[trip.device] = Speed(trip.speed_mps, WARMUP_S)

    def remove(self, trip_id: str) -> None:
        device = self._device_of.pop(trip_id, None)
        if device is None:
            return
        mine = {k: t for k, t in self.active[device].items() if k != trip_id}
        if mine:
            self.active[device] = mine
        else:
            del self.active[device]
            self.speeds.pop(device, None)

    def replace(self, device: str, trips: Iterable[Trip]) -> None:
        """The device was taken: its active trips are exactly the stored `trips`."""
        self.forget(device)
        newest = None
        for trip in trips:
            self.put(trip)
            if trip.speed_mps is not None and (newest is None or (trip.progress_ts or 0) > newest[0]):
                newest = (trip.progress_ts or 0, trip.speed_mps)
        if newest is not None and device in self.active:
            self.speeds[device] = Speed(newest[1], WARMUP_S)

    def merge(self, device: str, trips: Iterable[Trip]) -> None:
        """A trip of `device` was created or ended somewhere: `trips` are its stored active trips now.
        New ones are added, ended ones dropped, and none goes back to an earlier status."""
        stored = {t.id: t for t in trips}
        for trip_id in list(self.active.get(device, {})):
            if trip_id not in stored:
                self.remove(trip_id)
        for trip in stored.values():
            held = self.get(trip.id)
            if held is None or STATUSES.index(trip.status) > STATUSES.index(held.status):
                self.put(trip)

    def apply(self, detection: TripDetection) -> None:
        """Make a committed batch's trips current (trips ended meanwhile stay ended)."""
        written = set(detection.writes) - detection.lost
        for trip_id, trip in detection.trips.items():
            if trip_id in detection.lost:
                self.remove(trip_id)
            elif self.get(trip_id) is not None:
                if trip_id in written:
                    trip.saved_ts = trip.progress_ts  # stored with this batch
                self.put(trip)
        for trip, eta_ts, remaining, progress_ts, speed_mps in detection.progress:
            # The one change in place, cheaper than a new Trip per fix; a Trip no longer held (ended or
            # replaced meanwhile) is changed harmlessly.
            trip.eta_ts, trip.remaining_m, trip.progress_ts, trip.speed_mps = (
                eta_ts,
                remaining,
                progress_ts,
                speed_mps,
            )
        for device, speed in detection.speeds.items():
            if device in self.active:
                self.speeds[device] = speed

    def forget(self, device: str) -> None:
        """Drop everything held of `device` (taken by another process, or erased)."""
        for trip_id in list(self.active.get(device, {})):
            self.remove(trip_id)
        self.speeds.pop(device, None)
