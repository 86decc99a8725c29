"""Fleet rules from YAML: every `*.yaml` / `*.yml` of the geofences folder becomes `Fence` and `Rule` values.

Policy: a file that fails to parse or validate never takes effect. Its last good version stays in force and
its problems are reported as `file:line: path: reason`, the line taken from the YAML marks. Files are checked
on their own first, then together (unique ids, rule references across files); a combined set that fails
that cross-check does not replace the set in force at all. Reading and parsing are synchronous (the server
runs them in a thread); `watch` only says when to reload.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import difflib
import hashlib
import json
import logging
import math
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypeAlias
from urllib.parse import urlsplit

import shapely
import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry
from watchfiles import Change, awatch

from tracker.errors import ConfigError
from tracker.model import EVENT_TYPES, Fence, Rule

log = logging.getLogger("tracker.geofence")

RULE_SUFFIXES = (".yaml", ".yml")
WATCHED_SUFFIXES = (*RULE_SUFFIXES, ".geojson", ".json")
_POLL_S = 2.0
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")

Loc: TypeAlias = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class LoadResult:
    """The fences and rules to put in force, the current problems, and a sha256 of every file read."""

    fences: tuple[Fence, ...] = ()
    rules: tuple[Rule, ...] = ()
    errors: tuple[str, ...] = ()
    files: dict[str, str] = field(default_factory=dict)


# --- YAML


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans, so that a rule's `on:` key stays the string "on", not True."""


_BOOL = "tag:yaml.org,2002:bool"
_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != _BOOL]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _dotted(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


class _Where:
    """Turns a location inside one YAML document (keys and indexes) into `file:line: path`."""

    def __init__(self, path: str, root: yaml.Node | None) -> None:
        self.path = path
        self.root = root

    def line(self, loc: Loc) -> int:
        """The line of the deepest node along `loc`: a key's own line for a mapping entry."""
        node = self.root
        line = _line(node) if node is not None else 1
        for part in loc:
            if isinstance(node, yaml.MappingNode) and isinstance(part, str):
                for key, value in node.value:
                    if isinstance(key, yaml.ScalarNode) and key.value == part:
                        line, node = _line(key), value
                        break
                else:
                    return line
            elif (
                isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value)
            ):
                node = node.value[part]
                line = _line(node)
            else:
                return line
        return line

    def at(self, loc: Loc) -> str:
        """`file:line` of `loc`."""
        return f"{self.path}:{self.line(loc)}"

    def label(self, loc: Loc) -> str:
        """`file:line: path` of `loc`, the start of every message about it."""
        path = _dotted(loc)
        return f"{self.at(loc)}: {path}" if path else self.at(loc)

    def error(self, loc: Loc, message: str) -> str:
        return f"{self.label(loc)}: {message}"


def _duplicate_keys(node: yaml.Node | None, loc: Loc, out: list[tuple[int, Loc]], done: set[int]) -> None:
    """(line, location) of each repeated key: PyYAML silently keeps the last, and that is rarely meant."""
    if id(node) in done:  # an alias: walked already (and aliases may nest exponentially or loop)
        return
    done.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else None
            if name is not None and name in seen:
                out.append((_line(key), (*loc, name)))
            elif name is not None:
                seen.add(name)
            _duplicate_keys(value, (*loc, name) if name else loc, out, done)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _duplicate_keys(item, (*loc, i), out, done)


# --- Schema: structure, types and ranges; the cross-field checks follow in plain code


def _check_id(value: str) -> str:
    if not _ID_RE.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid id (1-64 letters, digits or '_.:-', starting with a letter or digit)"
        )
    return value


def _check_event_type(value: str) -> str:
    if value not in EVENT_TYPES:
        raise ValueError(f"must be one of {', '.join(EVENT_TYPES)}, not {value!r}")
    return value


Id = Annotated[str, AfterValidator(_check_id)]
Point = Annotated[list[float], Field(min_length=2, max_length=2)]


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)


class _Rings(_Strict):
    exterior: list[Point]
    holes: list[list[Point]] = []


def _polygon_form(value: Any) -> str:
    return "rings" if isinstance(value, dict) else "points"


