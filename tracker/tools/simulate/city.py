"""The simulated city: a street graph in a local plane (metres) over central Berlin, and routing on it.

Policy: a jittered grid of streets about 200 m apart, every fourth one a main road (one of them through the
government quarter), three diagonal avenues and some interrupted side streets. Depot yards, the Alexanderplatz
hub and the government quarter are copied from `geofences/berlin.yaml`, not read from it, so the tracks do not
change when the rules do (`tests/test_simulate.py` checks that the rules still fire). No street crosses a
depot yard; a yard node has driveways to the two nearest crossings outside. Routing is Dijkstra on a cost
per edge chosen by the vehicle (metres or seconds).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import shapely

Floats = npt.NDArray[np.float64]

# The local plane: metres east (x) and north (y) of the origin, equirectangular (WGS84 scales there).
LON0, LAT0 = 13.40, 52.52
_PHI = math.radians(LAT0)
M_PER_DEG_LAT = 111_132.954 - 559.822 * math.cos(2 * _PHI) + 1.175 * math.cos(4 * _PHI)
M_PER_DEG_LON = 111_412.84 * math.cos(_PHI) - 93.5 * math.cos(3 * _PHI) + 0.118 * math.cos(5 * _PHI)
HALF_M = 2900.0  # the grid spans +-HALF_M around the origin; a 400 m jump stays within 13.35-13.45 E

# Places of geofences/berlin.yaml, (lon, lat).
WEDDING = ((13.3585, 52.5445), (13.3632, 52.5449), (13.3638, 52.5427), (13.3591, 52.5423))
KREUZBERG = ((13.4085, 52.4985), (13.4141, 52.4985), (13.4141, 52.5012), (13.4085, 52.5012))
KREUZBERG_HOLE = ((13.4105, 52.4993), (13.4121, 52.4993), (13.4121, 52.5003), (13.4105, 52.5003))
HUB = (13.4132, 52.5219)
QUARTER = (13.3700, 52.5170, 13.3790, 52.5215)  # west, south, east, north
YARDS = {"depot-wedding": (13.3612, 52.5436), "depot-kreuzberg": (13.4095, 52.4998)}  # where vans park


def to_lonlat(x: Floats, y: Floats) -> tuple[Floats, Floats]:
    """Plane metres to (lon, lat) degrees."""
    return LON0 + x / M_PER_DEG_LON, LAT0 + y / M_PER_DEG_LAT


def to_xy(lon: Floats, lat: Floats) -> tuple[Floats, Floats]:
    """(lon, lat) degrees to plane metres."""
    return (lon - LON0) * M_PER_DEG_LON, (lat - LAT0) * M_PER_DEG_LAT


def xy_of(lonlat: tuple[float, float]) -> tuple[float, float]:
    """One (lon, lat) pair to plane metres (x, y)."""
    return (lonlat[0] - LON0) * M_PER_DEG_LON, (lonlat[1] - LAT0) * M_PER_DEG_LAT


def _polygon(
    ring: Sequence[tuple[float, float]], hole: Sequence[tuple[float, float]] = ()
) -> shapely.Polygon:
    return shapely.Polygon([xy_of(p) for p in ring], [[xy_of(p) for p in hole]] if hole else None)


@dataclass(frozen=True, slots=True)
class City:
    """The street graph in plane metres: nodes, undirected edges, and the named places on it."""

    xy: Floats  # (n, 2)
    edges: tuple[tuple[int, int], ...]
    length: Floats
    main: npt.NDArray[np.bool_]
    adj: tuple[tuple[tuple[int, int], ...], ...]  # node -> ((neighbour, edge), ...)
    places: dict[str, int]  # depot yards, the hub, and the nodes either side of the government quarter
    driveways: frozenset[int]  # edges into depot yards (no customers there)

    def street_lines(self) -> list[shapely.LineString]:
        """Every street as a line in plane metres (for checks)."""
        return [shapely.LineString([self.xy[u], self.xy[v]]) for u, v in self.edges]

    def degree(self, node: int) -> int:
        return len(self.adj[node])


def build_city(seed: int) -> City:
    """The street grid of `seed`: about 30 x 32 jittered blocks, main roads, diagonals, depot yards."""
    rng = np.random.default_rng([seed, 0])
    cols = np.arange(-HALF_M, HALF_M + 1, 200.0)
    rows = np.arange(-HALF_M, HALF_M + 1, 187.0)
    ni, nj = len(cols), len(rows)
    gx, gy = np.meshgrid(cols, rows, indexing="ij")
    xy = np.stack([gx, gy], axis=-1) + rng.uniform(-25.0, 25.0, (ni, nj, 2))
    xy = np.clip(xy, -HALF_M, HALF_M).reshape(-1, 2)

    def node(i: int, j: int) -> int:
        return i * nj + j

    hub = np.array(xy_of(HUB))
    xy[int(np.argmin(np.hypot(*(xy - hub).T)))] = hub  # Alexanderplatz is a crossing
    qw, qs, qe, qn = *xy_of(QUARTER[:2]), *xy_of(QUARTER[2:])
    j_q = int(np.argmin(np.abs(rows - (qs + qn) / 2)))
    main_row = {j for j in range(nj) if (j - j_q) % 4 == 0}  # one main road runs through the quarter
    main_col = {i for i in range(ni) if i % 4 == 1}
    keep_zone = shapely.box(qw - 300, qs - 300, qe + 300, qn + 300)
    edges: dict[tuple[int, int], bool] = {}
    for i in range(ni):
        for j in range(nj):
            if i + 1 < ni:
                edges[(node(i, j), node(i + 1, j))] = j in main_row
            if j + 1 < nj:
                edges[(node(i, j), node(i, j + 1))] = i in main_col
    used: set[tuple[int, int]] = set()  # blocks crossed by a diagonal: two diagonals never cross mid-block
    for _ in range(3):
        di = 1
        dj = 1 if rng.random() < 0.5 else -1
        i, j = int(rng.integers(2, ni // 2)), int(rng.integers(4, nj - 4))
        for _ in range(int(rng.integers(8, 15))):
            ii, jj = i + di, j + dj
            block = (min(i, ii), min(j, jj))
            if not (0 <= ii < ni and 0 <= jj < nj) or block in used:
                break
            used.add(block)
            edges[(node(i, j), node(ii, jj))] = True
            i, j = ii, jj
    for key, is_main in list(edges.items()):  # parks and courtyards interrupt some side streets
        mid = shapely.Point((xy[key[0]] + xy[key[1]]) / 2)
        if not is_main and rng.random() < 0.06 and not keep_zone.contains(mid):
            del edges[key]

    # Depot yards: no street crosses them; a yard node with driveways to the nearest crossings outside.
    yards = {"depot-wedding": _polygon(WEDDING), "depot-kreuzberg": _polygon(KREUZBERG, KREUZBERG_HOLE)}
    hole = _polygon(KREUZBERG_HOLE)
    points = shapely.points(xy)
    dead = np.zeros(len(xy), dtype=np.bool_)
    for shape in yards.values():
        dead |= np.asarray(shapely.intersects(shape.buffer(20.0), points), dtype=np.bool_)
    for key in list(edges):
        line = shapely.LineString([xy[key[0]], xy[key[1]]])
        if dead[key[0]] or dead[key[1]] or any(line.intersects(s.buffer(5.0)) for s in yards.values()):
            del edges[key]
    places: dict[str, int] = {}
    driveway_keys: set[tuple[int, int]] = set()
    xy_list = [tuple(p) for p in xy.tolist()]
    for name, at in YARDS.items():
        spot = np.array(xy_of(at))
        places[name] = yard = len(xy_list)
        xy_list.append((float(spot[0]), float(spot[1])))
        order = np.argsort(np.hypot(*(xy - spot).T))
        found = 0
        for n in order.tolist():
            if dead[n] or shapely.LineString([spot, xy[n]]).intersects(hole):
                continue
            edges[(int(n), yard)] = False
            driveway_keys.add((int(n), yard))
            found += 1
            if found == 2:
                break
    all_xy = np.array(xy_list, dtype=np.float64)
    places["hub-alexanderplatz"] = int(np.argmin(np.hypot(*(all_xy - hub).T)))
    places["quarter-west"] = node(int(np.argmin(np.abs(cols - (qw - 150)))), j_q)
    places["quarter-east"] = node(int(np.argmin(np.abs(cols - (qe + 150)))), j_q)

    # Keep what is reachable from the hub, renumbered.
    nbrs: dict[int, list[int]] = {}
    for u, v in edges:
        nbrs.setdefault(u, []).append(v)
        nbrs.setdefault(v, []).append(u)
    seen = {places["hub-alexanderplatz"]}
    todo = [places["hub-alexanderplatz"]]
    while todo:
        for m in nbrs.get(todo.pop(), []):
            if m not in seen:
                seen.add(m)
                todo.append(m)
    kept = sorted(seen)
    new = {old: k for k, old in enumerate(kept)}
    edge_list = sorted((new[u], new[v]) for u, v in edges if u in new and v in new)
    main_of = {(new[u], new[v]): m for (u, v), m in edges.items() if u in new and v in new}
    driveways = frozenset(k for k, e in enumerate(edge_list) if (kept[e[0]], kept[e[1]]) in driveway_keys)
    out_xy = all_xy[kept]
    adj: list[list[tuple[int, int]]] = [[] for _ in kept]
    for k, (u, v) in enumerate(edge_list):
        adj[u].append((v, k))
        adj[v].append((u, k))
    ends = np.array(edge_list, dtype=np.int64)
    return City(
        xy=out_xy,
        edges=tuple(edge_list),
        length=np.hypot(*(out_xy[ends[:, 0]] - out_xy[ends[:, 1]]).T),
        main=np.array([main_of[e] for e in edge_list], dtype=np.bool_),
        adj=tuple(tuple(a) for a in adj),
        places={name: new[n] for name, n in places.items()},
        driveways=driveways,
    )


@dataclass(frozen=True, slots=True)
class Place:
    """A point on the street graph: a node, or a street address part-way along an edge."""

    xy: tuple[float, float]
    node: int | None = None
    edge: int | None = None
    frac: float = 0.0


@dataclass(slots=True)
class Route:
    """A drive's polyline: vertices, the graph node of each (None for an address), main-road segments."""

    pts: list[tuple[float, float]]
    nodes: list[int | None]
    main: list[bool]

    def extend(self, other: Route) -> None:
        """Append `other`, which starts where this one ends."""
        self.pts += other.pts[1:]
        self.nodes += other.nodes[1:]
        self.main += other.main


