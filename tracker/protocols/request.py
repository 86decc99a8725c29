"""One app request made into fix objects, and the conversions every app shares.

Policy, as the apps behave: only the position and its time can refuse a fix. An optional field the app
marks as unknown (absent, empty, `null`, `NaN`, or the -1 that OwnTracks, CoreLocation, Android and
Traccar Client send for a speed, heading, accuracy or battery they do not know) is left out; one the
contract cannot take (not a number, out of range) is left out of the fix too and kept as sent in its
`attrs`, since an app resends a refused request as it is and one bad field would block its queue for
good. Fields the contract does not know are kept in `attrs`, in the app's order, up to the size the
contract allows (a field that PostgreSQL cannot keep, one with a NUL character, is left out too).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from tracker.errors import InvalidFix
from tracker.parse import NUMBER_TEXT, seconds_or_ms, text_number
from tracker.validation import MAX_ATTRS_BYTES, MIN_TS, nul_at, optional_problem

log = logging.getLogger("tracker.protocols")

KNOT_MS = 1852 / 3600  # one knot in m/s (0.514444...)
KMH_MS = 1 / 3.6


@dataclass(slots=True)
class AppRequest:
    """One app request made into fix objects: `items` holds, in the app's order, a fix object or the
    reason its entry could not become one."""

    token: str | None
    token_field: str = "id"  # where the app carries the token, for errors about it
    items: list[dict[str, Any] | str] = field(default_factory=list)
    names: Mapping[str, str] = field(default_factory=dict)  # our field name -> the app's, for errors
    label: str = "location"  # what an entry is called in errors about a batch
    indexes: list[int] = field(default_factory=list)  # the entries' positions in the body
    batch: bool = False  # the body held several entries: errors say which one
    push_token: str | None = None  # a push token the app registers for its device (Traccar Client)

    def add(self, index: int, raw: Any, convert: Callable[[Any], dict[str, Any]]) -> None:
        """Append `convert(raw)`, or the reason it failed, as the body's entry `index`."""
        try:
            self.items.append(convert(raw))
        except InvalidFix as exc:
            self.items.append(str(exc))
        self.indexes.append(index)

    def fix_objects(self) -> tuple[list[dict[str, Any]], list[int]]:
        """The entries that became fix objects, and each one's position in `items`."""
        positions = [i for i, item in enumerate(self.items) if isinstance(item, dict)]
        return [self.items[i] for i in positions], positions  # type: ignore[misc]

    def describe(self, item: int, error: str) -> str:
        """A validation message about entry `item`, in the app's words: its field name, and which
        entry when the body held several."""
        name, sep, rest = error.partition(" ")
        message = self.names.get(name, name) + sep + rest
        return f"{self.label}[{self.indexes[item]}]: {message}" if self.batch else message


def number(value: Any, name: str) -> float | None:
    """A number from JSON or form text (None when absent or empty), or InvalidFix naming `name`."""
    return text_number(value, name, InvalidFix)


def time_ms(value: Any, name: str) -> int:
    """A fix time in milliseconds from unix seconds (milliseconds from `SECONDS_BELOW` on, as Traccar
    reads them) or an ISO 8601 string with an offset."""
    ms = seconds_or_ms(value, name, InvalidFix)
    if ms <= MIN_TS:
        raise InvalidFix(
            f"{name} must be later than 2000-01-01 (unix seconds or ISO 8601); got {value!r:.40}"
        )
    return ms


# Text the apps write for a value they do not have: JavaScript's and Java's, Swift's for NaN.
_UNKNOWN_TEXT = frozenset({"", "null", "undefined", "nan", "-nan", "+nan"})


class OptionalFields:
    """Reads the optional numeric fields of one fix as the policy above says; `dropped` collects, under
    the app's names, the values the contract cannot take, for the fix's attrs."""

    def __init__(self) -> None:
        self.dropped: dict[str, Any] = {}

    def read(self, value: Any, name: str, field: str, scale: float = 1.0) -> float | None:
        """`value` (the app's field `name`) times `scale`, as our `field`, or None when unknown or unfit.
        A negative value is unknown except for altitude."""
        if value is None or isinstance(value, str) and value.strip().lower() in _UNKNOWN_TEXT:
            return None
        try:
            number = text_number(value, name, InvalidFix)
        except InvalidFix:
            number = None
        if number is not None and number < 0 and field != "altitude":
            return None
        result = None if number is None else number * scale
        if result is None or optional_problem(field, result):
            self.dropped[name] = value
            return None
        return result


def form_value(text: str) -> Any:
    """An unknown form field as Traccar keeps it: a number when it parses, a boolean for true/false,
    else the text."""
    stripped = text.strip()
    if NUMBER_TEXT.match(stripped):
        if "." not in stripped and "e" not in stripped.lower() and len(stripped) < 16:
            return int(stripped)
        number = float(stripped)
        return number if math.isfinite(number) else text
    if stripped.lower() in ("true", "false"):
        return stripped.lower() == "true"
    return text


def bounded(attrs: Mapping[str, Any]) -> dict[str, Any] | None:
    """`attrs` without the entries that would take it past MAX_ATTRS_BYTES as JSON (in order, so the
    fields an app sends first are kept) and those PostgreSQL cannot keep (a NUL character), or None when
    empty."""
    kept: dict[str, Any] = {}
    for key, value in attrs.items():
        kept[key] = value
        try:
            encoded: bytes | None = orjson.dumps(kept)
        except TypeError:  # integers beyond 64 bits, nesting deeper than orjson writes
            encoded = None
        if encoded is None or len(encoded) > MAX_ATTRS_BYTES:
            del kept[key]
            log.debug("attrs field %r dropped: attrs would exceed %d bytes", key, MAX_ATTRS_BYTES)
        elif b"\\u0000" in encoded and ("\x00" in key or nul_at(value, key)):
            del kept[key]
            log.debug("attrs field %r dropped: it holds a NUL character", key)
    return kept or None