_UNION_TAGS = ("points", "rings")
PolygonSpec = Annotated[
    Annotated[list[Point], Tag("points")] | Annotated[_Rings, Tag("rings")], Discriminator(_polygon_form)
]


class _Circle(_Strict):
    center: Point
    radius_m: float = Field(gt=0)


class _FenceSpec(_Strict):
    id: Id
    name: str | None = None
    tags: list[str] = []
    polygon: PolygonSpec | None = None
    circle: _Circle | None = None
    geojson: str | None = None


class _RuleSpec(_Strict):
    id: Id
    on: Annotated[str, AfterValidator(_check_event_type)]
    fences: list[str] | None = None
    fence_tags: list[str] | None = None
    fleets: list[Id] | None = Field(default=None, min_length=1)
    dwell_s: float | None = Field(default=None, gt=0)
    max_speed_kmh: float | None = Field(default=None, gt=0)
    confirm_fixes: int = Field(default=1, ge=1, le=100)
    notify: list[str] = ["viewers"]


class _FileSpec(_Strict):
    fences: list[Any] | None = None
    rules: list[Any] | None = None


_MODELS: dict[str, type[BaseModel]] = {"circle": _Circle, "polygon": _Rings}


def _yamlish(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _pydantic_errors(exc: ValidationError, prefix: Loc, model: type[BaseModel]) -> list[tuple[Loc, str]]:
    """Pydantic's errors as (location, message), worded for a YAML author and naming what was given."""
    out: list[tuple[Loc, str]] = []
    for err in exc.errors(include_url=False):
        loc: list[str | int] = []
        for part in err["loc"]:
            if part in _UNION_TAGS and loc and loc[-1] == "polygon":
                continue
            loc.append(part)
        kind, message = err["type"], err["msg"]
        if kind == "missing":
            message = "is required"
        elif kind == "extra_forbidden":
            parent = next((p for p in reversed(loc[:-1]) if isinstance(p, str)), None)
            allowed = list((_MODELS.get(parent or "") or model).model_fields)
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            hint = f"did you mean '{close[0]}'?" if close else "expected one of " + ", ".join(allowed)
            message = f"unknown key ({hint})"
        elif kind == "value_error":
            message = str(err["ctx"]["error"])
        else:
            message = message.replace(" after validation", "")
            for old, new in (
                ("Input should be", "must be"),
                ("List should", "must"),
                ("String should", "must"),
            ):
                if message.startswith(old):
                    message = new + message[len(old) :]
            if kind.endswith("_type"):
                message += f", not {_yamlish(err['input'])}"
        out.append(((*prefix, *loc), message))
    return out


# --- Geometry


def _position_problem(point: Any) -> str | None:
    """Why `point` is not a usable [lon, lat] position, or None."""
    if not isinstance(point, list | tuple) or len(point) < 2:
        return "must be [lon, lat]"
    lon, lat = point[0], point[1]
    if not all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in (lon, lat)
    ):
        return "must be [lon, lat] with finite numbers"
    if not -180 <= lon <= 180:
        return f"lon {lon} is outside -180..180"
    if not -90 <= lat <= 90:
        return f"lat {lat} is outside -90..90"
    return None


def _ring_problem(points: Sequence[Any]) -> tuple[int | None, str] | None:
    """The first problem of a ring as (point index or None for the whole ring, message), or None."""
    for i, point in enumerate(points):
        problem = _position_problem(point)
        if problem:
            return i, f"point {i}: {problem}"
    distinct = {(float(p[0]), float(p[1])) for p in points}
    if len(distinct) < 3:
        return None, f"needs at least 3 distinct points, has {len(distinct)}"
    return None


def repair(geom: BaseGeometry) -> Polygon | MultiPolygon:
    """The polygonal part of `make_valid(geom)`: what an invalid fence polygon is evaluated as."""
    polygons: list[Polygon] = []
    for part in shapely.get_parts(shapely.make_valid(geom)):
        if isinstance(part, Polygon):
            polygons.append(part)
        elif isinstance(part, MultiPolygon):
            polygons.extend(part.geoms)
    return polygons[0] if len(polygons) == 1 else MultiPolygon(polygons) if polygons else Polygon()


