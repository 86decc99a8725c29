"""The schema of a rules file: structure, types and ranges of `fences:` and `rules:` entries, in pydantic.

Policy: strict types (a YAML string is never taken for a number), unknown keys refused with a guess at
the key meant, and pydantic's messages reworded for a YAML author, each naming what was given. The
checks across fields (one shape per fence, `dwell_s` only with `on: dwell`, ...) are plain code in
`rules_file.py`, where the messages can point at the right line.
"""

from __future__ import annotations

import difflib
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError

from tracker.geofence.yaml_marks import Loc
from tracker.model import RULE_TYPES
from tracker.parse import ID_PATTERN


def is_id(value: str) -> bool:
    """True when `value` may name a fence or rule: 1-64 letters, digits or `_.:-`, first a letter or digit."""
    return ID_PATTERN.fullmatch(value) is not None


def _check_id(value: str) -> str:
    if not is_id(value):
        raise ValueError(
            f"{value!r} is not a valid id (1-64 letters, digits or '_.:-', starting with a letter or digit)"
        )
    return value


def _check_event_type(value: str) -> str:
    if value not in RULE_TYPES:
        raise ValueError(f"must be one of {', '.join(RULE_TYPES)}, not {value!r}")
    return value


def _check_accuracy(value: str) -> str:
    if value not in ("ignore", "strict"):
        raise ValueError(f"must be ignore or strict, not {value!r}")
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


class FenceSpec(_Strict):
    """One `fences:` entry; exactly one of `polygon`, `circle` and `geojson` is checked by the parser."""

    id: Id
    name: str | None = None
    tags: list[str] = []
    polygon: PolygonSpec | None = None
    circle: _Circle | None = None
    geojson: str | None = None


class RuleSpec(_Strict):
    """One `rules:` entry, fence references unresolved."""

    id: Id
    on: Annotated[str, AfterValidator(_check_event_type)]
    fences: list[str] | None = None
    fence_tags: list[str] | None = None
    fleets: list[Id] | None = Field(default=None, min_length=1)
    dwell_s: float | None = Field(default=None, gt=0)
    max_speed_kmh: float | None = Field(default=None, gt=0)
    confirm_fixes: int = Field(default=1, ge=1, le=100)
    notify: list[str] = ["viewers"]
    accuracy: Annotated[str, AfterValidator(_check_accuracy)] = "ignore"
    near_fleets: list[Id] | None = Field(default=None, min_length=1)
    distance_m: float | None = Field(default=None, gt=0, le=100_000)


class FilterSpec(_Strict):
    """One `filters:` entry: the fix filter of some fleets (all, without `fleets`)."""

    fleets: list[Id] | None = Field(default=None, min_length=1)
    max_accuracy_m: float | None = Field(default=None, gt=0)
    max_speed_kmh: float | None = Field(default=None, gt=0)
    min_distance_m: float | None = Field(default=None, ge=0)
    jump_window_s: float | None = Field(default=None, gt=0, le=86_400)
    keep_every_s: float | None = Field(default=None, gt=0, le=86_400)


class FileSpec(_Strict):
    """A whole file: its entries stay raw here, so that one bad entry does not hide the others."""

    fences: list[Any] | None = None
    rules: list[Any] | None = None
    filters: list[Any] | None = None


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
    return f"{value!r:.60}"


def problems(exc: ValidationError, prefix: Loc, model: type[BaseModel]) -> list[tuple[Loc, str]]:
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
        elif kind == "model_type":  # pydantic names the class: say what the YAML should hold instead
            message = f"must be a mapping of keys to values, not {_yamlish(err['input'])}"
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
