"""Distances and circles on the WGS84 ellipsoid (the one `Geod` of the tracker), and H3 cells as text.

Policy: every function takes latitude before longitude, as the contract's fixes do (`lat`, `lon`), and
says so in its arguments; only Shapely geometries hold (x, y) = (lon, lat), and they are built here or
from a fence's `center_lonlat`. Arrays are numpy float64 and every function is vectorised.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import shapely
from pyproj import Geod
from shapely.geometry.base import BaseGeometry

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

WGS84 = Geod(ellps="WGS84")


def cell_hex(cell: int) -> str:
    """The H3 hex string of an integer cell, as the contract shows cells."""
    return format(cell, "x")


def segment_lengths_m(lat: FloatArray, lon: FloatArray) -> FloatArray:
    """Geodesic length in metres of each segment between consecutive points (n - 1 values)."""
    if len(lat) < 2:
        return np.zeros(0, dtype=np.float64)
    _, _, dist = WGS84.inv(lon[:-1], lat[:-1], lon[1:], lat[1:])
    return np.asarray(dist, dtype=np.float64)


def path_length_m(lat: FloatArray, lon: FloatArray) -> float:
    """Geodesic length in metres of the line through the points, in order; 0 for fewer than two."""
    return float(segment_lengths_m(lat, lon).sum())


def pairwise_distance_m(lat1: FloatArray, lon1: FloatArray, lat2: FloatArray, lon2: FloatArray) -> FloatArray:
    """Geodesic distance in metres between the points of two equally long arrays, pair by pair."""
    if len(lat1) == 0:
        return np.zeros(0, dtype=np.float64)
    _, _, dist = WGS84.inv(lon1, lat1, lon2, lat2)
    return np.asarray(dist, dtype=np.float64)


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Geodesic distance in metres between two points: the scalar form, for per-fix paths with a few
    points, where an array call's own cost (about 5 µs) would be most of the work (a scalar takes 1 µs)."""
    return float(WGS84.inv(lon1, lat1, lon2, lat2)[2])


# The local form below: WGS84's semi-major axis and first eccentricity squared, and where it is used.
_A_M = 6378137.0
_E2 = (1 / 298.257223563) * (2 - 1 / 298.257223563)
LOCAL_MAX_M = 250.0  # lengths of pairs farther apart come from the Geod
_DECIDE_MAX_M = 100_000.0  # decisions about pairs farther apart too
_LOCAL_MAX_LAT = 80.0  # and both about pairs with an end nearer a pole
_RAD_PER_DEG = math.pi / 180.0
_MAX_M_PER_DEG = 6_399_593.6259 * _RAD_PER_DEG  # WGS84's largest radius of curvature (the polar a²/b)
_MIN_M_PER_DEG = 110_574.0  # and the shortest degree of latitude (at the equator: 110,574.27 m), rounded down


def _local_m(lat1: FloatArray, lon1: FloatArray, lat2: FloatArray, lon2: FloatArray) -> FloatArray:
    """The distance on the plane of the ellipsoid's meridian and normal radii at the pair's mid-latitude.
    Its error against the Geod grows with the cube of the distance: measured on random pairs within 80°
    of the equator at most 1e-9 m at 50 m, 6e-7 m at 250 m, 1.5e-7 of the distance at 1 km and 1.6e-3 at
    100 km (`_local_error_m` bounds it at three times that). Written in place, a pass per step: it runs
    over every fix of a day's report more than once."""
    s2 = np.add(lat1, lat2)
    s2 *= 0.5 * _RAD_PER_DEG
    np.sin(s2, out=s2)
    s2 *= s2  # sin² of the mid-latitude
    w2 = 1.0 - _E2 * s2
    per_deg = np.sqrt(w2)
    np.divide(_A_M * _RAD_PER_DEG, per_deg, out=per_deg)  # the normal radius, in metres per degree
    east = np.subtract(lon2, lon1)
    if east.size and float(np.abs(east).max()) > 180.0:
        east = (east + 180.0) % 360.0 - 180.0  # across the antimeridian
    np.subtract(1.0, s2, out=s2)
    np.sqrt(s2, out=s2)  # cos of the mid-latitude
    east *= s2
    east *= per_deg
    north = np.subtract(lat2, lat1)
    per_deg *= 1.0 - _E2
    per_deg /= w2  # the meridian radius, in metres per degree
    north *= per_deg
    return np.asarray(np.hypot(east, north, out=east), dtype=np.float64)


