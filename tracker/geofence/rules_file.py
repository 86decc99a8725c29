"""One rules file on its own: its YAML read, validated, and turned into fences and draft rules.

Policy: every problem of the file is collected, not just the first, each as `file:line: path: reason`.
A file with any problem gives no fences and no rules (its last good version is the loader's business).
Rules keep their fence references unresolved, since they may name fences of other files; `config.py`
resolves them across the folder. The GeoJSON files a fence names are read here and hashed with the file,
so that a change to either makes the loader parse it again.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from shapely.geometry import MultiPolygon, Polygon

from tracker.errors import ConfigError
from tracker.geofence.geojson import GeoJSONError, read_features
from tracker.geofence.polygons import fence_polygon, position_problem, rings_polygon
from tracker.geofence.rule_checks import filter_problems, rule_problems
from tracker.geofence.schema import FenceSpec, FileSpec, FilterSpec, PolygonSpec, RuleSpec, is_id, problems
from tracker.geofence.yaml_marks import Loc, Where, alias_line, duplicate_keys, read_document
from tracker.model import Fence, FixFilter, Rule

# A posted file's `geojson:` may only name a file of the geofences folder by its plain name.
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)*$")


@dataclass(frozen=True, slots=True)
class Entry:
    """One `fences:` entry and the fences it gave (several for a GeoJSON collection)."""

    id: str
    at: str  # `file:line: fences[i].id`, for duplicate messages
    where: str  # `file:line` alone
    fences: tuple[Fence, ...]
    collection: bool


@dataclass(frozen=True, slots=True)
class Ref:
    """A rule's reference to fences, by id or by tag."""

    kind: str  # "id" or "tag"
    name: str
    at: str  # `file:line: rules[i].fences[j]`


@dataclass(frozen=True, slots=True)
class Draft:
    """A rule as its file states it, fence references still unresolved."""

    rule: Rule
    at: str  # `file:line: rules[i].id`
    where: str  # `file:line` alone
    label: str  # `file:line: rules[i]`
    refs: tuple[Ref, ...]


@dataclass(frozen=True, slots=True)
class FileResult:
    """What one file gave: its fence entries and draft rules, or its problems."""

    path: str
    deps: dict[str, str | None]  # this file and its GeoJSON files -> sha256 (None: missing)
    errors: tuple[str, ...] = ()
    entries: tuple[Entry, ...] = ()
    drafts: tuple[Draft, ...] = ()
    filters: tuple[FixFilter, ...] = ()

    def is_current(self) -> bool:
        """True while the file and its GeoJSON files are as they were read, so this result still holds."""
        return all(_sha(Path(dep)) == sha for dep, sha in self.deps.items())


