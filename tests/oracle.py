"""The reference side of the geofence oracle test: read real tracks, let PostGIS decide inside/outside and
crossings, and run the contract's state machine in plain Python, fix by fix.

Nothing here imports the tracker package: the point is an independent second implementation.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

EARTH_RADIUS_M = 6371008.8


@dataclass(frozen=True)
class Fix:
    ts: int  # ms since the epoch, UTC
    lat: float
    lon: float
    speed: float | None = None  # m/s
    accuracy: float | None = None  # m

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ts": self.ts, "lat": self.lat, "lon": self.lon}
        if self.speed is not None:
            out["speed"] = self.speed
        if self.accuracy is not None:
            out["accuracy"] = self.accuracy
        return out


@dataclass(frozen=True)
class OracleFence:
    """A fence as the oracle sees it: a GeoJSON geometry (lon/lat) or a circle."""

    id: str
    tags: tuple[str, ...] = ()
    geometry: dict[str, Any] | None = None
    center_lonlat: tuple[float, float] | None = None
    radius_m: float | None = None
    entry: str = ""  # the YAML entry id it came from


# --- track readers ---------------------------------------------------------------------------------------


def _ms(dt: datetime) -> int:
    return round(dt.timestamp() * 1000)


def read_plt(path: Path) -> list[tuple[int, float, float]]:
    """GeoLife PLT: 6 header lines, then `lat,lon,0,altitude,days,YYYY-MM-DD,HH:MM:SS` (UTC)."""
    out = []
    with path.open(newline="") as f:
        lines = f.read().splitlines()[6:]
    for line in lines:
        if not line.strip():
            continue
        lat, lon, _zero, _alt, _days, date, time = line.split(",")
        dt = datetime.strptime(f"{date} {time}", "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
        out.append((_ms(dt), float(lat), float(lon)))
    return out


def read_barefoot(path: Path) -> list[tuple[int, float, float]]:
    """barefoot JSON: `[{"point": "POINT(lon lat)", "time": "2014-09-10 06:54:07+0200", "id": ...}, ...]`."""
    out = []
    for row in json.loads(path.read_text()):
        point = row["point"]
        assert point.startswith("POINT(") and point.endswith(")"), point
        lon, lat = point[len("POINT(") : -1].split()
        dt = datetime.strptime(row["time"], "%Y-%m-%d %H:%M:%S%z")
        out.append((_ms(dt), float(lat), float(lon)))
    return out


def read_google_csv(path: Path) -> list[tuple[int, float, float]]:
    """trackintel google_trajectory.csv: `;`-separated, `tracked_at` ISO 8601 with Z, newest row first."""
    out = []
    with path.open(newline="") as f:
        for row in csv.DictReader(f, delimiter=";"):
            dt = datetime.fromisoformat(row["tracked_at"].replace("Z", "+00:00"))
            out.append((_ms(dt), float(row["latitude"]), float(row["longitude"])))
    return out


def read_google_accuracy(path: Path) -> dict[int, float]:
    """The same file's `accuracy` (metres, as the phone reported it) by fix time."""
    out: dict[int, float] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f, delimiter=";"):
            dt = datetime.fromisoformat(row["tracked_at"].replace("Z", "+00:00"))
            out.setdefault(_ms(dt), float(row["accuracy"]))
    return out