def _polygonal(geom: Polygon | MultiPolygon, fence_id: str, source: str) -> Polygon | MultiPolygon:
    """`geom` itself when OGC-valid, else its `repair`, with a warning naming the fence."""
    if geom.is_valid:
        return geom
    log.warning(
        "fence %s (%s): polygon is not valid (%s); repaired with make_valid",
        fence_id,
        source,
        shapely.is_valid_reason(geom),
    )
    return repair(geom)


class _GeoJSONError(ValueError):
    """A problem inside a GeoJSON file; the message names the place in the file."""


def _geojson_polygon(geometry: Any, where: str) -> Polygon | MultiPolygon:
    if not isinstance(geometry, dict):
        raise _GeoJSONError(f"{where}: must be a GeoJSON geometry object")
    kind, coords = geometry.get("type"), geometry.get("coordinates")
    if kind not in ("Polygon", "MultiPolygon"):
        raise _GeoJSONError(f"{where}: type {kind!r} is not Polygon or MultiPolygon")
    polygons = [coords] if kind == "Polygon" else coords
    if not isinstance(polygons, list) or not polygons:
        raise _GeoJSONError(f"{where}.coordinates: must be a non-empty list")
    built: list[Polygon] = []
    for p, rings in enumerate(polygons):
        at = f"{where}.coordinates" + ("" if kind == "Polygon" else f"[{p}]")
        if not isinstance(rings, list) or not rings:
            raise _GeoJSONError(f"{at}: must be a non-empty list of rings")
        for r, ring in enumerate(rings):
            problem = _ring_problem(ring) if isinstance(ring, list) else (None, "must be a list of positions")
            if problem:
                raise _GeoJSONError(f"{at}[{r}]: {problem[1]}")
        shell, *holes = ([(float(x[0]), float(x[1])) for x in ring] for ring in rings)
        built.append(Polygon(shell, holes))
    return built[0] if kind == "Polygon" else MultiPolygon(built)


def _geojson_parts(doc: Any) -> tuple[bool, list[tuple[str | None, str | None, Polygon | MultiPolygon]]]:
    """(is a collection, [(feature id, properties.name, geometry)]) of a GeoJSON document."""
    if not isinstance(doc, dict):
        raise _GeoJSONError("must be a GeoJSON object")
    crs = doc.get("crs")
    if crs is not None:
        name = str((crs.get("properties") or {}).get("name", "")) if isinstance(crs, dict) else ""
        if not re.search(r"CRS84$|EPSG:*4326$", name):
            raise _GeoJSONError(f"crs {name or crs!r} is not WGS84 lon/lat (RFC 7946); reproject the file")

    def feature(f: Any, where: str) -> tuple[str | None, str | None, Polygon | MultiPolygon]:
        if not isinstance(f, dict) or f.get("type") != "Feature":
            raise _GeoJSONError(f"{where}: must be a Feature")
        props = f.get("properties")
        name = props.get("name") if isinstance(props, dict) else None
        fid = f.get("id")
        if isinstance(fid, float) and fid.is_integer():
            fid = int(fid)
        key = None if fid is None or isinstance(fid, bool) else str(fid)
        return key, name, _geojson_polygon(f.get("geometry"), f"{where}.geometry")

    kind = doc.get("type")
    if kind == "FeatureCollection":
        features = doc.get("features")
        if not isinstance(features, list) or not features:
            raise _GeoJSONError("features: must be a non-empty list")
        return True, [feature(f, f"features[{i}]") for i, f in enumerate(features)]
    if kind == "Feature":
        return False, [feature(doc, "feature")]
    return False, [(None, None, _geojson_polygon(doc, "geometry"))]


# --- One file


@dataclass(frozen=True, slots=True)
class _Entry:
    """One `fences:` entry and the fences it gave (several for a GeoJSON collection)."""

    id: str
    at: str  # `file:line: fences[i].id`, for duplicate messages
    where: str  # `file:line` alone
    fences: tuple[Fence, ...]
    collection: bool