def _sha(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def parse_file(path: Path) -> FileResult:
    """Parse and validate one YAML file on its own (no cross-file checks)."""
    key = str(path)
    try:
        content = path.read_bytes()
    except OSError as exc:
        return FileResult(key, {key: None}, (f"{key}:1: cannot read: {exc.strerror or exc}",))
    deps: dict[str, str | None] = {key: hashlib.sha256(content).hexdigest()}
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = content[: exc.start].count(b"\n") + 1
        return FileResult(key, deps, (f"{key}:{line}: not UTF-8 text",))
    return _FileParser(path, text, deps).run()


def parse_text(name: str, text: str, geojson_folder: Path | None) -> FileResult:
    """Parse and validate a rules file that arrives as text (a dry-run's posted file), on its own.

    Such a file comes from a client, not from the server's folder, so it may read nothing else of this
    machine: its `geojson:` entries may only name a plain file name (no folder, no `..`) inside
    `geojson_folder`, and none at all when that is None. YAML aliases are refused, since a few lines of
    them expand into more nodes than any size limit on the text bounds. Problems read `name:line: reason`.
    """
    deps: dict[str, str | None] = {name: hashlib.sha256(text.encode()).hexdigest()}
    alias = alias_line(text)
    if alias is not None:
        return FileResult(name, deps, (f"{name}:{alias}: YAML aliases (*name) are not allowed here",))
    return _FileParser(Path(name), text, deps, confined=True, geojson_folder=geojson_folder).run()


def duplicate_ids(entries: Sequence[Entry], drafts: Sequence[Draft]) -> list[str]:
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


class _FileParser:
    """Parses and validates one YAML file on its own; problems go to `errors`."""

    def __init__(
        self,
        path: Path,
        text: str,
        deps: dict[str, str | None],
        *,
        confined: bool = False,
        geojson_folder: Path | None = None,
    ) -> None:
        self.path, self.text, self.deps = path, text, deps
        self.confined, self.geojson_folder = confined, geojson_folder  # see `parse_text`
        self.errors: list[str] = []
        self.where = Where(str(path), None)

    def run(self) -> FileResult:
        entries, drafts, filters = self._parse()
        if not self.errors:
            self.errors.extend(duplicate_ids(entries, drafts))
        if self.errors:
            entries, drafts, filters = [], [], []
        return FileResult(
            str(self.path), self.deps, tuple(self.errors), tuple(entries), tuple(drafts), tuple(filters)
        )

    def _fail(self, loc: Loc, message: str) -> None:
        self.errors.append(self.where.error(loc, message))

    def _parse(self) -> tuple[list[Entry], list[Draft], list[FixFilter]]:
        try:
            root, data = read_document(str(self.path), self.text)
        except ConfigError as exc:
            self.errors.append(str(exc))
            return [], [], []
        self.where = Where(str(self.path), root)
        self.errors.extend(duplicate_keys(str(self.path), root))
        try:
            spec = FileSpec.model_validate(data if data is not None else {})
        except ValidationError as exc:
            for loc, message in problems(exc, (), FileSpec):
                self._fail(loc, "must be a mapping with fences and rules" if loc == () else message)
            return [], [], []
        entries = [e for i, raw in enumerate(spec.fences or []) if (e := self._fence(i, raw))]
        drafts = [d for i, raw in enumerate(spec.rules or []) if (d := self._rule(i, raw))]
        filters = [f for i, raw in enumerate(spec.filters or []) if (f := self._filter(i, raw))]
        return entries, drafts, filters

    def _filter(self, i: int, raw: Any) -> FixFilter | None:
        loc: Loc = ("filters", i)
        spec: FilterSpec | None = self._validate(FilterSpec, loc, raw)
        if spec is None:
            return None
        found = filter_problems(spec)
        for where, message in found:
            self._fail((*loc, *where), message)
        if found:
            return None
        return FixFilter(
            fleets=frozenset(spec.fleets) if spec.fleets is not None else None,
            max_accuracy_m=spec.max_accuracy_m,
            max_speed_kmh=spec.max_speed_kmh,
            min_distance_m=spec.min_distance_m or None,
            jump_window_s=spec.jump_window_s,
            keep_every_s=spec.keep_every_s,
            source=self.where.at(loc),
        )

    def _validate(
        self, model: type[FenceSpec] | type[RuleSpec] | type[FilterSpec], loc: Loc, raw: Any
    ) -> Any:
        try:
            return model.model_validate(raw)
        except ValidationError as exc:
            for where, message in problems(exc, loc, model):
                self._fail(where, message)
            return None

    def _fence(self, i: int, raw: Any) -> Entry | None:
        loc: Loc = ("fences", i)
        spec: FenceSpec | None = self._validate(FenceSpec, loc, raw)
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
            problem = position_problem(spec.circle.center)
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
            return Entry(spec.id, at, where, (fence,), False)
        if spec.polygon is not None:
            geom = self._polygon(spec.polygon, (*loc, "polygon"), spec.id, source)
            if geom is None:
                return None
            fence = Fence(spec.id, spec.name, tags, geometry=geom, source=source)
            return Entry(spec.id, at, where, (fence,), False)
        return self._geojson(spec, (*loc, "geojson"), tags, (at, where), source)

    def _polygon(
        self, spec: PolygonSpec, loc: Loc, fence_id: str, source: str
    ) -> Polygon | MultiPolygon | None:
        if isinstance(spec, list):
            rings = [(loc, spec)]
        else:
            rings = [((*loc, "exterior"), spec.exterior)]
            rings += [((*loc, "holes", h), hole) for h, hole in enumerate(spec.holes)]
        geom, found = rings_polygon(rings, fence_id, source)
        for where, message in found:
            self._fail(where if where is not None else loc, message)
        return geom

    def _geojson(
        self, spec: FenceSpec, loc: Loc, tags: tuple[str, ...], at: tuple[str, str], source: str
    ) -> Entry | None:
        assert spec.geojson is not None
        if "\x00" in spec.geojson:
            self._fail(loc, "must be a file path; it holds a NUL character")
            return None
        if self.confined:
            if self.geojson_folder is None:
                self._fail(loc, "is not read from a posted file; use polygon or circle")
                return None
            if not _PLAIN_NAME.fullmatch(spec.geojson):
                self._fail(
                    loc,
                    f"must be a plain file name in the server's geofences folder (no folder, no '..'); "
                    f"got {spec.geojson!r:.80}",
                )
                return None
            path = self.geojson_folder / spec.geojson
        else:
            path = Path(spec.geojson)
            path = path if path.is_absolute() else self.path.parent / path
        label = spec.geojson if self.confined else str(path)  # a client is not told the server's folders
        try:
            content = path.read_bytes()
        except OSError as exc:
            self.deps[str(path)] = None
            self._fail(loc, f"cannot read {label}: {exc.strerror or exc}")
            return None
        self.deps[str(path)] = hashlib.sha256(content).hexdigest()
        try:
            collection, parts = read_features(content)
        except GeoJSONError as exc:
            self._fail(loc, f"{label}: {exc}")
            return None
        fences: list[Fence] = []
        for index, (key, name, raw_geom) in enumerate(parts):
            fence_id = f"{spec.id}:{key if key is not None else index}" if collection else spec.id
            if not is_id(fence_id):
                self._fail(
                    loc, f"{label}: feature {index} gives fence id {fence_id!r}, which is not a valid id"
                )
                return None
            geom = fence_polygon(raw_geom, fence_id, source)
            if geom is None:
                self._fail(loc, f"{label}: feature {index} has zero area")
                return None
            # A collection's features carry their own names; a single shape is named by its entry first.
            shown = (name or spec.name) if collection else (spec.name or name)
            fences.append(Fence(fence_id, shown, tags, geometry=geom, source=source))
        return Entry(spec.id, *at, tuple(fences), collection)

    def _rule(self, i: int, raw: Any) -> Draft | None:
        loc: Loc = ("rules", i)
        spec: RuleSpec | None = self._validate(RuleSpec, loc, raw)
        if spec is None:
            return None
        found = rule_problems(spec)
        for where, message in found:
            self._fail((*loc, *where), message)
        if found:
            return None
        refs = [Ref("id", n, self.where.label((*loc, "fences", j))) for j, n in enumerate(spec.fences or [])]
        refs += [
            Ref("tag", t, self.where.label((*loc, "fence_tags", j)))
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
            strict=spec.accuracy == "strict",
            near_fleets=frozenset(spec.near_fleets) if spec.near_fleets is not None else None,
            distance_m=spec.distance_m,
        )
        at = (*loc, "id")
        return Draft(rule, self.where.label(at), self.where.at(at), self.where.label(loc), tuple(refs))