def _local_error_m(d: float) -> float:
    return d * (5e-8 + 5e-7 * (d / 1000.0) ** 2) + 1e-6


def _polar(lat1: FloatArray, lat2: FloatArray) -> BoolArray | None:
    """Which pairs have an end within 10° of a pole, or None when none has (the common case, found
    without a mask)."""
    if all(float(a.max()) <= _LOCAL_MAX_LAT and float(a.min()) >= -_LOCAL_MAX_LAT for a in (lat1, lat2)):
        return None
    return np.asarray((np.abs(lat1) > _LOCAL_MAX_LAT) | (np.abs(lat2) > _LOCAL_MAX_LAT))


def _to_geod(d: FloatArray, doubt: BoolArray, lat1: FloatArray, lat2: FloatArray) -> npt.NDArray[np.intp]:
    polar = _polar(lat1, lat2)
    return np.flatnonzero(doubt if polar is None else doubt | polar)


def local_distance_m(lat1: FloatArray, lon1: FloatArray, lat2: FloatArray, lon2: FloatArray) -> FloatArray:
    """Geodesic distance in metres between the points of two equally long arrays, pair by pair, as
    `pairwise_distance_m` gives it to within 2 µm, about ten times faster: pairs closer than LOCAL_MAX_M
    and within 80° of the equator are measured on the ellipsoid's local radii (`_local_m`), every other
    pair by the Geod. Stops and trips measure many short steps, where the Geod's 0.8 µs a pair was most
    of a day's report."""
    if len(lat1) == 0:
        return np.zeros(0, dtype=np.float64)
    d = _local_m(lat1, lon1, lat2, lon2)
    far = _to_geod(d, d > LOCAL_MAX_M, lat1, lat2)
    if far.size:
        d[far] = pairwise_distance_m(lat1[far], lon1[far], lat2[far], lon2[far])
    return d


def local_segment_lengths_m(lat: FloatArray, lon: FloatArray) -> FloatArray:
    """`segment_lengths_m` through `local_distance_m`: the same lengths to within 2 µm a segment."""
    if len(lat) < 2:
        return np.zeros(0, dtype=np.float64)
    return local_distance_m(lat[:-1], lon[:-1], lat[1:], lon[1:])


def _decide(
    lat1: FloatArray, lon1: FloatArray, lat2: FloatArray, lon2: FloatArray, radius_m: float
) -> BoolArray:
    """`pairwise_distance_m(...) > radius_m` through the local form, and the Geod where its error bound
    leaves a doubt (pairs near the radius, beyond 100 km or near a pole)."""
    d = _local_m(lat1, lon1, lat2, lon2)
    # The local form may be on the wrong side of the radius only within its error of it. Within 100 km
    # that error grows more slowly than the distance, so those pairs all lie within `band` of the radius
    # (the error at a little beyond it); farther pairs go to the Geod.
    band = _local_error_m(min(1.01 * radius_m + 1.0, _DECIDE_MAX_M))
    doubt = np.abs(d - radius_m) <= band
    doubt |= d > _DECIDE_MAX_M
    unsure = _to_geod(d, doubt, lat1, lat2)
    if unsure.size:
        d[unsure] = pairwise_distance_m(lat1[unsure], lon1[unsure], lat2[unsure], lon2[unsure])
    return np.asarray(d > radius_m)