@dataclass(frozen=True, slots=True)
class _Ref:
    kind: str  # "id" or "tag"
    name: str
    at: str  # `file:line: rules[i].fences[j]`


@dataclass(frozen=True, slots=True)
class _Draft:
    """A rule as its file states it, fence references still unresolved."""

    rule: Rule
    at: str  # `file:line: rules[i].id`
    where: str  # `file:line` alone
    label: str  # `file:line: rules[i]`
    refs: tuple[_Ref, ...]


@dataclass(frozen=True, slots=True)
class _FileResult:
    path: str
    deps: dict[str, str | None]  # this file and its GeoJSON files -> sha256 (None: missing)
    errors: tuple[str, ...] = ()
    entries: tuple[_Entry, ...] = ()
    drafts: tuple[_Draft, ...] = ()


def _sha(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


class _FileParser:
    """Parses and validates one YAML file on its own; problems go to `errors`."""

    def __init__(self, path: Path, text: str, deps: dict[str, str | None]) -> None:
        self.path, self.text, self.deps = path, text, deps
        self.errors: list[str] = []
        self.where = _Where(str(path), None)

    def run(self) -> _FileResult:
        entries, drafts = self._parse()
        if not self.errors:
            self.errors.extend(_unique(entries, drafts))
        if self.errors:
            entries, drafts = [], []
        return _FileResult(str(self.path), self.deps, tuple(self.errors), tuple(entries), tuple(drafts))

    def _fail(self, loc: Loc, message: str) -> None:
        self.errors.append(self.where.error(loc, message))

    def _parse(self) -> tuple[list[_Entry], list[_Draft]]:
        loader: _Loader | None = None
        try:
            loader = _Loader(self.text)
            root = loader.get_single_node()
            data = loader.construct_document(root) if root is not None else None
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = int(mark.line) + 1 if mark is not None else 1
            detail = str(exc.problem or exc.context or exc)
            if exc.problem and exc.context:
                where = f" at line {int(exc.context_mark.line) + 1}" if exc.context_mark else ""
                detail += f" ({exc.context}{where})"
            self.errors.append(f"{self.path}:{line}: YAML syntax error: {detail}")
            return [], []
        except yaml.YAMLError as exc:
            self.errors.append(f"{self.path}:1: YAML error: {exc}")
            return [], []
        finally:
            if loader is not None:
                loader.dispose()
        self.where = _Where(str(self.path), root)
        dupes: list[tuple[int, Loc]] = []
        _duplicate_keys(root, (), dupes, set())
        for line, loc in dupes:
            self.errors.append(f"{self.path}:{line}: {_dotted(loc)}: duplicate key '{loc[-1]}'")
        try:
            spec = _FileSpec.model_validate(data if data is not None else {})
        except ValidationError as exc:
            for loc, message in _pydantic_errors(exc, (), _FileSpec):
                self._fail(loc, "must be a mapping with fences and rules" if loc == () else message)
            return [], []
        entries = [e for i, raw in enumerate(spec.fences or []) if (e := self._fence(i, raw))]
        drafts = [d for i, raw in enumerate(spec.rules or []) if (d := self._rule(i, raw))]
        return entries, drafts

    def _validate(self, model: type[_FenceSpec] | type[_RuleSpec], loc: Loc, raw: Any) -> Any:
        try:
            return model.model_validate(raw)
        except ValidationError as exc:
            for where, message in _pydantic_errors(exc, loc, model):
                self._fail(where, message)
            return None

    def _fence(self, i: int, raw: Any) -> _Entry | None:
        loc: Loc = ("fences", i)
        spec: _FenceSpec | None = self._validate(_FenceSpec, loc, raw)
        if spec is None:
            return None
        kinds = [k for k in ("polygon", "circle", "geojson") if getattr(spec, k) is not None]
        if len(kinds) != 1:
            message = "needs one of polygon, circle or geojson"
            self._fail((*loc, kinds[1]) if kinds else loc, message + (" (only one)" if kinds else ""))
            return None
        source = self.where.at(loc)
        tags = tuple(dict.fromkeys(spec.tags))
        at, where = self.where.label((*loc, "id")), self.where.at((*loc, "id"))
        if spec.circle is not None:
            problem = _position_problem(spec.circle.center)
            if problem:
                self._fail((*loc, "circle", "center"), problem)
                return None
            lon, lat = spec.circle.center
            fence = Fence(
                spec.id,
                spec.name,
                tags,
                center_lonlat=(lon, lat),
                radius_m=spec.circle.radius_m,
                source=source,
            )
            return _Entry(spec.id, at, where, (fence,), False)
        if spec.polygon is not None:
            geom = self._polygon(spec.polygon, (*loc, "polygon"), spec.id, source)
            if geom is None:
                return None
            fence = Fence(spec.id, spec.name, tags, geometry=geom, source=source)
            return _Entry(spec.id, at, where, (fence,), False)
        return self._geojson(spec, (*loc, "geojson"), tags, (at, where), source)

    def _polygon(
        self, spec: list[list[float]] | _Rings, loc: Loc, fence_id: str, source: str
    ) -> Polygon | MultiPolygon | None:
        if isinstance(spec, _Rings):
            rings = [((*loc, "exterior"), spec.exterior)]
            rings += [((*loc, "holes", h), hole) for h, hole in enumerate(spec.holes)]
        else:
            rings = [(loc, spec)]
        ok = True
        for ring_loc, ring in rings:
            problem = _ring_problem(ring)
            if problem:
                index, message = problem
                if index is None:
                    self._fail(ring_loc, message)
                else:
                    self._fail((*ring_loc, index), message.split(": ", 1)[1])
                ok = False
        if not ok:
            return None
        shell, *holes = ([(p[0], p[1]) for p in ring] for _, ring in rings)
        geom = _polygonal(Polygon(shell, holes), fence_id, source)
        if geom.is_empty or geom.area == 0:
            self._fail(loc, "has zero area")
            return None
        return geom

    def _geojson(
        self, spec: _FenceSpec, loc: Loc, tags: tuple[str, ...], at: tuple[str, str], source: str
    ) -> _Entry | None:
        assert spec.geojson is not None
        path = Path(spec.geojson)
        path = path if path.is_absolute() else self.path.parent / path
        try:
            content = path.read_bytes()
        except OSError as exc:
            self.deps[str(path)] = None
            self._fail(loc, f"cannot read {path}: {exc.strerror or exc}")
            return None
        self.deps[str(path)] = hashlib.sha256(content).hexdigest()
        try:
            collection, parts = _geojson_parts(json.loads(content))
        except json.JSONDecodeError as exc:
            self._fail(loc, f"{path}: line {exc.lineno}: not valid JSON: {exc.msg}")
            return None
        except UnicodeDecodeError:
            self._fail(loc, f"{path}: not UTF-8 text")
            return None
        except _GeoJSONError as exc:
            self._fail(loc, f"{path}: {exc}")
            return None
        fences: list[Fence] = []
        for index, (key, name, raw_geom) in enumerate(parts):
            fence_id = f"{spec.id}:{key if key is not None else index}" if collection else spec.id
            if not _ID_RE.fullmatch(fence_id):
                self._fail(
                    loc, f"{path}: feature {index} gives fence id {fence_id!r}, which is not a valid id"
                )
                return None
            geom = _polygonal(raw_geom, fence_id, source)
            if geom.is_empty or geom.area == 0:
                self._fail(loc, f"{path}: feature {index} has zero area")
                return None
            # A collection's features carry their own names; a single shape is named by its entry first.
            shown = (name or spec.name) if collection else (spec.name or name)
            fences.append(Fence(fence_id, shown, tags, geometry=geom, source=source))
        return _Entry(spec.id, *at, tuple(fences), collection)

    def _rule(self, i: int, raw: Any) -> _Draft | None:
        loc: Loc = ("rules", i)
        spec: _RuleSpec | None = self._validate(_RuleSpec, loc, raw)
        if spec is None:
            return None
        before = len(self.errors)
        for key, event in (("dwell_s", "dwell"), ("max_speed_kmh", "speeding")):
            given = getattr(spec, key) is not None
            if given and spec.on != event:
                self._fail((*loc, key), f"is only allowed with on: {event}")
            elif not given and spec.on == event:
                self._fail((*loc, key), f"is required with on: {event}")
        if spec.fences is None and spec.fence_tags is None:
            self._fail(loc, "needs fences or fence_tags")
        for j, target in enumerate(spec.notify):
            if target in ("viewers", "device"):
                continue
            url = urlsplit(target)
            if url.scheme not in ("http", "https") or not url.hostname:
                self._fail((*loc, "notify", j), f"must be viewers, device or an http(s) URL, not {target!r}")
        if len(self.errors) > before:
            return None
        refs = [_Ref("id", n, self.where.label((*loc, "fences", j))) for j, n in enumerate(spec.fences or [])]
        refs += [
            _Ref("tag", t, self.where.label((*loc, "fence_tags", j)))
            for j, t in enumerate(spec.fence_tags or [])
        ]
        rule = Rule(
            id=spec.id,
            on=spec.on,
            fences=(),
            fleets=frozenset(spec.fleets) if spec.fleets is not None else None,
            dwell_s=spec.dwell_s,
            max_speed_kmh=spec.max_speed_kmh,
            confirm_fixes=spec.confirm_fixes,
            notify=tuple(dict.fromkeys(spec.notify)),
            source=self.where.at(loc),
        )
        at = (*loc, "id")
        return _Draft(rule, self.where.label(at), self.where.at(at), self.where.label(loc), tuple(refs))


def _parse_file(path: Path) -> _FileResult:
    """Parse and validate one YAML file on its own (no cross-file checks)."""
    key = str(path)
    try:
        content = path.read_bytes()
    except OSError as exc:
        return _FileResult(key, {key: None}, (f"{key}:1: cannot read: {exc.strerror or exc}",))
    deps: dict[str, str | None] = {key: hashlib.sha256(content).hexdigest()}
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = content[: exc.start].count(b"\n") + 1
        return _FileResult(key, deps, (f"{key}:{line}: not UTF-8 text",))
    return _FileParser(path, text, deps).run()


# --- All files together


def _unique(entries: Sequence[_Entry], drafts: Sequence[_Draft]) -> list[str]:
    """Errors for repeated fence ids (entry and feature ids share one namespace) and rule ids."""
    errors: list[str] = []
    first: dict[str, str] = {}
    for entry in entries:
        names = [entry.id] + ([f.id for f in entry.fences] if entry.collection else [])
        for name in dict.fromkeys(names):
            if name in first:
                errors.append(f"{entry.at}: duplicate fence id '{name}' (first defined at {first[name]})")
            else:
                first[name] = entry.where
    seen: dict[str, str] = {}
    for draft in drafts:
        if draft.rule.id in seen:
            errors.append(
                f"{draft.at}: duplicate rule id '{draft.rule.id}' (first defined at {seen[draft.rule.id]})"
            )
        else:
            seen[draft.rule.id] = draft.where
    return errors


def _combine(results: Sequence[_FileResult]) -> tuple[tuple[Fence, ...], tuple[Rule, ...], list[str]]:
    """The combined fences and resolved rules of files that are each valid, and the cross-check's errors."""
    entries = [e for r in results for e in r.entries]
    drafts = [d for r in results for d in r.drafts]
    errors = _unique(entries, drafts)
    fences = tuple(f for e in entries for f in e.fences)
    order = {f.id: i for i, f in enumerate(fences)}
    by_name: dict[str, list[str]] = {f.id: [f.id] for f in fences}
    by_name.update({e.id: [f.id for f in e.fences] for e in entries})
    by_tag: dict[str, list[str]] = {}
    for f in fences:
        for tag in f.tags:
            by_tag.setdefault(tag, []).append(f.id)
    rules: list[Rule] = []
    for draft in drafts:
        chosen: set[str] = set()
        for ref in draft.refs:
            found = (by_name if ref.kind == "id" else by_tag).get(ref.name)
            if found:
                chosen.update(found)
            elif ref.kind == "id":
                errors.append(f"{ref.at}: unknown fence '{ref.name}'")
            else:
                errors.append(f"{ref.at}: no fence has tag '{ref.name}'")
        if not draft.refs:
            errors.append(f"{draft.label}: fences and fence_tags select no fence")
        rules.append(dataclasses.replace(draft.rule, fences=tuple(sorted(chosen, key=order.__getitem__))))
    return fences, tuple(rules), errors


def _rule_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(
        (p for p in folder.iterdir() if p.suffix in RULE_SUFFIXES and p.is_file()), key=lambda p: p.name
    )


class FenceLoader:
    """Reloads a geofences folder, keeping the last good version of each file and the last good whole set."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._parsed: dict[
            str, _FileResult
        ] = {}  # newest parse per file, reused while its files are unchanged
        self._good: dict[str, _FileResult] = {}  # last version of each file that was valid on its own
        self._in_force = LoadResult()

    def _parse(self, path: Path) -> _FileResult:
        key = str(path)
        cached = self._parsed.get(key)
        if cached is not None and all(_sha(Path(dep)) == sha for dep, sha in cached.deps.items()):
            return cached
        self._parsed[key] = result = _parse_file(path)
        return result

    def load(self) -> LoadResult:
        """Re-read the folder (synchronously) and return the set to put in force with the current problems.

        The problems are returned, not logged: the caller reports them where users look.
        """
        paths = _rule_files(self.folder)
        keys = [str(p) for p in paths]
        errors: list[str] = []
        files: dict[str, str] = {}
        for path, key in zip(paths, keys, strict=True):
            parsed = self._parse(path)
            files.update({dep: sha for dep, sha in parsed.deps.items() if sha is not None})
            errors.extend(parsed.errors)
            if not parsed.errors:
                self._good[key] = parsed
        for gone in set(self._good) - set(keys):
            del self._good[gone]
        for gone in set(self._parsed) - set(keys):
            del self._parsed[gone]
        fences, rules, cross = _combine([self._good[k] for k in keys if k in self._good])
        if cross:
            kept = self._in_force
            return LoadResult(kept.fences, kept.rules, (*errors, *cross), files)
        self._in_force = LoadResult(fences, rules, (), files)
        return LoadResult(fences, rules, tuple(errors), files)


def load_folder(folder: Path) -> LoadResult:
    """Every rules file of `folder` loaded once, as a fresh `FenceLoader` would (no earlier set to keep)."""
    return FenceLoader(folder).load()


def check_folder(folder: Path) -> list[str]:
    """The problems of every rules file of `folder` as `file:line: reason` (empty when all are valid).

    Raises ConfigError when `folder` is not a folder.
    """
    if not folder.is_dir():
        raise ConfigError(f"geofences folder '{folder}' does not exist or is not a folder")
    return list(load_folder(folder).errors)


# --- Watching


async def watch(
    folder: Path, on_change: Callable[[], Awaitable[object]], stop: asyncio.Event | None = None
) -> None:
    """Coroutine: await `on_change()` after each change to a rules or GeoJSON file in `folder`, until `stop`.

    A missing folder is looked for every 2 s; its appearance and its removal count as changes. An exception
    from `on_change` is logged and watching goes on.
    """
    stop = stop or asyncio.Event()
    target = folder.resolve()

    def relevant(change: Change, path: str) -> bool:
        return path.endswith(WATCHED_SUFFIXES) or Path(path).resolve() == target

    async def notify() -> None:
        try:
            await on_change()
        except Exception:
            log.exception("geofences: reloading %s failed", folder)

    missing = False
    while not stop.is_set():
        if not folder.is_dir():
            if not missing:
                log.warning("geofences folder %s does not exist; waiting for it", folder)
                missing = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), _POLL_S)
            continue
        if missing:
            log.info("geofences folder %s appeared", folder)
            missing = False
            await notify()
        try:
            watcher = awatch(folder, stop_event=stop, watch_filter=relevant, recursive=False)
            async with contextlib.aclosing(watcher) as changes:
                async for _ in changes:
                    await notify()
                    if not folder.is_dir():
                        break
        except FileNotFoundError:
            continue  # removed between the check and the start of the watch
