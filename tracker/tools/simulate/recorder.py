"""Recording one vehicle's shift as its phone would: driving a route with acceleration, braking for
turns and red lights, standing at stops, and the fixes taken meanwhile.

Policy: fixes are whole seconds, every 2-5 s while moving and every 30-60 s while standing. True
positions get time-correlated Gaussian noise with a matching `accuracy`; gaps (tunnels) and jumps
(multipath) are injected at the rates below (the README states them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import shapely

from tracker.tools.simulate.city import QUARTER, City, Route, to_lonlat, xy_of
from tracker.tools.simulate.vehicles import Vehicle

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]

SIGMA_M = (3.0, 8.0)  # per-axis standard deviation of the position error, per device
ACCURACY_PER_SIGMA = 1.5  # accuracy = the 68 % radius of a 2-D Gaussian (Android's definition)
NOISE_TAU_S = 30.0  # correlation time of the error: fixes a few seconds apart err alike
JUMP_RATE = 1 / 250  # probability that a fix while moving is a multipath jump
JUMP_M = (100.0, 400.0)
JUMP_ACCURACY_M = (50.0, 150.0)
GAP_RATE_PER_H = 2.0  # gaps per hour of driving
GAP_S = (30, 180)
STOP_INTERVAL_S = (30, 60)  # phones save battery while the vehicle stands
TUNNEL_MARGIN_M = 80.0  # the van in the Tiergarten tunnel has no fix this close to the quarter


@dataclass(slots=True)
class SimTrack:
    """One vehicle's generated fixes (rounded as written) and what happened on its shift."""

    vehicle: Vehicle
    ts: Ints  # ms since the epoch
    lat: Floats
    lon: Floats
    speed: Floats  # m/s
    heading: Ints  # degrees 0..359
    accuracy: Floats  # metres
    customers: int
    load_s: float  # loading at the start
    gaps: int
    jumps: int
    distance_m: float
    driving_s: float