def _exits(city: City, p: Place) -> list[tuple[int, float, bool]]:
    """(node, metres to it, main road) for each way from a place onto the graph."""
    if p.node is not None:
        return [(p.node, 0.0, False)]
    assert p.edge is not None
    u, v = city.edges[p.edge]
    length, main = float(city.length[p.edge]), bool(city.main[p.edge])
    return [(u, p.frac * length, main), (v, (1 - p.frac) * length, main)]


def _per_m(city: City, p: Place, cost: Sequence[float]) -> float:
    """The cost of a metre of the street an address lies on (0 for a node place: it is on the graph)."""
    return cost[p.edge] / float(city.length[p.edge]) if p.edge is not None else 0.0


def route(city: City, a: Place, b: Place, cost: Sequence[float]) -> Route:
    """The cheapest street path from `a` to `b`; `cost[e]` is the cost of driving edge e (metres or
    seconds). Dijkstra from both ends of `a`'s street until both ends of `b`'s are settled."""
    if a.edge is not None and a.edge == b.edge:
        main = bool(city.main[a.edge])
        return Route([a.xy, b.xy], [None, None], [main])
    a_exits, b_exits = _exits(city, a), _exits(city, b)
    heap = [(d * _per_m(city, a, cost), n, -1, -1) for n, d, _ in a_exits]
    heapq.heapify(heap)
    done: dict[int, tuple[float, int, int]] = {}
    targets = {n for n, _, _ in b_exits}
    while heap and not targets <= done.keys():
        d, n, prev, via = heapq.heappop(heap)
        if n in done:
            continue
        done[n] = (d, prev, via)
        for m, e in city.adj[n]:
            if m not in done:
                heapq.heappush(heap, (d + cost[e], m, n, e))
    b_side = _per_m(city, b, cost)
    _, end, end_main = min((done[n][0] + m * b_side, n, main) for n, m, main in b_exits if n in done)
    nodes: list[int] = []
    edges: list[int] = []
    n = end
    while n != -1:
        nodes.append(n)
        _, prev, via = done[n]
        if via != -1:
            edges.append(via)
        n = prev
    nodes.reverse()
    edges.reverse()
    start_main = bool(city.main[a.edge]) if a.edge is not None else False
    path = Route([a.xy], [a.node], [])
    if a.node is None:
        path.pts.append(tuple(city.xy[nodes[0]]))
        path.nodes.append(nodes[0])
        path.main.append(start_main)
    for node, edge in zip(nodes[1:], edges, strict=True):
        path.pts.append(tuple(city.xy[node]))
        path.nodes.append(node)
        path.main.append(bool(city.main[edge]))
    if b.node is None:
        path.pts.append(b.xy)
        path.nodes.append(None)
        path.main.append(end_main)
    return path


def streets_geojson(city: City) -> dict[str, object]:
    """The streets in (lon, lat) as a GeoJSON FeatureCollection, one MultiLineString of the main roads and
    one of the rest (`properties.main`): what a map draws so that the vehicles are seen on their streets."""
    lon, lat = to_lonlat(city.xy[:, 0], city.xy[:, 1])
    features = []
    for main in (False, True):
        lines = [
            [[round(float(lon[n]), 6), round(float(lat[n]), 6)] for n in edge]
            for edge, is_main in zip(city.edges, city.main, strict=True)
            if bool(is_main) == main
        ]
        geometry = {"type": "MultiLineString", "coordinates": lines}
        features.append({"type": "Feature", "properties": {"main": main}, "geometry": geometry})
    return {"type": "FeatureCollection", "features": features}