def _inner_box(lat1: FloatArray, lat2: FloatArray, radius_m: float) -> tuple[float, float] | None:
    """Half-sizes in degrees (latitude, longitude) of a box within which every pair of these points is
    within `radius_m`, however the radii of curvature vary (none exceeds the polar one): the local form
    is then at most sqrt(2) times the half-size in metres, and the geodesic at most that plus the local
    form's error. None near the poles, where the local form is not used."""
    lo, hi = min(float(lat1.min()), float(lat2.min())), max(float(lat1.max()), float(lat2.max()))
    band = _local_error_m(min(1.01 * radius_m + 1.0, _DECIDE_MAX_M))
    half = 0.999 * (radius_m - band) / math.sqrt(2.0)
    if half <= 0 or lo < -_LOCAL_MAX_LAT + 1.0 or hi > _LOCAL_MAX_LAT - 1.0:
        return None
    dlat = half / _MAX_M_PER_DEG
    nearest_equator = 0.0 if lo <= 0.0 <= hi else min(abs(lo), abs(hi))
    return dlat, half / (_MAX_M_PER_DEG * math.cos(math.radians(max(0.0, nearest_equator - dlat))))


def pairwise_farther_than_m(
    lat1: FloatArray, lon1: FloatArray, lat2: FloatArray, lon2: FloatArray, radius_m: float
) -> BoolArray:
    """For each pair, whether its geodesic distance exceeds `radius_m`: exactly the answer of
    `pairwise_distance_m(...) > radius_m`. Most pairs of a track are settled by two comparisons: those
    whose latitudes alone are farther apart (no path between two parallels is shorter than the meridian
    arc, at least 110,574 m a degree) and those inside `_inner_box`; the rest by the local form and, where
    it leaves a doubt, the Geod (`_decide`)."""
    n = len(lat1)
    if n < 64:
        return _decide(lat1, lon1, lat2, lon2, radius_m) if n else np.zeros(0, dtype=np.bool_)
    dlat = np.abs(lat2 - lat1)
    out = dlat > radius_m / _MIN_M_PER_DEG
    settled = out.copy()
    box = _inner_box(lat1, lat2, radius_m)
    if box is not None:
        inside = dlat <= box[0]
        inside &= np.abs(lon2 - lon1) <= box[1]
        settled |= inside
    rest = np.flatnonzero(~settled)
    if rest.size:
        out[rest] = _decide(lat1[rest], lon1[rest], lat2[rest], lon2[rest], radius_m)
    return out


def farther_than_m(lat0: float, lon0: float, lat: FloatArray, lon: FloatArray, radius_m: float) -> BoolArray:
    """For each point, whether it lies farther than `radius_m` from (lat0, lon0), decided exactly as
    `distances_from_m(...) > radius_m` would (see `pairwise_farther_than_m`): a parked device's fixes,
    most of a fleet's day, cost two comparisons each."""
    n = len(lat)
    return pairwise_farther_than_m(np.full(n, lat0), np.full(n, lon0), lat, lon, radius_m)


def distances_from_m(lat0: float, lon0: float, lat: FloatArray, lon: FloatArray) -> FloatArray:
    """Geodesic distance in metres from (lat0, lon0) to each point."""
    n = len(lat)
    return pairwise_distance_m(np.full(n, lat0), np.full(n, lon0), lat, lon)


def circle_polygon(lat0: float, lon0: float, radius_m: float, vertices: int) -> BaseGeometry:
    """A Shapely polygon (x = lon, y = lat) through `vertices` points at geodesic distance `radius_m`
    from (lat0, lon0): inscribed in the true circle."""
    azimuths = np.linspace(0.0, 360.0, vertices, endpoint=False)
    lon, lat, _ = WGS84.fwd(
        np.full(vertices, lon0), np.full(vertices, lat0), azimuths, np.full(vertices, radius_m)
    )
    return shapely.Polygon(np.column_stack([lon, lat]))