class ShiftRecorder:
    """Builds one vehicle's fixes along its itinerary: true positions first, noise at the end."""

    def __init__(self, city: City, v: Vehicle, rng: np.random.Generator) -> None:
        self.city, self.v, self.kind, self.rng = city, v, v.kind, rng
        k = v.kind
        self.main_v = float(rng.uniform(*k.main_speed))
        self.side_v = float(rng.uniform(*k.side_speed))
        self.interval = int(rng.choice(k.interval_s))
        self.cost = [
            float(length) / ((self.main_v if main else self.side_v) if k.by_time else 1.0)
            for length, main in zip(city.length.tolist(), city.main.tolist(), strict=True)
        ]
        self.now = 0.0  # seconds since the shift's start
        self.t: list[int] = []
        self.x: list[float] = []
        self.y: list[float] = []
        self.vel: list[float] = []
        self.hdg: list[float] = []
        self.moving: list[bool] = []
        self.jump: list[bool] = []
        self.heading = float(rng.uniform(0, 360))
        self.gaps = 0
        self.owed_gaps = 0
        self.distance = 0.0
        self.driving = 0.0
        w, s = xy_of(QUARTER[:2])
        e, n = xy_of(QUARTER[2:])
        self.tunnel = shapely.box(w, s, e, n).buffer(TUNNEL_MARGIN_M) if v.special == "tunnel" else None

    def _emit(self, t: int, x: float, y: float, vel: float, hdg: float, moving: bool) -> None:
        self.t.append(t)
        self.x.append(x)
        self.y.append(y)
        self.vel.append(vel)
        self.hdg.append(hdg)
        self.moving.append(moving)
        self.jump.append(False)

    def stop(self, at: tuple[float, float], seconds: float) -> None:
        """Stand at `at`: a fix on arrival, then every 30-60 s, and one when moving off."""
        t = max(math.ceil(self.now), self.t[-1] + 1 if self.t else 0)
        end = self.now + seconds
        while t < end - 5:
            self._emit(t, at[0], at[1], 0.0, self.heading, False)
            t += int(self.rng.integers(STOP_INTERVAL_S[0], STOP_INTERVAL_S[1] + 1))
        self._emit(max(math.ceil(end), self.t[-1] + 1), at[0], at[1], 0.0, self.heading, False)
        self.now = float(self.t[-1])

    def drive(self, path: Route) -> None:
        """Drive along `path`, a fix every few seconds, with gaps and jumps."""
        pts = np.array(path.pts, dtype=np.float64)
        seg = np.diff(pts, axis=0)
        seg_len = np.hypot(seg[:, 0], seg[:, 1])
        if seg_len.sum() < 1.0:
            return
        keep = np.r_[True, seg_len > 0.01]
        pts, nodes = pts[keep], [n for n, k in zip(path.nodes, keep.tolist(), strict=True) if k]
        main = [m for m, k in zip(path.main, keep[1:].tolist(), strict=True) if k]
        seg = np.diff(pts, axis=0)
        seg_len = np.hypot(seg[:, 0], seg[:, 1])
        cum = np.r_[0.0, np.cumsum(seg_len)]
        bearing = np.degrees(np.arctan2(seg[:, 0], seg[:, 1])) % 360.0
        tt, ss, vv = self._profile(pts, seg_len, bearing, nodes, main)
        start = self.now
        times: list[int] = []
        t = self.t[-1] + self.interval
        while t < start + tt[-1]:
            times.append(t)
            t += self.interval + int(self.rng.random() < 0.15)
        if not times:
            self.now = start + float(tt[-1])
            return
        rel = np.array(times, dtype=np.float64) - start
        s = np.interp(rel, tt, ss)
        vel = np.interp(rel, tt, vv)
        x = np.interp(s, cum, pts[:, 0])
        y = np.interp(s, cum, pts[:, 1])
        which = np.clip(np.searchsorted(cum, s, side="right") - 1, 0, len(bearing) - 1)
        hdg = bearing[which]
        alive = np.ones(len(times), dtype=np.bool_)
        if self.tunnel is not None:
            alive &= ~np.asarray(shapely.intersects_xy(self.tunnel, x, y), dtype=np.bool_)
        self._gaps(np.array(times, dtype=np.int64), vel, alive)
        first = len(self.t)
        for k in np.flatnonzero(alive).tolist():
            self._emit(times[k], float(x[k]), float(y[k]), float(vel[k]), float(hdg[k]), True)
        for k in range(
            first + 1, len(self.t) - 1
        ):  # never the first or last fix of a drive, nor two in a row
            hit = bool(self.rng.random() < JUMP_RATE)
            self.jump[k] = hit and not self.jump[k - 1]
        self.heading = float(bearing[-1])
        self.distance += float(cum[-1])
        self.driving += float(tt[-1])
        self.now = start + float(tt[-1])

    def _gaps(self, times: Ints, vel: Floats, alive: npt.NDArray[np.bool_]) -> None:
        """Drop fixes for 30-180 s now and then, between two fixes taken while rolling. A gap that does
        not fit into this drive (a short one) is owed to the next, so the rate holds per hour of driving."""
        hours = (times[-1] - times[0]) / 3600 if len(times) else 0.0
        due = self.owed_gaps + int(self.rng.poisson(GAP_RATE_PER_H * hours))
        self.owed_gaps = 0
        for _ in range(due):
            for _attempt in range(10):
                k = int(self.rng.integers(0, len(times)))
                end = times[k] + int(self.rng.integers(GAP_S[0], GAP_S[1] - 30))
                j = int(np.searchsorted(times, end, side="right"))
                while j < len(times) and vel[j] < 2.0:
                    j += 1
                if (
                    vel[k] >= 2.0
                    and j < len(times) - 1
                    and GAP_S[0] <= times[j] - times[k] <= GAP_S[1]
                    and alive[k : j + 1].all()
                ):
                    alive[k + 1 : j] = False
                    self.gaps += 1
                    break
            else:
                self.owed_gaps += 1

    def _profile(
        self, pts: Floats, seg_len: Floats, bearing: Floats, nodes: list[int | None], main: list[bool]
    ) -> tuple[Floats, Floats, Floats]:
        """Time, distance and speed along the path: cruise per street, slower in turns, red lights."""
        k, rng = self.kind, self.rng
        cruise = np.array(
            [(self.main_v if m else self.side_v) * rng.uniform(0.9, 1.03) for m in main], dtype=np.float64
        )
        n_vert = len(pts)
        cap = np.full(n_vert, np.inf)
        wait = np.zeros(n_vert)
        cap[0] = cap[-1] = 0.0
        for i in range(1, n_vert - 1):
            turn = abs((bearing[i] - bearing[i - 1] + 180.0) % 360.0 - 180.0)
            slow = min(cruise[i - 1], cruise[i])
            cap[i] = k.turn_speed + (slow - k.turn_speed) * max(0.0, 1.0 - turn / 60.0)
            node = nodes[i]
            in_tunnel = self.tunnel is not None and self.tunnel.contains(shapely.Point(pts[i]))
            if node is not None and self.city.degree(node) >= 3 and not in_tunnel:
                if rng.random() < k.red_light:
                    cap[i] = 0.0
                    wait[i] = rng.uniform(8.0, 40.0)
        # Samples every <= 3 m; a vertex sample takes the vertex's cap.
        per = np.maximum(1, np.ceil(seg_len / 3.0)).astype(np.int64)
        seg_of = np.repeat(np.arange(len(seg_len)), per)
        step = np.concatenate([np.arange(p) for p in per.tolist()])
        starts = np.r_[0.0, np.cumsum(seg_len)][:-1]
        s = np.r_[starts[seg_of] + seg_len[seg_of] * step / per[seg_of], seg_len.sum()]
        vmax = np.r_[cruise[seg_of], 0.0]
        vertex_at = np.r_[0, np.cumsum(per)]
        vmax[vertex_at] = np.minimum(vmax[vertex_at], cap)
        ds = np.diff(s)
        v = vmax.tolist()
        for i in range(1, len(v)):
            v[i] = min(v[i], math.sqrt(v[i - 1] ** 2 + 2 * k.accel * ds[i - 1]))
        for i in range(len(v) - 2, -1, -1):
            v[i] = min(v[i], math.sqrt(v[i + 1] ** 2 + 2 * k.decel * ds[i]))
        va = np.array(v)
        dt = ds / np.maximum((va[:-1] + va[1:]) / 2, 0.3)
        waits = np.zeros(len(v))
        waits[vertex_at] = wait
        t_out, s_out, v_out = [0.0], [float(s[0])], [v[0]]
        clock = 0.0
        for i in range(1, len(v)):
            clock += float(dt[i - 1])
            t_out.append(clock)
            s_out.append(float(s[i]))
            v_out.append(v[i])
            if waits[i] > 0 and i < len(v) - 1:
                clock += float(waits[i])
                t_out.append(clock)
                s_out.append(float(s[i]))
                v_out.append(0.0)
        return np.array(t_out), np.array(s_out), np.array(v_out)

    def finish(self, start_ms: int, customers: int, load_s: float) -> SimTrack:
        """Add noise and jumps, round as written, and return the track."""
        rng = self.rng
        n = len(self.t)
        t = np.array(self.t, dtype=np.int64)
        sigma0 = float(rng.uniform(*SIGMA_M))
        # Each fix's sigma wanders within the device's range; the error follows it with memory (AR(1)).
        sigma = np.clip(sigma0 * np.exp(np.cumsum(rng.normal(0, 0.05, n))), *SIGMA_M)
        noise = np.zeros((n, 2))
        e = rng.normal(0, sigma[0], 2)
        for i in range(n):
            if i:
                rho = math.exp(-(t[i] - t[i - 1]) / NOISE_TAU_S)
                e = rho * e + math.sqrt(1 - rho * rho) * rng.normal(0, sigma[i], 2)
            noise[i] = e
        x = np.array(self.x) + noise[:, 0]
        y = np.array(self.y) + noise[:, 1]
        accuracy = sigma * ACCURACY_PER_SIGMA
        jump = np.array(self.jump, dtype=np.bool_)
        for i in np.flatnonzero(jump).tolist():
            r, a = rng.uniform(*JUMP_M), rng.uniform(0, 2 * math.pi)
            x[i], y[i] = self.x[i] + r * math.sin(a), self.y[i] + r * math.cos(a)
            accuracy[i] = rng.uniform(*JUMP_ACCURACY_M)
        moving = np.array(self.moving, dtype=np.bool_)
        vel = np.array(self.vel)
        speed: Floats = np.where(moving, np.maximum(0.0, vel + rng.normal(0, 0.2, n)), 0.0)
        hdg = np.array(self.hdg) + np.where(moving, rng.normal(0, 2.0, n), 0.0)
        lon, lat = to_lonlat(x, y)
        return SimTrack(
            vehicle=self.v,
            ts=start_ms + t * 1000,
            lat=np.round(lat, 6),
            lon=np.round(lon, 6),
            speed=np.round(speed, 1),
            heading=np.round(hdg).astype(np.int64) % 360,
            accuracy=np.round(accuracy, 1),
            customers=customers,
            load_s=load_s,
            gaps=self.gaps,
            jumps=int(jump.sum()),
            distance_m=self.distance,
            driving_s=self.driving,
        )
