"""The checks of a rule's (or a fix filter's) options against each other, beyond the schema's types.

Policy: each option that only makes sense with some `on:` says so where it was written, so a user sees
the line to change (`dwell_s is only allowed with on: dwell`), not a generic "invalid rule". Every
problem of the rule is reported, not the first. Locations are relative to the rule's own entry.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from tracker.geofence.schema import FilterSpec, RuleSpec
from tracker.geofence.yaml_marks import Loc


def rule_problems(spec: RuleSpec) -> list[tuple[Loc, str]]:
    """(where in the rule, reason) of each option that does not fit the rule's `on:` or is malformed."""
    found: list[tuple[Loc, str]] = []
    for key, event in (("dwell_s", "dwell"), ("max_speed_kmh", "speeding")):
        given = getattr(spec, key) is not None
        if given and spec.on != event:
            found.append(((key,), f"is only allowed with on: {event}"))
        elif not given and spec.on == event:
            found.append(((key,), f"is required with on: {event}"))
    for key in ("distance_m", "near_fleets"):
        if getattr(spec, key) is not None and spec.on != "near":
            found.append(((key,), "is only allowed with on: near"))
    if spec.on == "near":
        if spec.distance_m is None:
            found.append((("distance_m",), "is required with on: near"))
        for key in ("fences", "fence_tags"):
            if getattr(spec, key) is not None:
                found.append(((key,), "is not allowed with on: near (it compares devices, not fences)"))
    elif spec.fences is None and spec.fence_tags is None:
        found.append(((), "needs fences or fence_tags"))
    if spec.accuracy == "strict" and spec.on in ("cross", "near"):
        found.append((("accuracy",), "strict is only allowed with on: enter, exit, dwell or speeding"))
    for j, target in enumerate(spec.notify):
        if target not in ("viewers", "device") and not is_http_url(target):
            found.append((("notify", j), f"must be viewers, device or an http(s) URL, not {target!r}"))
    return found


def filter_problems(spec: FilterSpec) -> list[tuple[Loc, str]]:
    """(where in the filter, reason) of what makes a `filters:` entry test nothing or mean nothing."""
    if spec.max_accuracy_m is None and spec.max_speed_kmh is None and spec.min_distance_m is None:
        return [((), "needs at least one of max_accuracy_m, max_speed_kmh or min_distance_m")]
    if spec.keep_every_s is not None and not spec.min_distance_m:
        return [(("keep_every_s",), "is only allowed with min_distance_m (it keeps a repeated position)")]
    return []


def is_http_url(text: str) -> bool:
    """Whether `text` is an absolute http(s) URL with a host (a webhook target)."""
    try:
        url = urlsplit(text)
    except ValueError:  # a malformed URL, such as an unclosed IPv6 bracket (http://[::1)
        return False
    return url.scheme in ("http", "https") and bool(url.hostname)
