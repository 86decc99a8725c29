"""GPX 1.0/1.1 through gpxpy: track points, else route points; speed and course from the point or its
extensions (Garmin TrackPointExtension v2 and the like), elevation as altitude; untimed points counted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gpxpy
import gpxpy.gpx

from tracker.tools.trackfile.track import Points, TrackFileError
from tracker.tools.trackfile.values import datetime_ms, optional_number


def read_gpx(path: Path, text: str) -> Points:
    try:
        gpx = gpxpy.parse(text)
    except gpxpy.gpx.GPXException as exc:
        raise TrackFileError(f"{path}: not valid GPX: {exc}") from None
    points: list[tuple[str, gpxpy.gpx.GPXTrackPoint | gpxpy.gpx.GPXRoutePoint]] = [
        (f"track {t + 1} segment {s + 1} point {p + 1}", point)
        for t, track in enumerate(gpx.tracks)
        for s, segment in enumerate(track.segments)
        for p, point in enumerate(segment.points)
    ]
    if not points:  # a planned route, then
        points = [
            (f"route {r + 1} point {p + 1}", point)
            for r, route in enumerate(gpx.routes)
            for p, point in enumerate(route.points)
        ]
    out = Points(path)
    for place, point in points:
        if point.time is None:
            out.untimed += 1
            continue
        where = f"{path}: {place}"
        extensions = _gpx_extensions(point)
        speed = getattr(point, "speed", None)  # route points have neither speed nor course
        speed = speed if speed is not None else extensions.get("speed")
        course = getattr(point, "course", None)
        heading = course if course is not None else extensions.get("course")
        optional = {
            "speed": optional_number(where, "speed", speed),
            "heading": optional_number(where, "course", heading),
            "altitude": optional_number(where, "ele", point.elevation),
        }
        out.add(where, datetime_ms(point.time), point.latitude, point.longitude, optional)
    return out


def _gpx_extensions(point: Any) -> dict[str, str]:
    """`speed` and `course` from a point's extensions (Garmin TrackPointExtension v2 and the like)."""
    found: dict[str, str] = {}
    for element in getattr(point, "extensions", None) or []:
        for child in element.iter():
            local = child.tag.rpartition("}")[2].lower()
            if local in ("speed", "course") and child.text and child.text.strip():
                found.setdefault(local, child.text.strip())
    return found
