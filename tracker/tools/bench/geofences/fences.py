"""The fences and points of the geofence bench: real city districts tiled over a region (or generated
stars without `REALDATA`), about 2 % circles, and uniform random points over their bounding box.

Policy: seeded, so that a run is repeatable; the baselines get fresh, unprepared copies of the shapes,
circles as the 128-gons through points at the radius (`tracker.geo.circle_polygon`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import shapely
from shapely.geometry import Polygon, shape
from shapely.geometry.base import BaseGeometry

from tracker.geo import circle_polygon
from tracker.geofence.grid import CIRCLE_VERTICES
from tracker.geofence.polygons import repair
from tracker.model import Fence

REALDATA = Path("/work/shared/realdata/geofences")
CITIES = ("munich_stadtbezirke.geojson", "zurich_stadtkreise.geojson")
SEED = 20240611
CIRCLE_SHARE = 0.02
GAP_DEG = 0.005  # between neighbouring cities of the tiling

Floats = npt.NDArray[np.float64]


def build_fences(n: int, realdata: Path = REALDATA, seed: int = SEED) -> tuple[list[Fence], str]:
    """`n` fences (about 2 % circles) tiled over a region, and where the polygons came from."""
    rng = np.random.default_rng(seed)
    n_circles = max(1, round(n * CIRCLE_SHARE))
    cities = _real_cities(realdata)
    if cities is not None:
        polygons = _tile(cities, n - n_circles)
        source = f"real: {', '.join(CITIES)} from {realdata}, tiled"
    else:
        polygons = _stars(n - n_circles, rng)
        source = f"generated: star polygons (64-512 vertices, 1-5 km); {realdata} is missing"
    fences = [Fence(f"p{i}", None, (), geometry=g, source="bench") for i, g in enumerate(polygons)]
    xmin, ymin, xmax, ymax = shapely.total_bounds(polygons)
    for i in range(n_circles):
        center = (float(rng.uniform(xmin, xmax)), float(rng.uniform(ymin, ymax)))
        fences.append(Fence(f"c{i}", None, (), center_lonlat=center, radius_m=float(rng.uniform(100, 1000))))
    return fences, source


def _real_cities(folder: Path) -> list[list[BaseGeometry]] | None:
    """The district polygons of each city file, invalid ones repaired; None when a file is missing."""
    cities = []
    for name in CITIES:
        path = folder / name
        if not path.is_file():
            return None
        doc = json.loads(path.read_text())
        shapes = [shape(f["geometry"]) for f in doc["features"]]
        cities.append([g if g.is_valid else repair(g) for g in shapes])  # as the loader does
    return cities


def _tile(cities: Sequence[Sequence[BaseGeometry]], n: int) -> list[BaseGeometry]:
    """The first `n` polygons of a square grid of tiles, each tile the cities side by side."""
    tile: list[BaseGeometry] = []
    x = 0.0
    height = 0.0
    for districts in cities:
        xmin, ymin, xmax, ymax = shapely.total_bounds(districts)
        dx, dy = x - xmin, -ymin
        tile.extend(shapely.transform(g, lambda c, dx=dx, dy=dy: c + [dx, dy]) for g in districts)
        x += xmax - xmin + GAP_DEG
        height = max(height, ymax - ymin + GAP_DEG)
    tiles = math.ceil(n / len(tile))
    cols = math.ceil(math.sqrt(tiles))
    # Munich's south-west corner: the region starts where the real districts are.
    x0, y0 = 11.36, 48.06
    out: list[BaseGeometry] = []
    for t in range(tiles):
        ox, oy = x0 + (t % cols) * x, y0 + (t // cols) * height
        for g in tile:
            if len(out) == n:
                break
            out.append(shapely.transform(g, lambda c, ox=ox, oy=oy: c + [ox, oy]))
    return out


def _stars(n: int, rng: np.random.Generator) -> list[BaseGeometry]:
    """`n` star-shaped polygons (64-512 vertices, 1-5 km), one per cell of a square grid."""
    cell = 2 * 5_000 / 111_320 * 1.6  # degrees; wide enough for a 5 km star in longitude at 50°N
    cols = math.ceil(math.sqrt(n))
    out: list[BaseGeometry] = []
    for i in range(n):
        cx, cy = 11.0 + (i % cols + 0.5) * cell, 48.0 + (i // cols + 0.5) * cell / 1.6
        k = int(rng.integers(32, 257)) * 2
        radius = rng.uniform(1_000, 5_000)
        r = radius * np.where(np.arange(k) % 2 == 0, 1.0, rng.uniform(0.4, 0.9, k))
        a = np.linspace(0, 2 * math.pi, k, endpoint=False)
        lat = cy + r * np.sin(a) / 111_320
        lon = cx + r * np.cos(a) / (111_320 * math.cos(math.radians(cy)))
        out.append(Polygon(np.column_stack([lon, lat])))
    return out


def baseline_shapes(fences: Sequence[Fence]) -> list[BaseGeometry]:
    """Fresh, unprepared geometries for the baselines: polygons as they are, circles as 128-gons.

    Fresh because `FenceIndex` prepares the fences' own geometries, which would speed up the naive loop.
    """
    shapes = [
        circle_polygon(f.center_lonlat[1], f.center_lonlat[0], f.radius_m, CIRCLE_VERTICES)
        if f.center_lonlat is not None and f.radius_m is not None
        else f.geometry
        for f in fences
    ]
    return list(shapely.from_wkb(shapely.to_wkb(shapes)))


def region(fences: Sequence[Fence]) -> tuple[float, float, float, float]:
    """The bounding box of all fences (circles by their 128-gons)."""
    xmin, ymin, xmax, ymax = shapely.total_bounds(baseline_shapes(fences))
    return float(xmin), float(ymin), float(xmax), float(ymax)


def random_points(bbox: tuple[float, float, float, float], n: int, seed: int = SEED) -> tuple[Floats, Floats]:
    """`n` uniform points over `bbox`: (lon, lat)."""
    rng = np.random.default_rng(seed + 1)
    return rng.uniform(bbox[0], bbox[2], n), rng.uniform(bbox[1], bbox[3], n)