def made_up_accuracy(ts: int) -> float:
    """An accuracy radius for tracks that carry none: 3-90 m, decided by the fix time alone (a hash), so
    the strict rules meet every kind of fix near the edges of the real polygons."""
    return 3.0 + ((ts // 1000) * 2654435761 % 8700) / 100


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(a))


def prepare(
    points: Iterable[tuple[int, float, float]], every: int = 1, accuracy: dict[int, float] | None = None
) -> list[Fix]:
    """Sort by time (stable), drop repeated timestamps (keep the first), keep every `every`-th point, and give
    each fix but the first a speed: haversine distance from the previous kept point / time between them;
    and an accuracy: from `accuracy` (by time) or `made_up_accuracy`."""
    ordered = sorted(points, key=lambda p: p[0])
    unique: list[tuple[int, float, float]] = []
    for p in ordered:
        if not unique or p[0] != unique[-1][0]:
            unique.append(p)
    kept = unique[::every]
    fixes: list[Fix] = []
    for i, (ts, lat, lon) in enumerate(kept):
        speed = None
        if i > 0:
            pts, plat, plon = kept[i - 1]
            speed = haversine_m(plat, plon, lat, lon) / ((ts - pts) / 1000)
        acc = accuracy[ts] if accuracy is not None else made_up_accuracy(ts)
        fixes.append(Fix(ts, lat, lon, speed, acc))
    return fixes


# --- fences from the YAML document ----------------------------------------------------------------------


def _ring(points: Sequence[Sequence[float]]) -> list[list[float]]:
    ring = [[float(x), float(y)] for x, y in points]
    if ring[0] != ring[-1]:
        ring.append(ring[0])
    return ring


def fences_from_yaml(doc: dict[str, Any], folder: Path) -> list[OracleFence]:
    """Every fence a `fences:` list defines. A geojson FeatureCollection gives one fence per feature, id
    `<entry id>:<feature id or 0-based index>`; the entry's tags go to each of them."""
    out: list[OracleFence] = []
    for entry in doc["fences"]:
        tags = tuple(entry.get("tags") or ())
        eid = entry["id"]
        if "circle" in entry:
            lon, lat = entry["circle"]["center"]
            out.append(OracleFence(eid, tags, None, (lon, lat), float(entry["circle"]["radius_m"]), eid))
        elif "polygon" in entry:
            poly = entry["polygon"]
            if isinstance(poly, dict):
                rings = [_ring(poly["exterior"])] + [_ring(h) for h in poly.get("holes") or []]
            else:
                rings = [_ring(poly)]
            out.append(OracleFence(eid, tags, {"type": "Polygon", "coordinates": rings}, entry=eid))
        elif "geojson" in entry:
            data = json.loads((folder / entry["geojson"]).read_text())
            if data["type"] == "FeatureCollection":
                for i, feature in enumerate(data["features"]):
                    fid = feature.get("id")
                    fid = i if fid is None else fid
                    out.append(OracleFence(f"{eid}:{fid}", tags, feature["geometry"], entry=eid))
            elif data["type"] == "Feature":
                out.append(OracleFence(eid, tags, data["geometry"], entry=eid))
            else:
                out.append(OracleFence(eid, tags, data, entry=eid))
        else:
            raise ValueError(f"fence {eid}: no shape")
    return out


def rule_fences(rule: dict[str, Any], fences: Sequence[OracleFence]) -> list[OracleFence]:
    """A rule's fences: its `fences` ids (an entry id of a collection means all its features) and every fence
    carrying one of its `fence_tags`."""
    ids = set(rule.get("fences") or ())
    tags = set(rule.get("fence_tags") or ())
    return [f for f in fences if f.id in ids or f.entry in ids or tags & set(f.tags)]


# --- PostGIS decisions ------------------------------------------------------------------------------------

# Fences as a materialized CTE: polygons from GeoJSON (SRID 4326), circles as a geography centre + radius.
# The tracker's loader repairs invalid polygons (Zurich's Kreis 2 and 4 are not OGC-valid) with
# shapely.make_valid, so we do the same here with ST_MakeValid, and only on the invalid ones.
_FENCES_CTE = """
WITH fence AS MATERIALIZED (
    SELECT k, CASE WHEN g IS NULL OR ST_IsValid(g) THEN g ELSE ST_MakeValid(g) END AS geom,
           CASE WHEN clon IS NULL THEN NULL
                ELSE ST_SetSRID(ST_MakePoint(clon, clat), 4326)::geography END AS center,
           r
    FROM (
        SELECT k, CASE WHEN gj IS NULL THEN NULL ELSE ST_SetSRID(ST_GeomFromGeoJSON(gj), 4326) END AS g,
               clon, clat, r
        FROM unnest($1::int[], $2::text[], $3::float8[], $4::float8[], $5::float8[])
             AS u(k, gj, clon, clat, r)
    ) s
)
"""


def _fence_args(fences: Sequence[OracleFence]) -> list[list[Any]]:
    return [
        list(range(len(fences))),
        [None if f.geometry is None else json.dumps(f.geometry) for f in fences],
        [None if f.center_lonlat is None else f.center_lonlat[0] for f in fences],
        [None if f.center_lonlat is None else f.center_lonlat[1] for f in fences],
        [f.radius_m for f in fences],
    ]


async def inside_flags(
    conn: asyncpg.Connection, fences: Sequence[OracleFence], lons: Sequence[float], lats: Sequence[float]
) -> dict[str, list[bool]]:
    """For each fence, one flag per point: polygon ST_Covers (the boundary counts as inside); circle
    ST_DWithin on geography (spheroid) to the centre within radius_m. One query for the whole track."""
    rows = await conn.fetch(
        _FENCES_CTE
        + """
        , pt AS MATERIALIZED (
            SELECT i, ST_SetSRID(ST_MakePoint(lon, lat), 4326) AS g
            FROM unnest($6::float8[], $7::float8[]) WITH ORDINALITY AS p(lon, lat, i)
        )
        -- One fence at a time over all points, so PostGIS reuses its prepared (cached) fence geometry.
        SELECT fence.k, ARRAY(
                   SELECT CASE WHEN fence.geom IS NOT NULL THEN ST_Covers(fence.geom, pt.g)
                               ELSE ST_DWithin(pt.g::geography, fence.center, fence.r) END
                   FROM pt ORDER BY pt.i) AS flags
        FROM fence
        """,
        *_fence_args(fences),
        list(lons),
        list(lats),
    )
    out = {fences[r["k"]].id: list(r["flags"]) for r in rows}
    assert all(len(v) == len(lons) for v in out.values())
    return out


async def certain_flags(
    conn: asyncpg.Connection,
    fences: Sequence[OracleFence],
    lons: Sequence[float],
    lats: Sequence[float],
    accuracies: Sequence[float],
) -> dict[str, list[bool | None]]:
    """For each fence, one verdict per point for `accuracy: strict`: True when the accuracy circle lies
    wholly inside (polygon: covered, and its boundary at least `accuracy` metres away; circle: distance to
    the centre + accuracy <= radius), False when wholly outside (polygon: not covered and more than
    `accuracy` away; circle: distance - accuracy > radius), None otherwise. Distances are geography
    (spheroid) ST_Distance; pairs further apart than the accuracy in any direction skip it."""
    rows = await conn.fetch(
        _FENCES_CTE
        + """
        , pt AS MATERIALIZED (
            SELECT i, ST_SetSRID(ST_MakePoint(lon, lat), 4326) AS g, acc
            FROM unnest($6::float8[], $7::float8[], $8::float8[]) WITH ORDINALITY AS p(lon, lat, acc, i)
        )
        SELECT fence.k, ARRAY(
            SELECT CASE
                WHEN fence.geom IS NULL THEN
                    CASE WHEN ST_Distance(pt.g::geography, fence.center) + pt.acc <= fence.r THEN true
                         WHEN ST_Distance(pt.g::geography, fence.center) - pt.acc > fence.r THEN false
                    END
                WHEN pt.acc <= 0 OR NOT ST_DWithin(fence.geom, pt.g, pt.acc / 50000.0) THEN
                    ST_Covers(fence.geom, pt.g)
                WHEN ST_Covers(fence.geom, pt.g) THEN
                    CASE WHEN ST_Distance(ST_Boundary(fence.geom)::geography, pt.g::geography) >= pt.acc
                         THEN true END
                ELSE
                    CASE WHEN ST_Distance(fence.geom::geography, pt.g::geography) > pt.acc THEN false END
            END
            FROM pt ORDER BY pt.i) AS flags
        FROM fence
        """,
        *_fence_args(fences),
        list(lons),
        list(lats),
        list(accuracies),
    )
    out = {fences[r["k"]].id: list(r["flags"]) for r in rows}
    assert all(len(v) == len(lons) for v in out.values())
    return out


async def crossing_flags(
    conn: asyncpg.Connection, fences: Sequence[OracleFence], lons: Sequence[float], lats: Sequence[float]
) -> dict[str, list[bool]]:
    """For each fence, one flag per point i >= 1 (index 0 is always False): does the straight segment from
    point i-1 to point i meet the fence? Polygon: ST_Intersects(geom, ST_MakeLine(prev, cur)) (planar);
    circle: ST_DWithin(ST_MakeLine(prev, cur)::geography, centre, radius_m)."""
    if len(lons) < 2:
        return {f.id: [False] * len(lons) for f in fences}
    rows = await conn.fetch(
        _FENCES_CTE
        + """
        , seg AS MATERIALIZED (
            SELECT i, ST_MakeLine(ST_SetSRID(ST_MakePoint(lon0, lat0), 4326),
                                  ST_SetSRID(ST_MakePoint(lon1, lat1), 4326)) AS g
            FROM unnest($6::float8[], $7::float8[], $8::float8[], $9::float8[])
                 WITH ORDINALITY AS p(lon0, lat0, lon1, lat1, i)
        )
        SELECT fence.k, ARRAY(
                   SELECT CASE WHEN fence.geom IS NOT NULL THEN ST_Intersects(fence.geom, seg.g)
                               ELSE ST_DWithin(seg.g::geography, fence.center, fence.r) END
                   FROM seg ORDER BY seg.i) AS flags
        FROM fence
        """,
        *_fence_args(fences),
        list(lons[:-1]),
        list(lats[:-1]),
        list(lons[1:]),
        list(lats[1:]),
    )
    out = {fences[r["k"]].id: [False, *r["flags"]] for r in rows}
    assert all(len(v) == len(lons) for v in out.values())
    return out


# --- the state machine -----------------------------------------------------------------------------------


def expected_events(
    device: str,
    fleet: str,
    fixes: Sequence[Fix],
    rules: Sequence[dict[str, Any]],
    fences: Sequence[OracleFence],
    inside: dict[str, list[bool]],
    crossing: dict[str, list[bool]],
    certain: dict[str, list[bool | None]] | None = None,
) -> list[dict[str, Any]]:
    """The events the contract asks for when `device` of `fleet` sends `fixes` (sorted, distinct ts) under
    `rules` (YAML rule dicts). `inside`/`crossing` are the PostGIS flags per fence id, parallel to `fixes`.

    Per (rule, fence) a state that starts outside (unknown = outside); with confirm_fixes N, N consecutive
    fixes disagreeing with the state flip it, and the event is the N-th fix's; an agreeing fix resets the
    count. dwell/speeding fire at most once per visit (the state being inside after the fix). cross looks
    at the raw flags of consecutive fixes only. A rule with `accuracy: strict` reads `certain` instead of
    `inside`, and a fix whose verdict is None (its accuracy circle straddles the edge) neither counts
    toward nor against a change of its state."""
    events: list[dict[str, Any]] = []

    def emit(kind: str, rule: str, fence: str, fix: Fix) -> None:
        events.append(
            {
                "type": kind,
                "rule": rule,
                "fence": fence,
                "device": device,
                "ts": fix.ts,
                "lat": fix.lat,
                "lon": fix.lon,
            }
        )

    for rule in rules:
        if rule.get("fleets") is not None and fleet not in rule["fleets"]:
            continue
        kind = rule["on"]
        need = int(rule.get("confirm_fixes", 1))
        strict = rule.get("accuracy") == "strict"
        for fence in rule_fences(rule, fences):
            raw: Sequence[bool | None] = inside[fence.id]
            if strict:
                assert certain is not None
                raw = certain[fence.id]
            if kind == "cross":
                for i in range(1, len(fixes)):
                    if not raw[i - 1] and not raw[i] and crossing[fence.id][i]:
                        emit(kind, rule["id"], fence.id, fixes[i])
                continue
            state = False  # unknown behaves as outside
            count = 0
            since = 0
            fired = False
            for i, fix in enumerate(fixes):
                if raw[i] is None:
                    pass  # strict, and the accuracy circle straddles the edge: no evidence either way
                elif raw[i] != state:
                    count += 1
                    if count == need:
                        state = bool(raw[i])
                        count = 0
                        fired = False
                        if state:
                            since = fix.ts
                            if kind == "enter":
                                emit(kind, rule["id"], fence.id, fix)
                        elif kind == "exit":
                            emit(kind, rule["id"], fence.id, fix)
                else:
                    count = 0
                if not state or fired:
                    continue
                if kind == "dwell" and fix.ts - since >= rule["dwell_s"] * 1000:
                    emit(kind, rule["id"], fence.id, fix)
                    fired = True
                if kind == "speeding" and fix.speed is not None and fix.speed * 3.6 > rule["max_speed_kmh"]:
                    emit(kind, rule["id"], fence.id, fix)
                    fired = True
    return events
