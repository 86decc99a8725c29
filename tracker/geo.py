"""Distances and circles on the WGS84 ellipsoid (the one `Geod` of the tracker), and H3 cells as text.

Policy: every function takes latitude before longitude, as the contract's fixes do (`lat`, `lon`), and
says so in its arguments; only Shapely geometries hold (x, y) = (lon, lat), and they are built here or
from a fence's `center_lonlat`. Arrays are numpy float64 and every function is vectorised.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import shapely
from pyproj import Geod
from shapely.geometry.base import BaseGeometry

FloatArray = npt.NDArray[np.float64]

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
